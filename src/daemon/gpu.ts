import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import type { GpuStats } from '../protocol/index.js';

export interface GpuSamplerOptions {
  /** the program asked, found on the daemon's PATH */
  command: string;
  /** figures older than this are read again, in the background, when asked for */
  refreshMs: number;
  /** a reading that takes longer is killed (its whole process group) and counts as no GPU */
  timeoutMs: number;
  /** how long `stats` waits for the very first reading; later ones never wait */
  firstWaitMs: number;
}

export const GPU_DEFAULTS: GpuSamplerOptions = { command: 'nvidia-smi', refreshMs: 2000, timeoutMs: 5000, firstWaitMs: 500 };

const MIB = 1024 * 1024;

/**
 * The GPUs of `stats`, read from nvidia-smi. Asking never waits for a
 * reading (but the first, and that for less than a second): it gets the
 * last figures and, when they are stale, starts a new reading in the
 * background. A reading that hangs is killed after its timeout.
 */
export class GpuSampler {
  private last: GpuStats[] = [];
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;
  private kill: (() => void) | undefined;
  private waited = false;

  constructor(private readonly options: GpuSamplerOptions = GPU_DEFAULTS) {}

  /** Starts the first reading, so that the first `stats` finds it done. */
  start(): void {
    this.refresh();
  }

  async gpus(): Promise<GpuStats[]> {
    if (Date.now() - this.readAt >= this.options.refreshMs) this.refresh();
    if (!this.waited && this.reading) {
      this.waited = true;
      await Promise.race([this.reading, delay(this.options.firstWaitMs, undefined, { ref: false })]);
    }
    return this.last;
  }

  /** Kills a reading under way (the daemon is stopping). */
  close(): void {
    this.kill?.();
  }

  private refresh(): void {
    if (this.reading) return;
    const { promise, kill } = readGpus(this.options.command, this.options.timeoutMs);
    this.kill = kill;
    this.reading = promise
      .catch((): GpuStats[] => [])
      .then((gpus) => {
        this.last = gpus;
      })
      .finally(() => {
        this.readAt = Date.now();
        this.reading = undefined;
        this.kill = undefined;
      });
  }
}

/** Runs nvidia-smi once, in a process group of its own, killed whole after `timeoutMs`. */
function readGpus(command: string, timeoutMs: number): { promise: Promise<GpuStats[]>; kill: () => void } {
  let kill: () => void = () => undefined;
  const promise = new Promise<GpuStats[]>((resolve, reject) => {
    const child = spawn(command, ['--query-gpu=index,name,utilization.gpu,memory.used,memory.total', '--format=csv,noheader,nounits'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (out.length < 1024 * 1024) out += chunk;
    });
    kill = () => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      reject(new Error(`${command} did not answer within ${timeoutMs} ms`));
    };
    const timer = setTimeout(kill, timeoutMs);
    timer.unref();
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(parseGpus(out));
      else reject(new Error(`${command} exited with ${code}`));
    });
  });
  return { promise, kill: () => kill() };
}

/** A number, with its unit if nvidia-smi gave one (`35 %`, `1024 MiB`); null for `[N/A]` and the like. */
function figure(text: string | undefined): { value: number; unit: string | undefined } | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(%|B|KiB|MiB|GiB|TiB)?\s*$/.exec(text ?? '');
  return match ? { value: Number(match[1]), unit: match[2] } : null;
}

const UNIT_BYTES: Record<string, number> = { B: 1, KiB: 1024, MiB: MIB, GiB: 1024 * MIB, TiB: 1024 * 1024 * MIB };

/** Bytes of a memory figure: MiB unless it says otherwise (`--format=csv,nounits` gives MiB). */
function bytes(text: string | undefined): number | null {
  const read = figure(text);
  return read === null ? null : Math.round(read.value * (UNIT_BYTES[read.unit ?? 'MiB'] ?? MIB));
}

/**
 * The lines of `nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total
 * --format=csv,noheader,nounits`: utilization in %, memory in MiB. Units and a header line
 * (`--format=csv`) are understood too; a line that is not a GPU's is skipped.
 */
export function parseGpus(text: string): GpuStats[] {
  const gpus: GpuStats[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(',');
    if (fields.length < 5) continue;
    const index = figure(fields[0]);
    if (index === null || index.unit !== undefined || !Number.isInteger(index.value)) continue;
    gpus.push({
      index: index.value,
      name: fields.slice(1, -3).join(',').trim(),
      utilization_percent: figure(fields.at(-3))?.value ?? null,
      memory_used_bytes: bytes(fields.at(-2)),
      memory_total_bytes: bytes(fields.at(-1)),
    });
  }
  return gpus;
}
