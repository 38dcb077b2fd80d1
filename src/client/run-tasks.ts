import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RequestErrorCode, TaskRecord, TaskSpecInput } from '../protocol/index.js';
import { ConnectionError, TaskManagerClient, TaskManagerError, type ClientOptions } from './client.js';

export type TaskOutcome =
  | { ok: true; task: TaskRecord }
  | { ok: false; id: string; error: { code: RequestErrorCode | 'CONNECTION'; message: string } };

export interface RunTasksOptions extends ClientOptions {
  /** send every request at once (dependencies first) instead of one after another */
  concurrent?: boolean;
  /** after a lost connection, how long to keep trying to reconnect */
  reconnectForMs?: number;
  onOutcome?: (outcome: TaskOutcome) => void;
  /** told each time the connection is lost and is being re-established */
  onReconnect?: (error: Error) => void;
}

/** Errors after which the same request is sent again on a new connection. */
const isTransient = (error: unknown) =>
  error instanceof ConnectionError || (error instanceof TaskManagerError && error.code === 'SHUTTING_DOWN');

/** Gives every spec an id, so that sending it again after a lost connection cannot run it twice. */
export function withIds(specs: TaskSpecInput[]): (TaskSpecInput & { id: string })[] {
  const batch = newBatchId();
  return specs.map((spec, i) => ({ ...spec, id: spec.id ?? `${batch}:${i + 1}` }));
}

export const newBatchId = () => randomBytes(4).toString('hex');

/**
 * Runs tasks to their end and survives daemon restarts: when the connection
 * is lost, it reconnects and sends the unfinished `run` requests again, in
 * their order. Ids make that idempotent: a task the daemon already has is
 * not started again, its run just waits for (or returns) its result.
 */
export async function runTasks(specs: TaskSpecInput[], options: RunTasksOptions = {}): Promise<TaskOutcome[]> {
  const tasks = withIds(specs);
  const outcomes = new Map<number, TaskOutcome>();
  const settle = (index: number, outcome: TaskOutcome) => {
    outcomes.set(index, outcome);
    options.onOutcome?.(outcome);
  };
  const runOne = async (client: TaskManagerClient, index: number) => {
    try {
      settle(index, { ok: true, task: (await client.run(tasks[index]!)).task });
    } catch (error) {
      if (isTransient(error)) throw error;
      if (!(error instanceof TaskManagerError)) throw error;
      settle(index, { ok: false, id: tasks[index]!.id, error: { code: error.code, message: error.reason } });
    }
  };

  let client = await TaskManagerClient.connect(options);
  for (;;) {
    const left = tasks.map((_, i) => i).filter((i) => !outcomes.has(i));
    try {
      if (options.concurrent) {
        const results = await Promise.allSettled(left.map((i) => runOne(client, i)));
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      } else {
        for (const i of left) await runOne(client, i);
      }
      await client.close();
      return tasks.map((_, i) => outcomes.get(i)!);
    } catch (error) {
      if (!isTransient(error)) throw error;
      options.onReconnect?.(error as Error);
      client.destroy();
      client = await reconnect(options, options.reconnectForMs);
    }
  }
}

/** Connects, trying again with growing pauses (up to 2 s) for `forMs` before giving up with the last error. */
export async function reconnect(options: ClientOptions, forMs = 60_000): Promise<TaskManagerClient> {
  const deadline = Date.now() + forMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
    try {
      return await TaskManagerClient.connect(options);
    } catch (error) {
      if (Date.now() + delay > deadline) throw error;
      await sleep(delay);
    }
  }
}
