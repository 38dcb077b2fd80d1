import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { TaskSpec } from '../protocol/index.js';
import type { FromExecutor, ToExecutor } from './messages.js';
import { signalGroup } from './process-group.js';
import { startFailure, type AttemptResult } from './run-attempt.js';

export interface ExecutorSettings {
  /** the environment every task starts from */
  baseEnv: Record<string, string>;
  /** where script payloads are written */
  scriptDir: string;
  /** how long a process group has between SIGTERM and SIGKILL */
  killGraceMs: number;
}

interface Pending {
  worker: Worker;
  resolve: (result: AttemptResult) => void;
  onSpawn?: (pid: number) => void;
  pid?: number;
}

interface Worker {
  child: ChildProcess;
  running: number;
}

const ENTRY = fileURLToPath(new URL('./executor-process.js', import.meta.url));

/**
 * Runs attempts in executor processes (see executor-process.ts): one per
 * core, since a process blocks while each child it forks execs, each started
 * on first use and again if it ever dies. An attempt goes to the least busy.
 */
export class Executor {
  private readonly workers: (Worker | undefined)[];
  private readonly pending = new Map<number, Pending>();
  private nextAttempt = 1;
  private closed = false;

  constructor(
    private readonly settings: ExecutorSettings,
    private readonly log: (line: string) => void,
    size = Math.min(availableParallelism(), 4),
  ) {
    this.workers = Array.from({ length: size }, () => undefined);
  }

  run(spec: TaskSpec, options: { env: Record<string, string>; signal?: AbortSignal; onSpawn?: (pid: number) => void }): Promise<AttemptResult> {
    const attempt = this.nextAttempt++;
    const worker = this.leastBusy();
    worker.running++;
    return new Promise((resolve) => {
      const abort = () => worker.child.connected && worker.child.send({ type: 'abort', attempt } satisfies ToExecutor);
      this.pending.set(attempt, {
        worker,
        resolve: (result) => {
          worker.running--;
          options.signal?.removeEventListener('abort', abort);
          resolve(result);
        },
        ...(options.onSpawn ? { onSpawn: options.onSpawn } : {}),
      });
      worker.child.send({ type: 'run', attempt, spec, env: options.env } satisfies ToExecutor);
      options.signal?.addEventListener('abort', abort, { once: true });
      if (options.signal?.aborted) abort();
    });
  }

  /** Starts every executor process now, so that the first tasks do not wait for them. */
  warm(): void {
    for (let i = 0; i < this.workers.length; i++) if (!this.workers[i]?.child.connected) this.workers[i] = this.startWorker();
  }

  /** Once nothing runs any more: ends the executor processes. */
  close(): void {
    this.closed = true;
    for (const worker of this.workers) if (worker?.child.connected) worker.child.disconnect();
  }

  private leastBusy(): Worker {
    this.warm(); // replaces any that died
    return this.workers.reduce((best, worker) => (worker!.running < best!.running ? worker : best))!;
  }

  private startWorker(): Worker {
    const child = fork(ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const worker: Worker = { child, running: 0 };
    child.on('message', (message: FromExecutor) => this.receive(message));
    // A send to a process that just died fails with EPIPE: its 'exit' settles its attempts.
    child.on('error', (error) => this.log(`executor process: ${error.message}`));
    child.once('exit', (code, signal) => this.lost(worker, code, signal));
    child.send({ type: 'init', ...this.settings } satisfies ToExecutor);
    return worker;
  }

  private receive(message: FromExecutor): void {
    const waiting = this.pending.get(message.attempt);
    if (!waiting) return;
    if (message.type === 'spawned') {
      waiting.pid = message.pid;
      waiting.onSpawn?.(message.pid);
    } else {
      this.pending.delete(message.attempt);
      waiting.resolve(message.result);
    }
  }

  /** An executor process died: its attempts' process groups are killed and the attempts fail. */
  private lost(worker: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const index = this.workers.indexOf(worker);
    if (index >= 0) this.workers[index] = undefined;
    if (this.closed && worker.running === 0) return;
    this.log(`an executor process ended (${signal ?? `code ${code}`}) with ${worker.running} attempt(s) running`);
    for (const [attempt, waiting] of this.pending) {
      if (waiting.worker !== worker) continue;
      if (waiting.pid !== undefined) signalGroup(waiting.pid, 'SIGKILL');
      this.pending.delete(attempt);
      waiting.resolve(startFailure('the executor process ended unexpectedly during the attempt'));
    }
  }
}
