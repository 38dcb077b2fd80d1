import { afterEach, describe, expect, it } from 'vitest';
import type { AttemptResult } from '../src/executor/index.js';
import { RequestError, SPEC_DEFAULTS, type TaskRecord, type TaskSpec, type TaskState } from '../src/protocol/index.js';
import type { AttemptRunner, Task, TaskService } from '../src/scheduler/index.js';

/**
 * What every scheduler must give a client, whichever store holds its tasks:
 * the rules' behaviour checked with a runner of the test's own and no
 * daemon. Each store runs it: `describeStoreConformance('memory', make)`.
 * Calls are awaited (the cluster's answer through PostgreSQL), tasks are
 * read again to see a later state (the cluster's are snapshots), and
 * starts are waited for (the cluster's follow a NOTIFY).
 */

export const spec = (fields: Partial<TaskSpec> = {}): TaskSpec => ({ ...SPEC_DEFAULTS, cmd: ['true'], depends_on: [], ...fields });

export const result = (fields: Partial<AttemptResult> = {}): AttemptResult => ({
  exit_code: 0,
  signal: null,
  timed_out: false,
  stdout_bytes: 0,
  stderr_bytes: 0,
  stdout_truncated: false,
  stderr_truncated: false,
  duration_ms: 1,
  error: null,
  ...fields,
});

export const failure = (code = 1): AttemptResult => result({ exit_code: code, error: { code: 'NONZERO_EXIT', message: `exited with code ${code}` } });

/** Attempts that run until the test ends them; `started` lists the ids in the order they started. */
export class FakeRunner {
  readonly started: string[] = [];
  private readonly running = new Map<string, (result: AttemptResult | undefined) => void>();

  readonly run: AttemptRunner = (task, stop) =>
    new Promise((resolve) => {
      this.started.push(task.id);
      this.running.set(task.id, resolve);
      // An abort after the attempt ended (the cluster records an end in its own time) kills nothing.
      const killed = () => this.running.get(task.id) === resolve && this.end(task.id, result({ exit_code: null, signal: 'SIGTERM', error: { code: 'KILLED', message: 'ended by SIGTERM' } }));
      stop.listen(killed);
    });

  end(id: string, outcome: AttemptResult = result()): void {
    const resolve = this.running.get(id);
    if (!resolve) throw new Error(`${id} is not running`);
    this.running.delete(id);
    resolve(outcome);
  }

  get runningIds(): string[] {
    return [...this.running.keys()];
  }
}

/** Lets queued microtasks and immediates run: the embedded store dispatches a microtask after a submit. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` (sync or async, unlike helpers' `eventually`) until it gives
 * a value other than undefined/false; `what` says what was awaited when it
 * does not come.
 */
export async function until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: () => string = () => 'condition', timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what()}`);
    await sleep(20);
  }
}

/** A call whose refusal is a rejection, whether the store throws at once (embedded) or rejects (cluster). */
export const call = <T>(work: () => T | Promise<T>): Promise<T> => (async () => work())();

/**
 * Time enough for what must not start to have started if it were going to:
 * a claim after a NOTIFY takes a few ms. A check after it can only pass
 * wrongly when the machine is slow, never fail wrongly.
 */
export const quietly = () => sleep(300);

const sorted = (ids: string[]) => [...ids].sort();
const ids = (page: { tasks: { id: string }[] }) => page.tasks.map((task) => task.id);

/** Waits until the runner runs exactly `expected`, in any order. */
export async function runningExactly(runner: FakeRunner, expected: string[]): Promise<void> {
  const want = JSON.stringify(sorted(expected));
  await until(
    () => JSON.stringify(sorted(runner.runningIds)) === want,
    () => `running ${JSON.stringify(sorted(runner.runningIds))}, expected ${want}`,
  );
}

/** The scheduler as the suite drives it: whatever its store, it can be stopped. */
export type SchedulerUnderTest = TaskService & { stop(graceMs: number): Promise<void> };

export interface StoreOptions {
  concurrency: number;
  keepFinished: number;
  maxQueue: number;
  /** the embedded store's bound on specs (the cluster has none) */
  maxSpecBytes: number;
  runAttempt: AttemptRunner;
}

export type MakeScheduler = (options: StoreOptions) => { scheduler: SchedulerUnderTest } | Promise<{ scheduler: SchedulerUnderTest }>;

/** Waits until the task is in `state`; the task as read then. */
export async function reaches(scheduler: TaskService, id: string, state: TaskState): Promise<Task> {
  let last: TaskState | undefined;
  return until(
    async () => {
      const task = await scheduler.get(id);
      last = task.state;
      return task.state === state && task;
    },
    () => `${id} is ${last}, expected ${state}`,
  );
}

/**
 * The record of a task as an answer carries it: taken at once from a task in
 * memory (the embedded scheduler starts queued tasks a moment later, after
 * the answer is made), or from the store's answer once it arrives.
 */
async function answered<T>(answer: T | Promise<T>, taskOf: (value: T) => Task): Promise<TaskRecord> {
  return answer instanceof Promise ? taskOf(await answer).record() : taskOf(answer).record();
}

export function describeStoreConformance(name: string, makeScheduler: MakeScheduler): void {
  describe(`scheduler conformance: ${name}`, () => {
    const schedulers: SchedulerUnderTest[] = [];
    afterEach(async () => {
      await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.stop(0)));
    });

    async function make(options: Partial<Omit<StoreOptions, 'runAttempt'>> = {}) {
      const runner = new FakeRunner();
      const { scheduler } = await makeScheduler({
        concurrency: options.concurrency ?? 2,
        keepFinished: options.keepFinished ?? 100,
        maxQueue: options.maxQueue ?? 100,
        maxSpecBytes: options.maxSpecBytes ?? 1 << 30,
        runAttempt: runner.run,
      });
      schedulers.push(scheduler);
      const get = (id: string) => scheduler.get(id);
      const record = async (id: string) => (await scheduler.get(id)).record();
      return { scheduler, runner, get, record };
    }

    it('registers a task QUEUED, runs it, and records the result', async () => {
      const { scheduler, runner, record } = await make();
      // The answer is the state the task was accepted in (docs/protocol.md), though it may have started since.
      expect((await answered(scheduler.submit(spec(), 'a'), ({ task }) => task)).state).toBe('QUEUED');
      await reaches(scheduler, 'a', 'RUNNING');
      await runningExactly(runner, ['a']);
      runner.end('a', result({ stdout_bytes: 3 }));
      await reaches(scheduler, 'a', 'COMPLETED');
      expect(await record('a')).toMatchObject({ state: 'COMPLETED', exit_code: 0, attempts: 1, error: null });
      expect(await scheduler.countByState()).toMatchObject({ counts: { COMPLETED: 1, RUNNING: 0 }, tasks: 0 });
    });

    it('returns a resubmitted id with the same spec as a duplicate, and refuses it with another', async () => {
      const { scheduler } = await make();
      await scheduler.submit(spec(), 'a');
      expect((await scheduler.submit(spec(), 'a')).duplicate).toBe(true);
      await expect(call(() => scheduler.submit(spec({ priority: 5 }), 'a'))).rejects.toMatchObject({ code: 'ID_CONFLICT' });
      await expect(call(() => scheduler.get('nobody'))).rejects.toThrow(RequestError);
    });

    it('starts by priority, then first in first out, within the concurrency limit', async () => {
      const { scheduler, runner } = await make({ concurrency: 1 });
      await scheduler.submit(spec(), 'first');
      await runningExactly(runner, ['first']);
      await scheduler.submit(spec(), 'low');
      await scheduler.submit(spec({ priority: 9 }), 'high');
      await scheduler.submit(spec(), 'low-2');
      for (let i = 0; i < 4; i++) {
        const [id] = await until(() => runner.runningIds.length > 0 && runner.runningIds, () => `the start of a task after ${runner.started}`);
        expect(runner.runningIds).toHaveLength(1);
        runner.end(id!);
      }
      expect(runner.started).toEqual(['first', 'high', 'low', 'low-2']);
    });

    it('runs a dependent after its dependency completes, and cancels it when the dependency fails', async () => {
      const { scheduler, runner, record } = await make();
      await scheduler.submit(spec(), 'build');
      expect((await scheduler.submit(spec({ depends_on: ['build'] }), 'deploy')).task.state).toBe('PENDING');
      await scheduler.submit(spec(), 'flaky');
      await scheduler.submit(spec({ depends_on: ['flaky'] }), 'after-flaky');
      await expect(call(() => scheduler.submit(spec({ depends_on: ['ghost'] }), 'x'))).rejects.toMatchObject({ code: 'UNKNOWN_DEPENDENCY' });
      await runningExactly(runner, ['build', 'flaky']);
      runner.end('build');
      runner.end('flaky', failure());
      await reaches(scheduler, 'deploy', 'RUNNING');
      await reaches(scheduler, 'after-flaky', 'CANCELED');
      expect(await record('after-flaky')).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    });

    it('retries a failed attempt after its back-off, and fails once no retries are left', async () => {
      // The back-off is checked from below on the real clock: the retry cannot start before it is over
      // (the embedded store's exact boundary is checked with fake timers in memory-store.test.ts).
      const backoffMs = 300;
      const { scheduler, runner, record } = await make();
      await scheduler.submit(spec({ retries: 1, retry_delay_ms: backoffMs }), 'r');
      await runningExactly(runner, ['r']);
      const failedAt = Date.now();
      runner.end('r', failure(3));
      const between = await until(async () => {
        const task = await scheduler.get('r');
        return (task.state !== 'RUNNING' || task.stored.attempts > 1) && task;
      });
      expect(between.record()).toMatchObject({ state: 'PENDING', attempts: 1, exit_code: 3 });
      await until(() => runner.started.length === 2 && runner.runningIds.includes('r'), () => `the retry of r (started: ${runner.started})`);
      expect(Date.now() - failedAt).toBeGreaterThanOrEqual(backoffMs);
      expect(await record('r')).toMatchObject({ state: 'RUNNING', attempts: 2 });
      runner.end('r', failure(4));
      await reaches(scheduler, 'r', 'FAILED');
      expect(await record('r')).toMatchObject({ state: 'FAILED', exit_code: 4, attempts: 2, max_attempts: 2 });
    });

    it("counts an attempt ended by SIGTERM as interrupted when the daemon's own stop follows at once (a stop of the whole service)", async () => {
      const { scheduler, runner, record } = await make();
      await scheduler.submit(spec(), 'signaled');
      await scheduler.submit(spec(), 'failed');
      await runningExactly(runner, ['signaled', 'failed']);
      const bySigterm = result({ exit_code: null, signal: 'SIGTERM', error: { code: 'KILLED', message: 'ended by SIGTERM' } });
      runner.end('failed', bySigterm);
      await sleep(700); // past the hold: nobody stopped the daemon
      expect(await record('failed')).toMatchObject({ state: 'FAILED', error: { code: 'KILLED' } });
      runner.end('signaled', bySigterm);
      await sleep(100); // well within the hold (500 ms), and time enough to record a result
      expect((await scheduler.get('signaled')).state).toBe('RUNNING'); // held back
      await scheduler.stop(0);
      expect(await record('signaled')).toMatchObject({ state: 'QUEUED', attempts: 0, interrupted: 1, error: { code: 'INTERRUPTED' } });
    });

    it('keeps the result of an attempt that ended before a stop: a failure is not taken for an interruption', async () => {
      const { scheduler, runner, record } = await make();
      await scheduler.submit(spec(), 'failed');
      await scheduler.submit(spec(), 'completed');
      await runningExactly(runner, ['failed', 'completed']);
      runner.end('failed', failure(3));
      runner.end('completed');
      await scheduler.stop(0);
      expect(await record('failed')).toMatchObject({ state: 'FAILED', exit_code: 3, attempts: 1, error: { code: 'NONZERO_EXIT' } });
      expect(await record('completed')).toMatchObject({ state: 'COMPLETED', attempts: 1 });
    });

    it('cancels a queued task at once, a running one through its runner, and refuses a finished one', async () => {
      const { scheduler, runner, get } = await make({ concurrency: 1 });
      await scheduler.submit(spec(), 'running');
      await scheduler.submit(spec(), 'queued');
      await runningExactly(runner, ['running']);
      expect((await scheduler.cancel(await get('queued'))).record()).toMatchObject({ state: 'CANCELED', attempts: 0 });
      expect((await scheduler.cancel(await get('running'))).record()).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });
      expect(runner.runningIds).toEqual([]);
      await expect(call(async () => scheduler.cancel(await get('queued')))).rejects.toMatchObject({ code: 'NOT_CANCELABLE' });
    });

    it('lists in submission order by state, pages after an id, and counts what matches', async () => {
      const { scheduler, runner } = await make({ concurrency: 1 });
      for (const id of ['a', 'b', 'c', 'd', 'e']) await scheduler.submit(spec(), id);
      await runningExactly(runner, ['a']);
      runner.end('a');
      await runningExactly(runner, ['b']);
      await reaches(scheduler, 'a', 'COMPLETED');
      expect(ids(await scheduler.list({}))).toEqual(['a', 'b', 'c', 'd', 'e']);
      expect(await scheduler.list({ state: 'QUEUED', limit: 2 })).toMatchObject({ total: 3 });
      expect(ids(await scheduler.list({ state: 'QUEUED', limit: 2 }))).toEqual(['c', 'd']);
      expect(ids(await scheduler.list({ state: 'QUEUED', after: 'c' }))).toEqual(['d', 'e']);
      expect((await scheduler.list({ after: 'b' })).total).toBe(3);
    });

    it('keeps at most keepFinished finished tasks, the oldest going first, and never an unfinished one', async () => {
      const { scheduler, runner } = await make({ keepFinished: 2 });
      for (const id of ['a', 'b', 'c']) {
        await scheduler.submit(spec(), id);
        await runningExactly(runner, [id]);
        runner.end(id);
        await reaches(scheduler, id, 'COMPLETED');
      }
      await scheduler.submit(spec({ delay_ms: 60_000 }), 'later');
      // The embedded store forgets at once, the cluster at its next upkeep.
      await until(() => call(() => scheduler.get('a')).then(() => false, (error: { code?: string }) => error.code === 'NOT_FOUND'), () => 'a forgotten');
      expect(ids(await scheduler.list({}))).toEqual(['b', 'c', 'later']);
    });

    it('refuses a task past maxQueue unfinished', async () => {
      const { scheduler } = await make({ maxQueue: 2 });
      await scheduler.submit(spec({ delay_ms: 60_000 }), 'a');
      await scheduler.submit(spec({ delay_ms: 60_000 }), 'b');
      await expect(call(() => scheduler.submit(spec(), 'c'))).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    });

    it('limits each group to its own concurrency, while other groups run alongside', async () => {
      // Three slots, the default group limited to one: the embedded store's limit is per group, the cluster's per daemon.
      const { scheduler, runner } = await make({ concurrency: 3 });
      await expect(call(() => scheduler.submit(spec({ group: 'gpu' }), 'early'))).rejects.toMatchObject({ code: 'UNKNOWN_GROUP' });
      await scheduler.setGroup('default', 1);
      await scheduler.setGroup('gpu', 2);
      for (const id of ['g1', 'g2', 'g3']) await scheduler.submit(spec({ group: 'gpu' }), id);
      for (const id of ['d1', 'd2']) await scheduler.submit(spec(), id);
      await runningExactly(runner, ['d1', 'g1', 'g2']);
      expect(await scheduler.groups()).toEqual([
        { name: 'default', concurrency: 1, running: 1, queued: 1, paused: false },
        { name: 'gpu', concurrency: 2, running: 2, queued: 1, paused: false },
      ]);
      // A lower limit kills nothing; it starts nothing new until under it.
      await scheduler.setGroup('gpu', 1);
      runner.end('g1');
      await reaches(scheduler, 'g1', 'COMPLETED');
      await quietly();
      expect(sorted(runner.runningIds)).toEqual(['d1', 'g2']);
      runner.end('g2');
      await runningExactly(runner, ['d1', 'g3']);
      await until(() => scheduler.concurrency.running === 2, () => `running ${scheduler.concurrency.running}, expected 2`);
    });

    it('pausing a group holds its starts, running tasks go on, and resume starts them', async () => {
      const { scheduler, runner } = await make({ concurrency: 3 });
      await scheduler.setGroup('other', 1);
      await scheduler.submit(spec(), 'running');
      await runningExactly(runner, ['running']);
      expect(await scheduler.setPaused(true)).toMatchObject([
        { name: 'default', paused: true },
        { name: 'other', paused: true },
      ]);
      await scheduler.submit(spec(), 'held');
      await scheduler.submit(spec({ group: 'other' }), 'other-held');
      await quietly();
      expect(runner.runningIds).toEqual(['running']);
      const [other] = await scheduler.setPaused(false, 'other');
      expect(other).toMatchObject({ name: 'other', paused: false });
      expect(other!.queued + other!.running).toBe(1); // it may have started by the time the cluster counts
      await runningExactly(runner, ['other-held', 'running']);
      await quietly();
      expect(sorted(runner.runningIds)).toEqual(['other-held', 'running']);
      await expect(call(() => scheduler.setPaused(true, 'nope'))).rejects.toMatchObject({ code: 'UNKNOWN_GROUP' });
      await scheduler.setPaused(false);
      await runningExactly(runner, ['held', 'other-held', 'running']);
    });

    it('lists groups default first, then in the order they were made, whatever changed since', async () => {
      const { scheduler } = await make();
      await scheduler.setGroup('zeta', 1);
      await scheduler.setGroup('alpha', 1);
      await scheduler.setGroup('zeta', 2);
      await scheduler.setPaused(true, 'zeta');
      expect((await scheduler.groups()).map((group) => group.name)).toEqual(['default', 'zeta', 'alpha']);
    });

    it('restarts a failed task with a fresh budget, and with it the tasks canceled because it failed', async () => {
      const { scheduler, runner, get, record } = await make();
      await scheduler.submit(spec({ retries: 1, retry_delay_ms: 0 }), 'build');
      await scheduler.submit(spec({ depends_on: ['build'] }), 'test');
      await scheduler.submit(spec({ depends_on: ['test'] }), 'deploy');
      await scheduler.submit(spec(), 'unrelated');
      await runningExactly(runner, ['build', 'unrelated']);
      await expect(call(async () => scheduler.restart(await get('build')))).rejects.toMatchObject({ code: 'NOT_RESTARTABLE' });
      runner.end('unrelated');
      for (let attempt = 1; attempt <= 2; attempt++) {
        await until(() => runner.started.filter((id) => id === 'build').length === attempt && runner.runningIds.includes('build'), () => `attempt ${attempt} of build`);
        runner.end('build', failure());
      }
      await reaches(scheduler, 'deploy', 'CANCELED');
      expect(await record('deploy')).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
      await expect(call(async () => scheduler.restart(await get('test')))).rejects.toMatchObject({ code: 'NOT_RESTARTABLE' });
      // Paused, so that the restarted task is seen as restarted, not as started already.
      await scheduler.setPaused(true);
      const restarted = (await scheduler.restart(await get('build'))).record();
      expect(restarted).toMatchObject({ state: 'QUEUED', attempts: 0, restarts: 1, exit_code: null, error: null, max_attempts: 2 });
      expect(restarted.finished_at).toBeUndefined();
      expect(await record('test')).toMatchObject({ state: 'PENDING', restarts: 1, error: null });
      expect(await record('deploy')).toMatchObject({ state: 'PENDING', restarts: 1 });
      expect(await record('unrelated')).toMatchObject({ state: 'COMPLETED', restarts: 0 });
      await scheduler.setPaused(false);
      for (const id of ['build', 'test', 'deploy']) {
        await runningExactly(runner, [id]);
        runner.end(id);
      }
      await reaches(scheduler, 'deploy', 'COMPLETED');
      expect(runner.started.filter((id) => id === 'build')).toHaveLength(3);
    });

    it('removes a task: a finished one is forgotten, an unfinished one must be canceled first', async () => {
      const { scheduler, runner, get } = await make();
      await scheduler.submit(spec(), 'done');
      await runningExactly(runner, ['done']);
      runner.end('done');
      await reaches(scheduler, 'done', 'COMPLETED');
      await scheduler.remove(await get('done'));
      await expect(call(() => get('done'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect((await scheduler.list({})).total).toBe(0);
      await scheduler.submit(spec({ delay_ms: 60_000 }), 'waiting');
      await expect(call(async () => scheduler.remove(await get('waiting')))).rejects.toMatchObject({ code: 'NOT_CANCELABLE' });
      // The same id can be used again once forgotten.
      expect((await scheduler.submit(spec({ priority: 3 }), 'done')).duplicate).toBe(false);
    });

    it('edits a task not yet started: its command, priority, start time and group', async () => {
      // Two slots, the default group limited to one (see the group test).
      const { scheduler, runner, get } = await make({ concurrency: 2 });
      await scheduler.setGroup('default', 1);
      await scheduler.setGroup('gpu', 1);
      await scheduler.submit(spec(), 'busy');
      await scheduler.submit(spec(), 'low');
      await scheduler.submit(spec(), 'edited');
      await scheduler.submit(spec({ delay_ms: 60_000 }), 'later');
      await runningExactly(runner, ['busy']);
      await expect(call(async () => scheduler.edit(await get('busy'), { id: 'busy', priority: 1 }))).rejects.toMatchObject({ code: 'NOT_EDITABLE' });
      await expect(call(async () => scheduler.edit(await get('low'), { id: 'low', group: 'nope' }))).rejects.toMatchObject({ code: 'UNKNOWN_GROUP' });
      expect((await scheduler.edit(await get('edited'), { id: 'edited', cmd: 'echo new', priority: 5 })).record()).toMatchObject({
        cmd: 'echo new',
        priority: 5,
        state: 'QUEUED',
      });
      const later = await get('later');
      expect(await answered(scheduler.edit(later, { id: 'later', start_at: Date.now() - 1, group: 'gpu' }), (task) => task)).toMatchObject({
        group: 'gpu',
        state: 'QUEUED',
      });
      await runningExactly(runner, ['busy', 'later']);
      runner.end('busy');
      await runningExactly(runner, ['edited', 'later']);
      expect((await get('edited')).spec.cmd).toBe('echo new');
      expect((await scheduler.edit(await get('low'), { id: 'low', start_at: Date.now() + 60_000 })).state).toBe('PENDING');
    });

    it('lists newest first, paging on after an id in that order', async () => {
      const { scheduler } = await make();
      for (const id of ['a', 'b', 'c', 'd']) await scheduler.submit(spec({ delay_ms: 60_000 }), id);
      expect(ids(await scheduler.list({ order: 'newest', limit: 2 }))).toEqual(['d', 'c']);
      expect(await scheduler.list({ order: 'newest', after: 'c' })).toMatchObject({ total: 2 });
      expect(ids(await scheduler.list({ order: 'newest', after: 'c' }))).toEqual(['b', 'a']);
    });

    it('lists the tasks of one group, and refuses a group that does not exist', async () => {
      const { scheduler } = await make();
      await scheduler.setGroup('gpu', 1);
      for (const id of ['a', 'b', 'c', 'd']) await scheduler.submit(spec({ delay_ms: 60_000, ...(id === 'b' || id === 'd' ? { group: 'gpu' } : {}) }), id);
      expect(await scheduler.list({ group: 'gpu', order: 'newest', limit: 1 })).toMatchObject({ total: 2 });
      expect(ids(await scheduler.list({ group: 'gpu', order: 'newest', limit: 1 }))).toEqual(['d']);
      expect(ids(await scheduler.list({ group: 'default', after: 'a' }))).toEqual(['c']);
      await expect(call(() => scheduler.list({ group: 'nope' }))).rejects.toMatchObject({ code: 'UNKNOWN_GROUP' });
    });
  });
}
