import { fork, type ChildProcess } from 'node:child_process';
import { statSync, unlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { TaskSpec } from '../protocol/index.js';
import { killGroups, markedProcesses, marksOf } from './leftovers.js';
import type { FromExecutor, OutputPaths, ToExecutor } from './messages.js';
import { Outbox } from './outbox.js';
import { signalGroup } from './process-group.js';
import type { StopRequest } from './stop-request.js';
import { processState } from './process-info.js';
import { interruption, processSpec, timedOut, type AttemptResult } from './run-attempt.js';

export interface ExecutorSettings {
  /** the environment every task starts from */
  baseEnv: Record<string, string>;
  /** where script payloads are written */
  scriptDir: string;
  /** where an executor process leaves its evidence of starts when the daemon is gone */
  dataDir: string;
  /** how long a process group has between SIGTERM and SIGKILL */
  killGraceMs: number;
  /** output files are synced to disk before an attempt's result is reported */
  syncOutput: boolean;
  /** a task must not outlive the daemon: when it is gone, even by kill -9, the executor processes kill its tasks */
  killWithDaemon?: boolean;
}

export interface RunOptions {
  /** added to the base environment; it carries the attempt's marks (TASK_VARIABLE, ATTEMPT_VARIABLE, OWNER_VARIABLE) */
  env: Record<string, string>;
  /** a request to stop kills the attempt's process group (cancel, stop); before the process exists, it is not started */
  stop?: StopRequest;
  /** the process exists: its pid (= its process group id) and its start time, as the spawner read it */
  onSpawn?: (pid: number, started: string | undefined) => void;
  /** names this start in the evidence an executor process leaves when the daemon is gone */
  startId: string;
  /** on an executor process of its own, so that if that process dies, no other attempt goes with it */
  alone?: boolean;
  /** where the attempt's output is written */
  output: OutputPaths;
}

/** One attempt in flight, as the daemon supervises it. */
interface Attempt {
  worker: Worker;
  spec: TaskSpec;
  output: OutputPaths;
  env: Record<string, string>;
  resolve: (result: AttemptResult | undefined) => void;
  onSpawn?: (pid: number, started: string | undefined) => void;
  pid?: number;
  /** a stop was asked for: SIGTERM once the pid is known, SIGKILL after the grace period */
  stopping: boolean;
  /** the stop cannot wait: SIGKILL at once */
  killNow: boolean;
  timedOut: boolean;
  timers: NodeJS.Timeout[];
}

interface Worker {
  child: ChildProcess;
  running: number;
  /** messages to it, sent once per turn of the event loop */
  outbox: Outbox<ToExecutor>;
}

const ENTRY = fileURLToPath(new URL('./executor-process.js', import.meta.url));
/** How often busy executor processes are checked for being stopped (SIGSTOP, a debugger). */
const WATCH_EVERY_MS = 500;

/**
 * Runs attempts in executor processes (see executor-process.ts): up to one
 * per core, since a process blocks while each child it forks execs. The
 * first starts with the daemon, the others when every running one is busy
 * (a daemon that runs one task at a time keeps one), and any again if it
 * dies. An attempt goes to an idle one, else to the least busy.
 *
 * The daemon itself enforces timeouts and kills, by signalling the attempt's
 * process group: an executor process that is stopped, or killed (by a task
 * that kills its parent, say), cannot hold a timeout, a cancel or a stop up.
 * A stopped one is killed; a dead one's attempts are interrupted (their
 * groups killed first) and run again.
 */
export class Executor {
  private readonly workers: (Worker | undefined)[];
  private readonly attempts = new Map<number, Attempt>();
  private nextAttempt = 1;
  private closed = false;
  /** in a cluster: until when (performance.now()) the lease holds, as last heard */
  private leaseUntil: number | undefined;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly settings: ExecutorSettings,
    private readonly log: (line: string) => void,
    size = Math.min(availableParallelism(), 4),
  ) {
    this.workers = Array.from({ length: size }, () => undefined);
  }

  /** Resolves with the attempt's result, or undefined when it was aborted before its process started. */
  run(spec: TaskSpec, options: RunOptions): Promise<AttemptResult | undefined> {
    const id = this.nextAttempt++;
    // A suspect (its executor died under it before) gets a process of its own, which ends with it.
    const worker = options.alone ? this.startWorker() : this.leastBusy();
    worker.running++;
    this.watch();
    return new Promise((resolve) => {
      const attempt: Attempt = {
        worker,
        spec,
        output: options.output,
        env: options.env,
        stopping: false,
        killNow: false,
        timedOut: false,
        timers: [],
        resolve: (result) => {
          worker.running--;
          attempt.timers.forEach(clearTimeout);
          options.stop?.listen(undefined);
          this.attempts.delete(id);
          if (options.alone) worker.outbox.push({ type: 'close' });
          resolve(result);
        },
        ...(options.onSpawn ? { onSpawn: options.onSpawn } : {}),
      };
      const abort = () => {
        this.stop(attempt);
        worker.outbox.push({ type: 'abort', attempt: id });
      };
      this.attempts.set(id, attempt);
      worker.outbox.push({ type: 'run', attempt: id, spec: processSpec(spec), env: options.env, startId: options.startId, output: options.output });
      options.stop?.listen(abort);
    });
  }

  /** Starts the first executor process now, so that the first task does not wait for one; the others start as the load needs them. */
  warm(): void {
    if (!this.workers[0]?.child.connected) this.workers[0] = this.startWorker();
  }

  /** In a cluster: the lease holds for `validMs` more; the executor processes kill every task if no new word comes by then. */
  leaseHolds(validMs: number): void {
    this.leaseUntil = performance.now() + validMs;
    for (const worker of this.workers) if (worker?.child.connected) this.tellLease(worker);
  }

  private tellLease(worker: Worker): void {
    if (this.leaseUntil === undefined) return;
    worker.outbox.push({ type: 'lease', validMs: this.leaseUntil - performance.now() });
    worker.outbox.flush();
  }

  /** SIGKILLs every running attempt's process group now (a stop that cannot wait). */
  killAll(): void {
    for (const attempt of this.attempts.values()) {
      attempt.stopping = true;
      attempt.killNow = true;
      if (attempt.pid !== undefined) signalGroup(attempt.pid, 'SIGKILL');
    }
  }

  /**
   * Once nothing runs any more: ends the executor processes. `clean` when
   * everything they ran is in the journal; otherwise (the journal failed)
   * they leave their start ledger for the next start, as after a crash.
   */
  close(clean = true): void {
    this.closed = true;
    clearInterval(this.watchdog);
    for (const worker of this.workers) {
      if (!worker?.child.connected) continue;
      if (clean) {
        worker.outbox.push({ type: 'close' });
        worker.outbox.flush();
      } else {
        worker.outbox.flush();
        worker.child.disconnect();
      }
    }
  }

  /** An idle executor process; else a new one while there are fewer than one per core (or one replaces a dead one); else the least busy. */
  private leastBusy(): Worker {
    const live = this.workers.filter((worker): worker is Worker => worker?.child.connected === true);
    const idle = live.find((worker) => worker.running === 0);
    if (idle) return idle;
    const free = this.workers.findIndex((worker) => !worker?.child.connected);
    if (free >= 0) {
      const started = this.startWorker();
      this.workers[free] = started;
      return started;
    }
    return live.reduce((best, worker) => (worker.running < best.running ? worker : best));
  }

  private startWorker(): Worker {
    // Its own process group: Ctrl-C in the daemon's terminal is for the daemon, not for it.
    const child = fork(ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
    const outbox = new Outbox<ToExecutor>((batch) => {
      if (child.connected) child.send(batch);
    });
    const worker: Worker = { child, running: 0, outbox };
    child.on('message', (batch: FromExecutor[]) => {
      for (const message of batch) this.receive(message);
    });
    // A send to a process that just died fails with EPIPE: its 'exit' settles its attempts.
    child.on('error', (error) => this.log(`executor process: ${error.message}`));
    child.once('exit', (code, signal) => void this.lost(worker, code, signal));
    const { baseEnv, scriptDir, dataDir, syncOutput, killWithDaemon = false } = this.settings;
    outbox.push({ type: 'init', baseEnv, scriptDir, dataDir, syncOutput, killWithDaemon });
    this.tellLease(worker); // one that replaces a lost executor process keeps to the lease too
    return worker;
  }

  private receive(message: FromExecutor): void {
    const attempt = this.attempts.get(message.attempt);
    if (!attempt) return;
    if (message.type === 'spawned') {
      attempt.pid = message.pid;
      attempt.onSpawn?.(message.pid, message.started);
      const timeoutMs = attempt.spec.timeout_ms;
      if (timeoutMs !== undefined) {
        attempt.timers.push(
          setTimeout(() => {
            attempt.timedOut = true;
            this.stop(attempt);
          }, timeoutMs),
        );
      }
      if (attempt.stopping) this.signal(attempt);
    } else if (message.result === null) {
      attempt.resolve(undefined);
    } else {
      attempt.resolve(attempt.timedOut ? timedOut(message.result, attempt.spec.timeout_ms!) : message.result);
    }
  }

  /** Asks an attempt to end: SIGTERM to its group, SIGKILL after the grace period. */
  private stop(attempt: Attempt): void {
    if (attempt.stopping) return;
    attempt.stopping = true;
    if (attempt.pid !== undefined) this.signal(attempt);
  }

  private signal(attempt: Attempt): void {
    const pid = attempt.pid!;
    signalGroup(pid, attempt.killNow ? 'SIGKILL' : 'SIGTERM');
    attempt.timers.push(setTimeout(() => signalGroup(pid, 'SIGKILL'), this.settings.killGraceMs));
  }

  /** While attempts run, checks now and then that no executor process is stopped; a stopped one is killed. */
  private watch(): void {
    this.watchdog ??= setInterval(() => {
      if (this.attempts.size === 0) {
        clearInterval(this.watchdog);
        this.watchdog = undefined;
        return;
      }
      for (const worker of this.workers) {
        const pid = worker?.child.pid;
        if (!worker || worker.running === 0 || pid === undefined) continue;
        const state = processState(pid);
        if (state !== 'T' && state !== 't') continue;
        this.log(`an executor process (pid ${pid}) is stopped; killing it (its ${worker.running} attempt(s) run again)`);
        worker.child.kill('SIGKILL');
      }
    }, WATCH_EVERY_MS).unref();
  }

  /**
   * An executor process died: its attempts' processes are killed (found by
   * their marks when their pid never arrived), then the attempts end as
   * interrupted, or timed out if their time was already up.
   */
  private async lost(worker: Worker, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const index = this.workers.indexOf(worker);
    if (index >= 0) this.workers[index] = undefined;
    if (this.closed && worker.running === 0) return;
    const how = signal ?? `code ${code}`;
    this.log(`an executor process ended (${how}) with ${worker.running} attempt(s) running; they run again`);
    const orphans = [...this.attempts.values()].filter((attempt) => attempt.worker === worker);
    const groups = new Set<number>();
    const started = new Set<Attempt>();
    for (const attempt of orphans) {
      const pids = attempt.pid !== undefined ? [attempt.pid] : (await markedProcesses(marksOf(attempt.env))).map(({ pid }) => pid);
      for (const pid of pids) groups.add(pid);
      if (pids.length > 0) started.add(attempt);
    }
    await killGroups(groups);
    for (const attempt of orphans) {
      if (!started.has(attempt)) attempt.resolve(undefined); // its process never started: not an attempt at all
      else if (attempt.timedOut) attempt.resolve(withOutputOnDisk(timedOut(undefined, attempt.spec.timeout_ms!), attempt));
      else attempt.resolve(withOutputOnDisk(interruption(`the executor process running it ended (${how}) during the attempt; it runs again`), attempt));
    }
  }
}

/**
 * A result made without its executor process's report: the output its files
 * hold counts all the same. An empty file goes, as that process would have
 * removed it at the end (a stream kept empty leaves no file, which is what
 * lets retention skip such tasks); one that cannot be removed, or reaches
 * the cap, is reported truncated.
 */
function withOutputOnDisk(result: AttemptResult, { output, spec }: Attempt): AttemptResult {
  const kept = (path: string): { bytes: number; truncated: boolean } => {
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      return { bytes: 0, truncated: false }; // nothing written
    }
    // A file at the cap may have been cut back to it (the mark of the cut died with that process): it counts as cut.
    if (size > 0) return { bytes: Math.min(size, spec.max_output_bytes), truncated: size >= spec.max_output_bytes };
    try {
      unlinkSync(path);
      return { bytes: 0, truncated: false };
    } catch {
      return { bytes: 0, truncated: true };
    }
  };
  const stdout = kept(output.stdout);
  const stderr = kept(output.stderr);
  return { ...result, stdout_bytes: stdout.bytes, stdout_truncated: stdout.truncated, stderr_bytes: stderr.bytes, stderr_truncated: stderr.truncated };
}
