import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CONCURRENCY = 10;

export interface Daemon {
  port: number;
  pid: number;
  dataDir: string;
  /** SIGTERM, wait for the exit; the data dir is removed unless `keep` */
  stop(keep?: boolean): Promise<void>;
}

export async function startDaemon(flags: string[], dataDir = mkdtempSync(join(tmpdir(), 'tm-bench-'))): Promise<Daemon> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/task-manager'), 'serve', '--port', '0', '--data-dir', dataDir, '--concurrency', String(CONCURRENCY), ...flags], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = / on [^ ]+:(\d+) /.exec(line);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`daemon exited with ${code}`)));
  });
  return {
    port,
    pid: child.pid!,
    dataDir,
    stop: async (keep = false) => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      if (!keep) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const seconds = (start: number) => (performance.now() - start) / 1000;
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
export const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;
/** Resident memory of a process, in MB. */
export function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match![1]) / 1024;
}

export const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;


/** What one case adds to the printed report and to the JSON result. */
export interface CaseReport {
  lines: string[];
  targets: Record<string, boolean>;
  results: Record<string, unknown>;
}
