import type { Journal } from '../journal/index.js';
import { requestError } from '../protocol/index.js';
import { onAbort, type Scheduler } from '../scheduler/index.js';
import type { DaemonConfig } from './config.js';
import type { GpuSampler } from './gpu.js';
import type { OutputFiles } from './output-files.js';
import type { SystemSampler } from './stats.js';
import type { Subscribers } from './subscribers.js';

/** What a connection needs of the daemon. */
export interface DaemonContext {
  config: DaemonConfig;
  scheduler: Scheduler;
  journal: Journal;
  subscribers: Subscribers;
  sampler: SystemSampler;
  gpus: GpuSampler;
  outputs: OutputFiles;
  startedAt: number;
  /** aborted when the daemon begins to stop */
  stopping: AbortSignal;
}

/** Resolves as `work` does, or rejects with SHUTTING_DOWN when the daemon stops first. */
export function unlessStopping<T>(ctx: DaemonContext, work: Promise<T>): Promise<T> {
  const stopped = () => requestError.SHUTTING_DOWN('waiting');
  if (ctx.stopping.aborted) return Promise.reject(stopped());
  return new Promise<T>((resolve, reject) => {
    const forget = onAbort(ctx.stopping, () => reject(stopped()));
    work.then(resolve, reject).finally(forget);
  });
}
