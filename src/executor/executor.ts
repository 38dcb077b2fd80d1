import { fork, type ChildProcess } from 'node:child_process';
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
  resolve: (result: AttemptResult) => void;
  onSpawn?: (pid: number) => void;
  pid?: number;
}

const ENTRY = fileURLToPath(new URL('./executor-process.js', import.meta.url));

/**
 * Runs attempts in the executor process (see executor-process.ts), started
 * on first use and again if it ever dies.
 */
export class Executor {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextAttempt = 1;
  private closed = false;

  constructor(
    private readonly settings: ExecutorSettings,
    private readonly log: (line: string) => void,
  ) {}

  run(spec: TaskSpec, options: { env: Record<string, string>; signal?: AbortSignal; onSpawn?: (pid: number) => void }): Promise<AttemptResult> {
    const attempt = this.nextAttempt++;
    const child = this.process();
    return new Promise((resolve) => {
      const abort = () => child.connected && child.send({ type: 'abort', attempt } satisfies ToExecutor);
      this.pending.set(attempt, {
        resolve: (result) => {
          options.signal?.removeEventListener('abort', abort);
          resolve(result);
        },
        ...(options.onSpawn ? { onSpawn: options.onSpawn } : {}),
      });
      child.send({ type: 'run', attempt, spec, env: options.env } satisfies ToExecutor);
      options.signal?.addEventListener('abort', abort, { once: true });
      if (options.signal?.aborted) abort();
    });
  }

  /** Once nothing runs any more: ends the executor process. */
  close(): void {
    this.closed = true;
    this.child?.disconnect();
  }

  private process(): ChildProcess {
    if (this.child?.connected) return this.child;
    const child = fork(ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (message: FromExecutor) => this.receive(message));
    child.once('exit', (code, signal) => this.lost(child, code, signal));
    child.send({ type: 'init', ...this.settings } satisfies ToExecutor);
    this.child = child;
    return child;
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

  /** The executor process died: its attempts' process groups are killed and the attempts fail. */
  private lost(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child === child) this.child = undefined;
    if (this.closed && this.pending.size === 0) return;
    this.log(`the executor process ended (${signal ?? `code ${code}`}) with ${this.pending.size} attempt(s) running`);
    for (const [attempt, waiting] of this.pending) {
      if (waiting.pid !== undefined) signalGroup(waiting.pid, 'SIGKILL');
      this.pending.delete(attempt);
      waiting.resolve(startFailure('the executor process ended unexpectedly during the attempt'));
    }
  }
}
