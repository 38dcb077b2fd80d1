import type { AttemptResult } from '../executor/index.js';
import { taskError } from '../protocol/index.js';
import type { Task, TaskPatch } from './task.js';

/** What follows an attempt. */
export type AttemptOutcome =
  | { next: 'finish'; state: 'COMPLETED' | 'FAILED' | 'CANCELED'; patch: TaskPatch }
  /** it runs again without using a retry: its process never started, or something other than the task cut it short */
  | { next: 'requeue'; patch: TaskPatch }
  /** it failed and has retries left: PENDING until its back-off (`ready_at`) is over */
  | { next: 'retry'; patch: TaskPatch };

const MAX_BACKOFF_MS = 24 * 3600 * 1000;
/**
 * Executor processes lost in a row during one task's attempts before the
 * attempt counts as failed: a task that kills its parent would otherwise be
 * run again, and take its neighbours down with it, forever. After the first
 * loss a task runs on an executor process of its own, so the later losses
 * are its own doing, and its neighbours were lost only once.
 */
const MAX_EXECUTOR_LOSSES = 3;
/** Signals that a stop of the whole service sends every process (systemd's KillMode=control-group). */
const STOP_SIGNALS = new Set(['SIGTERM', 'SIGINT', 'SIGHUP']);
/** How a program that handles those signals usually exits: 128 + the signal's number. */
const STOP_EXIT_CODES = new Set([128 + 15, 128 + 2, 128 + 1]);

/**
 * The rules of what follows an attempt of `task`; `result` is absent when
 * its process never started, `stopping` when the daemon is stopping. Counts
 * the task's executor losses as it goes.
 */
export function attemptOutcome(task: Task, result: AttemptResult | undefined, stopping: boolean, now: number): AttemptOutcome {
  if (result?.error?.code !== 'INTERRUPTED') {
    task.executorLosses = 0;
  } else if (++task.executorLosses >= MAX_EXECUTOR_LOSSES) {
    result.error = taskError.KILLED({ executorLosses: task.executorLosses });
  }
  if (!result) {
    if (!task.cancelRequested) return { next: 'requeue', patch: notStarted(task) };
    const error = taskError.CANCELED('before it started');
    return { next: 'finish', state: 'CANCELED', patch: { attempts: task.stored.attempts - 1, started_at: null, error } };
  }
  const ended: TaskPatch = { ...result, pgid: null, pgid_started: null };
  if (task.cancelRequested) return { next: 'finish', state: 'CANCELED', patch: { ...ended, error: taskError.CANCELED('while running') } };
  if (result.error === null) return { next: 'finish', state: 'COMPLETED', patch: ended };
  if (wasInterrupted(task, result, stopping)) {
    return { next: 'requeue', patch: interrupted(task, ended, result.error.code === 'INTERRUPTED' ? result.error.message : undefined) };
  }
  if (task.stored.attempts < task.stored.max_attempts) {
    const backoff = Math.min(task.spec.retry_delay_ms * 2 ** (task.stored.attempts - 1), MAX_BACKOFF_MS);
    return { next: 'retry', patch: { ...ended, ready_at: now + backoff } };
  }
  return { next: 'finish', state: 'FAILED', patch: ended };
}

/**
 * Cut short by something other than the task itself: the daemon's stop,
 * including a stop signal that reached the task's processes too (systemd
 * signals the whole control group), or the loss of its executor process.
 */
function wasInterrupted(task: Task, result: AttemptResult, stopping: boolean): boolean {
  if (result.error?.code === 'INTERRUPTED') return true;
  return task.stopRequested || (stopping && mayBeServiceStop(result));
}

/** An attempt that a stop signal from outside ended (not the daemon's own timeout): perhaps the whole service is stopping. */
export const mayBeServiceStop = (result: AttemptResult): boolean =>
  !result.timed_out && (STOP_SIGNALS.has(result.signal ?? '') || STOP_EXIT_CODES.has(result.exit_code ?? 0));

/** The attempt was called off before its process started: it does not count. */
export const notStarted = (task: Task): TaskPatch => ({ attempts: task.stored.attempts - 1 });

/** An attempt ended by the daemon's stop, not by the task: it runs again, without using up a retry. */
export function interrupted(task: Task, ended: TaskPatch, why?: string): TaskPatch {
  return {
    ...ended,
    attempts: task.stored.attempts - 1,
    interrupted: (task.stored.interrupted ?? 0) + 1,
    error: taskError.INTERRUPTED(why),
  };
}

/**
 * How long the result of an attempt ended by a stop signal waits before it
 * counts as the task's failure. A stop of the whole service (systemd's
 * KillMode=control-group, Ctrl-C) signals the tasks and the daemon at once,
 * and a task may report its end before the daemon has seen its own signal:
 * if the stop begins meanwhile, the attempt was interrupted, not failed.
 */
const STOP_SIGNAL_HOLD_MS = 500;

/**
 * For an attempt that a signal from outside ended: resolves after the hold
 * above, or as soon as `stopBegun` aborts; at once for any other result.
 */
export function serviceStopHeld(result: AttemptResult, stopBegun: AbortSignal): Promise<void> {
  if (!mayBeServiceStop(result)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stopBegun.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, STOP_SIGNAL_HOLD_MS);
    stopBegun.addEventListener('abort', done, { once: true });
  });
}
