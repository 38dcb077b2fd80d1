import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryTaskStore, Scheduler } from '../src/scheduler/index.js';
import { describeStoreConformance, FakeRunner, failure, settle, spec, type StoreOptions } from './store-conformance.js';

const journal = { put: () => undefined, drop: () => undefined, putGroup: () => undefined, flushed: () => Promise.resolve() };

const embedded = ({ concurrency, keepFinished, maxQueue, maxSpecBytes, runAttempt }: StoreOptions) =>
  new Scheduler({ store: new MemoryTaskStore(journal), runAttempt, concurrency, keepFinished, keepOutputBytes: 1 << 30, maxQueue, maxSpecBytes });

describeStoreConformance('MemoryTaskStore', (options) => ({ scheduler: embedded(options) }));

/**
 * What only the embedded store has: synchronous dispatch that a fake clock
 * can drive, a bound on the bytes of specs, snapshot and restore through
 * the journal, and a `concurrency` that is the default group's limit (the
 * whole limit being the sum of the groups').
 */
describe('embedded store only', () => {
  const schedulers: Scheduler[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.stop(0)));
  });

  function make(options: Partial<Omit<StoreOptions, 'runAttempt'>> = {}) {
    const runner = new FakeRunner();
    const scheduler = embedded({ concurrency: 2, keepFinished: 100, maxQueue: 100, maxSpecBytes: 1 << 30, ...options, runAttempt: runner.run });
    schedulers.push(scheduler);
    return { scheduler, runner };
  }

  it('retries a failed attempt exactly when its back-off is over, on a fake clock', async () => {
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

  it('refuses a spec that does not fit beside the unfinished ones', () => {
    const { scheduler } = make({ maxQueue: 2, maxSpecBytes: 1000 });
    scheduler.submit(spec({ delay_ms: 60_000 }), 'a');
    expect(() => scheduler.submit(spec({ stdin: 'x'.repeat(2000) }), 'big')).toThrow(expect.objectContaining({ code: 'QUEUE_FULL' }));
  });

  it('takes concurrency as the default group limit, each other group running to its own beside it', async () => {
    const { scheduler, runner } = make({ concurrency: 1 });
    scheduler.setGroup('gpu', 2);
    for (const id of ['g1', 'g2', 'g3']) scheduler.submit(spec({ group: 'gpu' }), id);
    for (const id of ['d1', 'd2']) scheduler.submit(spec(), id);
    await settle();
    expect(runner.runningIds.sort()).toEqual(['d1', 'g1', 'g2']);
    expect(scheduler.concurrency).toEqual({ limit: 3, running: 3 });
    scheduler.setGroup('gpu', 1);
    runner.end('g1');
    await settle();
    expect(runner.runningIds.sort()).toEqual(['d1', 'g2']);
    expect(scheduler.concurrency).toEqual({ limit: 2, running: 2 });
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
