import { describe, expect, it } from 'vitest';
import { attemptOutcome, Task } from '../src/scheduler/index.js';
import { newStoredTask } from '../src/scheduler/task.js';
import { failure, result, spec } from './store-conformance.js';

/** A task in its n-th attempt (counted as the scheduler counts it: attempts is already n). */
function running(attempt: number, fields: Parameters<typeof spec>[0] = {}): Task {
  const task = new Task(newStoredTask('t', 1, spec(fields), 0));
  Object.assign(task.stored, { state: 'RUNNING', attempts: attempt });
  return task;
}

const killedBy = (signal: string) => result({ exit_code: null, signal, error: { code: 'KILLED', message: `ended by ${signal}` } });
const lostExecutor = () => result({ error: { code: 'INTERRUPTED', message: 'its executor process ended' } });

describe('attemptOutcome: what follows an attempt', () => {
  it('completes on exit 0 and fails on the last failed attempt, clearing the process group', () => {
    expect(attemptOutcome(running(1), result(), false, 0)).toMatchObject({ next: 'finish', state: 'COMPLETED', patch: { pgid: null, pgid_started: null } });
    expect(attemptOutcome(running(1), failure(2), false, 0)).toMatchObject({ next: 'finish', state: 'FAILED', patch: { exit_code: 2 } });
  });

  it('retries with a back-off that doubles each time, up to a day', () => {
    const delay = (attempt: number, retryDelay: number) => {
      const outcome = attemptOutcome(running(attempt, { retries: 60, retry_delay_ms: retryDelay }), failure(), false, 1000);
      return outcome.next === 'retry' ? outcome.patch.ready_at! - 1000 : undefined;
    };
    expect([delay(1, 100), delay(2, 100), delay(3, 100)]).toEqual([100, 200, 400]);
    expect(delay(40, 1000)).toBe(24 * 3600 * 1000);
  });

  it('requeues an attempt that never started without counting it, and cancels it if asked', () => {
    expect(attemptOutcome(running(2), undefined, false, 0)).toEqual({ next: 'requeue', patch: { attempts: 1 } });
    const canceled = running(1);
    canceled.cancelRequested = true;
    expect(attemptOutcome(canceled, undefined, false, 0)).toMatchObject({ next: 'finish', state: 'CANCELED', patch: { attempts: 0, started_at: null } });
    const killed = running(1);
    killed.cancelRequested = true;
    expect(attemptOutcome(killed, killedBy('SIGTERM'), false, 0)).toMatchObject({ next: 'finish', state: 'CANCELED', patch: { error: { code: 'CANCELED' } } });
  });

  it('treats a stop signal during the daemon\'s stop as an interruption, not a failure, but not a timeout', () => {
    expect(attemptOutcome(running(1), killedBy('SIGTERM'), true, 0)).toMatchObject({ next: 'requeue', patch: { attempts: 0, interrupted: 1, error: { code: 'INTERRUPTED' } } });
    expect(attemptOutcome(running(1), failure(143), true, 0)).toMatchObject({ next: 'requeue' });
    expect(attemptOutcome(running(1), killedBy('SIGTERM'), false, 0)).toMatchObject({ next: 'finish', state: 'FAILED' });
    const timedOut = result({ exit_code: -1, signal: 'SIGTERM', timed_out: true, error: { code: 'TIMEOUT', message: 'timed out' } });
    expect(attemptOutcome(running(1), timedOut, true, 0)).toMatchObject({ next: 'finish', state: 'FAILED' });
  });

  it('runs an attempt lost with its executor again, until the third loss in a row, which fails it as KILLED', () => {
    const task = running(1);
    expect(attemptOutcome(task, lostExecutor(), false, 0)).toMatchObject({ next: 'requeue', patch: { interrupted: 1 } });
    expect(attemptOutcome(task, lostExecutor(), false, 0)).toMatchObject({ next: 'requeue' });
    expect(attemptOutcome(task, lostExecutor(), false, 0)).toMatchObject({ next: 'finish', state: 'FAILED', patch: { error: { code: 'KILLED' } } });
    const recovered = running(1);
    attemptOutcome(recovered, lostExecutor(), false, 0);
    attemptOutcome(recovered, failure(), false, 0);
    expect(recovered.executorLosses).toBe(0);
  });
});
