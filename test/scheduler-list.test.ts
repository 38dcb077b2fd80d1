import { afterEach, describe, expect, it } from 'vitest';
import { startFailure, type AttemptResult } from '../src/executor/index.js';
import { TASK_STATES, isTerminal, taskSpec, type TaskSpecInput, type TaskState } from '../src/protocol/index.js';
import { Scheduler, type StoredTask, type Task } from '../src/scheduler/index.js';

/**
 * `Scheduler.list` against a scan of every task in submission order (what
 * it answered before it had indexes), through every way a task changes
 * state, retention and a restore. The scheduler runs in this process, its
 * attempts end when a test says so, and its journal keeps nothing.
 */

const failed = (): AttemptResult => startFailure('failed on purpose');
const completed = (): AttemptResult => ({ ...startFailure('unused'), exit_code: 0, error: null });

/** A scheduler whose attempts run until `end` ends them (or a cancel aborts them). */
class TestScheduler {
  readonly scheduler: Scheduler;
  private readonly attempts = new Map<string, (result: AttemptResult) => void>();

  constructor(options: { concurrency?: number; keepFinished?: number } = {}) {
    this.scheduler = new Scheduler({
      concurrency: options.concurrency ?? 2,
      keepFinished: options.keepFinished ?? 1000,
      keepOutputBytes: 1 << 20,
      maxQueue: 1000,
      maxSpecBytes: 1 << 30,
      journal: { put: () => undefined, drop: () => undefined, putGroup: () => undefined, flushed: () => Promise.resolve() },
      runAttempt: (task, stop) =>
        new Promise((resolve) => {
          this.attempts.set(task.id, resolve);
          stop.listen(() => resolve(failed()));
        }),
    });
    schedulers.push(this.scheduler);
  }

  submit(id: string, spec: TaskSpecInput = {}): Task {
    return this.scheduler.submit(taskSpec({ cmd: 'true', ...spec }).spec, id).task;
  }

  /** Ends a running attempt, and lets the scheduler act on it. */
  async end(id: string, result: AttemptResult): Promise<void> {
    const resolve = this.attempts.get(id);
    if (!resolve) throw new Error(`${id} is not running`);
    this.attempts.delete(id);
    resolve(result);
    await settled();
  }

  async cancel(id: string): Promise<void> {
    await this.scheduler.cancel(this.scheduler.get(id));
    await settled();
  }

  ids(filter: { state?: TaskState; limit?: number; after?: string }): string[] {
    return this.scheduler.list(filter).tasks.map((task) => task.id);
  }
}

const schedulers: Scheduler[] = [];
afterEach(async () => {
  await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.stop(0)));
});

/** Once dispatch and the ends of attempts have run (they follow in microtasks). */
const settled = () => new Promise((resolve) => setImmediate(resolve));

/** What `list` answered when it scanned every task (`all`, in submission order): the ids that match, in order. */
function scanned(all: StoredTask[], state: TaskState | undefined, after: string | undefined): string[] {
  const start = after === undefined ? 0 : all.findIndex((task) => task.id === after) + 1;
  return all
    .slice(start)
    .filter((task) => state === undefined || task.state === state)
    .map((task) => task.id);
}

/** Every state (and none), after every task (a sample of many) and from the start, at a few limits: as the scan answers. */
function expectListsAsScanned(scheduler: Scheduler): void {
  const all = scheduler.snapshot(); // in submission order
  const step = Math.ceil(all.length / 40);
  const afters = [undefined, ...all.filter((_, i) => i % step === 0 || i === all.length - 1).map((task) => task.id)];
  const limits = [1, 2, 1000];
  const listed = [];
  const expected = [];
  for (const state of [undefined, ...TASK_STATES]) {
    for (const after of afters) {
      const pages = limits.map((limit) => scheduler.list({ state, after, limit }));
      listed.push({ state, after, totals: pages.map((page) => page.total), pages: pages.map((page) => page.tasks.map((task) => task.id)) });
      const matching = scanned(all, state, after);
      expected.push({ state, after, totals: limits.map(() => matching.length), pages: limits.map((limit) => matching.slice(0, limit)) });
    }
  }
  // Compared as JSON first, which is fast; toEqual shows where they differ.
  if (JSON.stringify(listed) !== JSON.stringify(expected)) expect(listed).toEqual(expected);
}

describe('Scheduler.list', () => {
  it('follows tasks through queueing, running, retries, completion, failure and cancels', async () => {
    const t = new TestScheduler({ concurrency: 2 });
    t.submit('a');
    t.submit('b', { retries: 1, retry_delay_ms: 0 });
    t.submit('c');
    t.submit('d', { depends_on: ['c'] });
    t.submit('e', { delay_ms: 600_000 });
    t.submit('f', { retries: 1, retry_delay_ms: 600_000 });
    t.submit('g');
    await settled();
    expect(t.ids({ state: 'RUNNING' })).toEqual(['a', 'b']);
    expect(t.ids({ state: 'QUEUED' })).toEqual(['c', 'f', 'g']);
    expect(t.ids({ state: 'PENDING' })).toEqual(['d', 'e']);
    expectListsAsScanned(t.scheduler);

    await t.end('b', failed()); // retried at once: queued behind nothing, it runs again
    expect(t.ids({ state: 'RUNNING' })).toEqual(['a', 'b']);
    expect(t.scheduler.get('b').stored.attempts).toBe(2);
    await t.end('a', completed());
    await t.end('b', failed());
    expect(t.ids({ state: 'RUNNING' })).toEqual(['c', 'f']);
    expect(t.ids({ state: 'COMPLETED' })).toEqual(['a']);
    expect(t.ids({ state: 'FAILED' })).toEqual(['b']);
    expectListsAsScanned(t.scheduler);

    await t.end('f', failed()); // waits out its back-off as PENDING
    expect(t.ids({ state: 'PENDING' })).toEqual(['d', 'e', 'f']);
    expect(t.ids({ state: 'RUNNING' })).toEqual(['c', 'g']);
    expectListsAsScanned(t.scheduler);

    await t.cancel('c'); // running: its dependent d is canceled with it
    await t.cancel('e'); // pending
    await t.cancel('f'); // waiting out a back-off
    expect(t.ids({ state: 'CANCELED' })).toEqual(['c', 'd', 'e', 'f']);
    expect(t.ids({ state: 'PENDING' })).toEqual([]);
    expect(t.scheduler.list({ state: 'CANCELED', after: 'c' }).total).toBe(3);
    expectListsAsScanned(t.scheduler);
  });

  it('starts after the given task in submission order, whatever the state of that task', async () => {
    const t = new TestScheduler({ concurrency: 1 });
    for (const id of ['q1', 'q2', 'q3', 'q4', 'q5']) t.submit(id);
    await settled();
    await t.end('q1', completed()); // q2 runs
    expect(t.scheduler.list({ state: 'QUEUED', after: 'q1', limit: 1 })).toMatchObject({ total: 3, tasks: [{ id: 'q3' }] });
    expect(t.scheduler.list({ state: 'QUEUED', after: 'q2' }).total).toBe(3);
    expect(t.scheduler.list({ state: 'COMPLETED', after: 'q1' }).total).toBe(0);
    expect(t.scheduler.list({ state: 'QUEUED', after: 'q5' })).toEqual({ tasks: [], total: 0 });
    expect(() => t.scheduler.list({ after: 'unknown' })).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    expectListsAsScanned(t.scheduler);
  });

  it('leaves out the finished tasks retention drops, and an `after` naming one is NOT_FOUND', async () => {
    const t = new TestScheduler({ concurrency: 1, keepFinished: 2 });
    for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) t.submit(id);
    await settled();
    for (const id of ['r1', 'r2', 'r3']) await t.end(id, completed());
    await t.cancel('r5'); // finished after r3: r1 and r2 are dropped
    expect(t.ids({})).toEqual(['r3', 'r4', 'r5']);
    expect(t.scheduler.list({ state: 'COMPLETED' })).toMatchObject({ total: 1, tasks: [{ id: 'r3' }] });
    expect(() => t.scheduler.list({ after: 'r1' })).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    expectListsAsScanned(t.scheduler);
  });

  it('lists restored tasks in their submission order, and new ones after them', async () => {
    const before = new TestScheduler({ concurrency: 1 });
    for (const id of ['s1', 's2', 's3', 's4']) before.submit(id);
    before.submit('s5', { delay_ms: 600_000 });
    await settled();
    await before.end('s1', completed());
    await before.cancel('s3');
    // The journal keeps tasks in no particular order; s2 was RUNNING and is queued again.
    const stored: StoredTask[] = structuredClone(before.scheduler.snapshot()).reverse();

    const after = new TestScheduler({ concurrency: 1 });
    after.scheduler.restore(stored, () => false);
    after.submit('s6');
    expect(after.ids({})).toEqual(['s1', 's2', 's3', 's4', 's5', 's6']);
    expect(after.ids({ state: 'QUEUED' })).toEqual(['s2', 's4', 's6']);
    expect(after.ids({ state: 'PENDING' })).toEqual(['s5']);
    expectListsAsScanned(after.scheduler);
    await settled();
    expect(after.ids({ state: 'RUNNING' })).toEqual(['s2']);
    expect(after.ids({ state: 'QUEUED' })).toEqual(['s4', 's6']);
    expectListsAsScanned(after.scheduler);
  });

  it('answers as the scan does through a long random run of submits, ends of attempts and cancels', async () => {
    // xorshift32 from a fixed seed: the same run every time, so that a failure can be run again
    let seed = 7;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const t = new TestScheduler({ concurrency: 2, keepFinished: 15 });
    let submits = 0;
    const seen = new Set<TaskState>();
    for (let step = 0; step < 300; step++) {
      const live = t.scheduler.snapshot().filter((task) => !isTerminal(task.state));
      const running = live.filter((task) => task.state === 'RUNNING');
      const choice = random(20);
      if (choice < 10 || live.length === 0) {
        // A burst, so that tasks queue up behind the running ones.
        for (let burst = 1 + random(4); burst > 0; burst--, submits++) {
          const known = t.scheduler.snapshot().map((task) => task.id);
          const kinds: TaskSpecInput[] = [
            {},
            { retries: 2, retry_delay_ms: 0 },
            { delay_ms: 600_000 },
            { depends_on: [known[random(known.length)]!] },
          ];
          t.submit(`x${submits}`, kinds[random(known.length > 0 ? kinds.length : 3)]);
        }
      } else if (choice < 17 && running.length > 0) {
        await t.end(running[random(running.length)]!.id, random(3) === 0 ? failed() : completed());
      } else {
        await t.cancel(live[random(live.length)]!.id);
      }
      await settled();
      expectListsAsScanned(t.scheduler);
      for (const task of t.scheduler.snapshot()) seen.add(task.state);
      if (step % 50 === 49) {
        // What a restart restores from this point: a RUNNING attempt counts as started or not.
        const restored = new TestScheduler({ concurrency: 2, keepFinished: 15 });
        restored.scheduler.restore(structuredClone(t.scheduler.snapshot()), (task) => task.seq % 2 === 0);
        expectListsAsScanned(restored.scheduler);
        await settled();
        expectListsAsScanned(restored.scheduler);
      }
    }
    expect(submits).toBeGreaterThan(100);
    expect([...seen].sort(), 'states the run went through').toEqual([...TASK_STATES].sort());
  });
});
