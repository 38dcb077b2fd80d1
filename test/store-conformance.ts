import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AttemptResult } from '../src/executor/index.js';
import { RequestError, SPEC_DEFAULTS, type TaskSpec } from '../src/protocol/index.js';
import { Scheduler, type AttemptRunner, type TaskStore } from '../src/scheduler/index.js';

/**
 * What every TaskStore must give the scheduler's rules: the behaviour a
 * client sees, checked with a runner of the test's own and no daemon.
 * Each store runs it: `describeStoreConformance('memory', makeStore)`.
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

  readonly run: AttemptRunner = (task, signal) =>
    new Promise((resolve) => {
      this.started.push(task.id);
      this.running.set(task.id, resolve);
      signal.addEventListener('abort', () => this.end(task.id, result({ exit_code: null, signal: 'SIGTERM', error: { code: 'KILLED', message: 'ended by SIGTERM' } })), { once: true });
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

/** Lets queued microtasks and immediates run: dispatch happens a microtask after a submit. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));

export function describeStoreConformance(name: string, makeStore: () => TaskStore): void {
  describe(`TaskStore conformance: ${name}`, () => {
    const schedulers: Scheduler[] = [];
    afterEach(async () => {
      vi.useRealTimers();
      await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.stop(0)));
    });

    function make(options: { concurrency?: number; keepFinished?: number; maxQueue?: number; maxSpecBytes?: number } = {}) {
      const runner = new FakeRunner();
      const store = makeStore();
      const scheduler = new Scheduler({
        store,
        runAttempt: runner.run,
        concurrency: options.concurrency ?? 2,
        keepFinished: options.keepFinished ?? 100,
        keepOutputBytes: 1 << 30,
        maxQueue: options.maxQueue ?? 100,
        maxSpecBytes: options.maxSpecBytes ?? 1 << 30,
      });
      schedulers.push(scheduler);
      return { scheduler, runner, store };
    }

    it('registers a task QUEUED, runs it, and records the result', async () => {
      const { scheduler, runner } = make();
      const { task } = scheduler.submit(spec(), 'a');
      expect(task.state).toBe('QUEUED');
      await settle();
      expect(scheduler.get('a').state).toBe('RUNNING');
      runner.end('a', result({ stdout_bytes: 3 }));
      await settle();
      expect(scheduler.get('a').record()).toMatchObject({ state: 'COMPLETED', exit_code: 0, attempts: 1, error: null });
      expect(scheduler.countByState()).toMatchObject({ counts: { COMPLETED: 1, RUNNING: 0 }, tasks: 0 });
    });

    it('returns a resubmitted id with the same spec as a duplicate, and refuses it with another', () => {
      const { scheduler } = make();
      scheduler.submit(spec(), 'a');
      expect(scheduler.submit(spec(), 'a').duplicate).toBe(true);
      expect(() => scheduler.submit(spec({ priority: 5 }), 'a')).toThrow(expect.objectContaining({ code: 'ID_CONFLICT' }));
      expect(() => scheduler.get('nobody')).toThrow(RequestError);
    });

    it('starts by priority, then first in first out, within the concurrency limit', async () => {
      const { scheduler, runner } = make({ concurrency: 1 });
      scheduler.submit(spec(), 'first');
      await settle();
      scheduler.submit(spec(), 'low');
      scheduler.submit(spec({ priority: 9 }), 'high');
      scheduler.submit(spec(), 'low-2');
      for (const id of ['first', 'high', 'low', 'low-2']) {
        await settle();
        runner.end(id);
      }
      expect(runner.started).toEqual(['first', 'high', 'low', 'low-2']);
    });

    it('runs a dependent after its dependency completes, and cancels it when the dependency fails', async () => {
      const { scheduler, runner } = make();
      scheduler.submit(spec(), 'build');
      expect(scheduler.submit(spec({ depends_on: ['build'] }), 'deploy').task.state).toBe('PENDING');
      scheduler.submit(spec(), 'flaky');
      scheduler.submit(spec({ depends_on: ['flaky'] }), 'after-flaky');
      expect(() => scheduler.submit(spec({ depends_on: ['ghost'] }), 'x')).toThrow(expect.objectContaining({ code: 'UNKNOWN_DEPENDENCY' }));
      await settle();
      runner.end('build');
      runner.end('flaky', failure());
      await settle();
      expect(scheduler.get('deploy').state).toBe('RUNNING');
      expect(scheduler.get('after-flaky').record()).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    });

    it('retries a failed attempt after its back-off, and fails once no retries are left', async () => {
      // The clock is the test's: a loaded machine cannot let the back-off pass before the PENDING check.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
      const { scheduler, runner } = make();
      scheduler.submit(spec({ retries: 1, retry_delay_ms: 1_000 }), 'r');
      await settle();
      runner.end('r', failure(3));
      await settle();
      expect(scheduler.get('r').state).toBe('PENDING');
      vi.advanceTimersByTime(999);
      await settle();
      expect(scheduler.get('r').state).toBe('PENDING');
      vi.advanceTimersByTime(1);
      await settle();
      expect(scheduler.get('r').state).toBe('RUNNING');
      runner.end('r', failure(4));
      await settle();
      expect(scheduler.get('r').record()).toMatchObject({ state: 'FAILED', exit_code: 4, attempts: 2, max_attempts: 2 });
    });

    it("counts an attempt ended by SIGTERM as interrupted when the daemon's own stop follows at once (a stop of the whole service)", async () => {
      const { scheduler, runner } = make();
      scheduler.submit(spec(), 'signaled');
      scheduler.submit(spec(), 'failed');
      await settle();
      const bySigterm = result({ exit_code: null, signal: 'SIGTERM', error: { code: 'KILLED', message: 'ended by SIGTERM' } });
      runner.end('failed', bySigterm);
      await new Promise((resolve) => setTimeout(resolve, 700)); // past the hold: nobody stopped the daemon
      expect(scheduler.get('failed').record()).toMatchObject({ state: 'FAILED', error: { code: 'KILLED' } });
      runner.end('signaled', bySigterm);
      await settle();
      expect(scheduler.get('signaled').state).toBe('RUNNING'); // held back
      await scheduler.stop(0);
      expect(scheduler.get('signaled').record()).toMatchObject({ state: 'QUEUED', attempts: 0, interrupted: 1, error: { code: 'INTERRUPTED' } });
    });

    it('cancels a queued task at once, a running one through its runner, and refuses a finished one', async () => {
      const { scheduler, runner } = make({ concurrency: 1 });
      scheduler.submit(spec(), 'running');
      scheduler.submit(spec(), 'queued');
      await settle();
      expect((await scheduler.cancel(scheduler.get('queued'))).record()).toMatchObject({ state: 'CANCELED', attempts: 0 });
      expect((await scheduler.cancel(scheduler.get('running'))).record()).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });
      expect(runner.runningIds).toEqual([]);
      await expect(scheduler.cancel(scheduler.get('queued'))).rejects.toMatchObject({ code: 'NOT_CANCELABLE' });
    });

    it('lists in submission order by state, pages after an id, and counts what matches', async () => {
      const { scheduler, runner } = make({ concurrency: 1 });
      for (const id of ['a', 'b', 'c', 'd', 'e']) scheduler.submit(spec(), id);
      await settle();
      runner.end('a');
      await settle();
      const ids = (page: { tasks: { id: string }[] }) => page.tasks.map((task) => task.id);
      expect(ids(scheduler.list({}))).toEqual(['a', 'b', 'c', 'd', 'e']);
      expect(scheduler.list({ state: 'QUEUED', limit: 2 })).toMatchObject({ total: 3 });
      expect(ids(scheduler.list({ state: 'QUEUED', limit: 2 }))).toEqual(['c', 'd']);
      expect(ids(scheduler.list({ state: 'QUEUED', after: 'c' }))).toEqual(['d', 'e']);
      expect(scheduler.list({ after: 'b' }).total).toBe(3);
    });

    it('keeps at most keepFinished finished tasks, the oldest going first, and never an unfinished one', async () => {
      const { scheduler, runner } = make({ keepFinished: 2 });
      for (const id of ['a', 'b', 'c']) {
        scheduler.submit(spec(), id);
        await settle();
        runner.end(id);
        await settle();
      }
      scheduler.submit(spec({ delay_ms: 60_000 }), 'later');
      expect(() => scheduler.get('a')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
      expect(scheduler.list({}).tasks.map((task) => task.id)).toEqual(['b', 'c', 'later']);
    });

    it('refuses a task past maxQueue unfinished, and a spec that does not fit beside the unfinished ones', () => {
      const { scheduler } = make({ maxQueue: 2, maxSpecBytes: 1000 });
      scheduler.submit(spec({ delay_ms: 60_000 }), 'a');
      expect(() => scheduler.submit(spec({ stdin: 'x'.repeat(2000) }), 'big')).toThrow(expect.objectContaining({ code: 'QUEUE_FULL' }));
      scheduler.submit(spec({ delay_ms: 60_000 }), 'b');
      expect(() => scheduler.submit(spec(), 'c')).toThrow(expect.objectContaining({ code: 'QUEUE_FULL' }));
    });

    it('restores what was stored: finished tasks stay, a task RUNNING when the daemon went runs again as interrupted', async () => {
      const first = make();
      first.scheduler.submit(spec(), 'done');
      first.scheduler.submit(spec(), 'cut');
      await settle();
      first.runner.end('done');
      await settle();
      const stored = first.scheduler.snapshot().map((task) => structuredClone(task));
      const second = make();
      second.scheduler.restore(stored, () => true);
      await settle();
      expect(second.scheduler.get('done').state).toBe('COMPLETED');
      expect(second.scheduler.get('cut').record()).toMatchObject({ state: 'RUNNING', attempts: 1, interrupted: 1 });
      expect(second.runner.started).toEqual(['cut']);
    });

    it('limits each group to its own concurrency, while other groups run alongside', async () => {
      const { scheduler, runner } = make({ concurrency: 1 });
      expect(() => scheduler.submit(spec({ group: 'gpu' }), 'early')).toThrow(expect.objectContaining({ code: 'UNKNOWN_GROUP' }));
      scheduler.setGroup('gpu', 2);
      for (const id of ['g1', 'g2', 'g3']) scheduler.submit(spec({ group: 'gpu' }), id);
      for (const id of ['d1', 'd2']) scheduler.submit(spec(), id);
      await settle();
      expect(runner.runningIds.sort()).toEqual(['d1', 'g1', 'g2']);
      expect(scheduler.groups()).toEqual([
        { name: 'default', concurrency: 1, running: 1, queued: 1, paused: false },
        { name: 'gpu', concurrency: 2, running: 2, queued: 1, paused: false },
      ]);
      // A lower limit kills nothing; it starts nothing new until under it.
      scheduler.setGroup('gpu', 1);
      runner.end('g1');
      await settle();
      expect(runner.runningIds.sort()).toEqual(['d1', 'g2']);
      runner.end('g2');
      await settle();
      expect(runner.runningIds.sort()).toEqual(['d1', 'g3']);
      expect(scheduler.concurrency).toEqual({ limit: 2, running: 2 });
    });

    it('pausing a group holds its starts, running tasks go on, and resume starts them', async () => {
      const { scheduler, runner } = make({ concurrency: 2 });
      scheduler.setGroup('other', 1);
      scheduler.submit(spec(), 'running');
      await settle();
      expect(scheduler.setPaused(true)).toMatchObject([{ name: 'default', paused: true }, { name: 'other', paused: true }]);
      scheduler.submit(spec(), 'held');
      scheduler.submit(spec({ group: 'other' }), 'other-held');
      await settle();
      expect(runner.runningIds).toEqual(['running']);
      expect(scheduler.setPaused(false, 'other')).toMatchObject([{ name: 'other', paused: false, queued: 1 }]);
      await settle();
      expect(runner.runningIds.sort()).toEqual(['other-held', 'running']);
      expect(() => scheduler.setPaused(true, 'nope')).toThrow(expect.objectContaining({ code: 'UNKNOWN_GROUP' }));
      scheduler.setPaused(false);
      await settle();
      expect(runner.runningIds.sort()).toEqual(['held', 'other-held', 'running']);
    });

    it('restarts a failed task with a fresh budget, and with it the tasks canceled because it failed', async () => {
      const { scheduler, runner } = make();
      scheduler.submit(spec({ retries: 1, retry_delay_ms: 0 }), 'build');
      scheduler.submit(spec({ depends_on: ['build'] }), 'test');
      scheduler.submit(spec({ depends_on: ['test'] }), 'deploy');
      scheduler.submit(spec(), 'unrelated');
      await settle();
      expect(() => scheduler.restart(scheduler.get('build'))).toThrow(expect.objectContaining({ code: 'NOT_RESTARTABLE' }));
      runner.end('unrelated');
      for (let i = 0; i < 2; i++) {
        await settle();
        runner.end('build', failure());
      }
      await settle();
      expect(scheduler.get('deploy').record()).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
      expect(() => scheduler.restart(scheduler.get('test'))).toThrow(expect.objectContaining({ code: 'NOT_RESTARTABLE' }));
      const restarted = scheduler.restart(scheduler.get('build')).record();
      expect(restarted).toMatchObject({ state: 'QUEUED', attempts: 0, restarts: 1, exit_code: null, error: null, max_attempts: 2 });
      expect(restarted.finished_at).toBeUndefined();
      expect(scheduler.get('test').record()).toMatchObject({ state: 'PENDING', restarts: 1, error: null });
      expect(scheduler.get('deploy').record()).toMatchObject({ state: 'PENDING', restarts: 1 });
      expect(scheduler.get('unrelated').record()).toMatchObject({ state: 'COMPLETED', restarts: 0 });
      await settle();
      runner.end('build');
      await settle();
      runner.end('test');
      await settle();
      runner.end('deploy');
      await settle();
      expect(scheduler.get('deploy').state).toBe('COMPLETED');
      expect(runner.started.filter((id) => id === 'build')).toHaveLength(3);
    });

    it('removes a task: a finished one is forgotten, an unfinished one must be canceled first', async () => {
      const { scheduler, runner } = make();
      scheduler.submit(spec(), 'done');
      await settle();
      runner.end('done');
      await settle();
      scheduler.remove(scheduler.get('done'));
      expect(() => scheduler.get('done')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
      expect(scheduler.list({}).total).toBe(0);
      scheduler.submit(spec({ delay_ms: 60_000 }), 'waiting');
      expect(() => scheduler.remove(scheduler.get('waiting'))).toThrow(expect.objectContaining({ code: 'NOT_CANCELABLE' }));
      // The same id can be used again once forgotten.
      expect(scheduler.submit(spec({ priority: 3 }), 'done').duplicate).toBe(false);
    });

    it('edits a task not yet started: its command, priority, start time and group', async () => {
      const { scheduler, runner } = make({ concurrency: 1 });
      scheduler.setGroup('gpu', 1);
      scheduler.submit(spec(), 'busy');
      scheduler.submit(spec(), 'low');
      scheduler.submit(spec(), 'edited');
      scheduler.submit(spec({ delay_ms: 60_000 }), 'later');
      await settle();
      expect(() => scheduler.edit(scheduler.get('busy'), { id: 'busy', priority: 1 })).toThrow(expect.objectContaining({ code: 'NOT_EDITABLE' }));
      expect(() => scheduler.edit(scheduler.get('low'), { id: 'low', group: 'nope' })).toThrow(expect.objectContaining({ code: 'UNKNOWN_GROUP' }));
      expect(scheduler.edit(scheduler.get('edited'), { id: 'edited', cmd: 'echo new', priority: 5 }).record()).toMatchObject({ cmd: 'echo new', priority: 5, state: 'QUEUED' });
      expect(scheduler.edit(scheduler.get('later'), { id: 'later', start_at: Date.now() - 1, group: 'gpu' }).record()).toMatchObject({ group: 'gpu', state: 'QUEUED' });
      await settle();
      expect(runner.runningIds.sort()).toEqual(['busy', 'later']);
      runner.end('busy');
      await settle();
      expect(runner.runningIds.sort()).toEqual(['edited', 'later']);
      expect(scheduler.get('edited').spec.cmd).toBe('echo new');
      expect(scheduler.edit(scheduler.get('low'), { id: 'low', start_at: Date.now() + 60_000 }).state).toBe('PENDING');
    });

    it('lists newest first, paging on after an id in that order', () => {
      const { scheduler } = make();
      for (const id of ['a', 'b', 'c', 'd']) scheduler.submit(spec({ delay_ms: 60_000 }), id);
      const ids = (page: { tasks: { id: string }[] }) => page.tasks.map((task) => task.id);
      expect(ids(scheduler.list({ order: 'newest', limit: 2 }))).toEqual(['d', 'c']);
      expect(scheduler.list({ order: 'newest', after: 'c' })).toMatchObject({ total: 2 });
      expect(ids(scheduler.list({ order: 'newest', after: 'c' }))).toEqual(['b', 'a']);
    });

    it('lists the tasks of one group, and refuses a group that does not exist', () => {
      const { scheduler } = make();
      scheduler.setGroup('gpu', 1);
      for (const id of ['a', 'b', 'c', 'd']) scheduler.submit(spec({ delay_ms: 60_000, ...(id === 'b' || id === 'd' ? { group: 'gpu' } : {}) }), id);
      const ids = (page: { tasks: { id: string }[] }) => page.tasks.map((task) => task.id);
      expect(scheduler.list({ group: 'gpu', order: 'newest', limit: 1 })).toMatchObject({ total: 2 });
      expect(ids(scheduler.list({ group: 'gpu', order: 'newest', limit: 1 }))).toEqual(['d']);
      expect(ids(scheduler.list({ group: 'default', after: 'a' }))).toEqual(['c']);
      expect(() => scheduler.list({ group: 'nope' })).toThrow(expect.objectContaining({ code: 'UNKNOWN_GROUP' }));
    });

    it('restores groups, their limits and paused flags', async () => {
      const first = make();
      first.scheduler.setGroup('gpu', 3);
      first.scheduler.setPaused(true, 'default');
      first.scheduler.submit(spec(), 'held');
      const second = make();
      second.scheduler.restore(first.scheduler.snapshot().map((task) => structuredClone(task)), () => false, first.scheduler.groupSettings());
      await settle();
      expect(second.scheduler.groups()).toEqual([
        { name: 'default', concurrency: 2, running: 0, queued: 1, paused: true },
        { name: 'gpu', concurrency: 3, running: 0, queued: 0, paused: false },
      ]);
      expect(second.runner.started).toEqual([]);
    });
  });
}
