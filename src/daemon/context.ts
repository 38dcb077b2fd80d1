import type { Journal } from '../journal/index.js';
import { requestError } from '../protocol/index.js';
import { onAbort, type Task, type TaskService } from '../scheduler/index.js';
import type { OutputText } from './answer.js';
import type { DaemonConfig } from './config.js';
import type { GpuSampler } from './gpu.js';
import type { SystemSampler } from './stats.js';
import type { Subscribers } from './subscribers.js';

export type OutputStream = 'stdout' | 'stderr';

/** Where answers find a task's output: the files of the embedded store, or the shared store. */
export interface TaskOutputs {
  /** what stands for the output in an answer */
  textOf(task: Task): { stdout: OutputText | string; stderr: OutputText | string };
  /**
   * Sends the output as it is written until the task is terminal and all of
   * it is sent; `send` resolves once the reader took it (false: it is gone).
   * Resolves with the task as it was last read.
   */
  follow(task: Task, gone: AbortSignal, send: (stream: OutputStream, data: string) => Promise<boolean>): Promise<Task>;
}

/** What a connection needs of the daemon. */
export interface DaemonContext {
  config: DaemonConfig;
  scheduler: TaskService;
  /** reports wait for it: an answer never tells what is not yet durable */
  journal: Pick<Journal, 'flushed'>;
  subscribers: Subscribers;
  sampler: SystemSampler;
  gpus: GpuSampler;
  outputs: TaskOutputs;
  startedAt: number;
  /** aborted when the daemon begins to stop */
  stopping: AbortSignal;
  /**
   * Carries out requests one after another, in the order they came, so that
   * each sees what the ones before it did. The embedded scheduler answers
   * at once, so it runs each at once; a shared store's requests are chained.
   */
  inOrder<T>(work: () => T | Promise<T>): T | Promise<T>;
}

/** Resolves as `work` does, or rejects with SHUTTING_DOWN when the daemon stops first. */
export function unlessStopping<T>(ctx: DaemonContext, work: Promise<T>): Promise<T> {
  const stopped = () => requestError.SHUTTING_DOWN('waiting');
  if (ctx.stopping.aborted) return Promise.reject(stopped());
  return new Promise<T>((resolve, reject) => {
    const forget = onAbort(ctx.stopping, () => reject(stopped()));
    work.then(
      (value) => {
        forget();
        resolve(value);
      },
      (error: unknown) => {
        forget();
        reject(error);
      },
    );
  });
}

/** `inOrder` for requests answered at once. */
export const atOnce = <T>(work: () => T | Promise<T>): T | Promise<T> => work();

/** `inOrder` for requests answered later: each starts once the one before it has ended. */
export function chained(): <T>(work: () => T | Promise<T>) => Promise<T> {
  let last: Promise<unknown> = Promise.resolve();
  return <T>(work: () => T | Promise<T>): Promise<T> => {
    const next = last.then(work);
    last = next.catch(() => undefined);
    return next;
  };
}
