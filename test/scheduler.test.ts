import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskState } from '../src/protocol/index.js';
import { CMD, EventLog, removeDir, startDaemon, tempDir, type TestDaemon } from './helpers.js';

/**
 * The scheduler as seen through the wire: the concurrency limit, priorities,
 * pipelines (depends_on), retries with back-off and delayed start. Waiting is
 * done on the subscribe stream and the `wait` op, never on sleeps.
 */

const ms = (iso: string | undefined): number => {
  expect(iso, 'an ISO time that should be set').toEqual(expect.any(String));
  const time = Date.parse(iso!);
  expect(Number.isNaN(time)).toBe(false);
  return time;
};

describe('concurrency limit', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '3']);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
  });

  it('never runs more than --concurrency tasks at once, fills every slot, and completes the batch', async () => {
    const log = await EventLog.open(daemon);
    const client = await daemon.client();
    const current = new Map<string, TaskState>();
    let running = 0;
    let maxRunning = 0;
    log.client.on('task', (task) => {
      const before = current.get(task.id);
      if (before === 'RUNNING') running--;
      if (task.state === 'RUNNING') running++;
      current.set(task.id, task.state);
      maxRunning = Math.max(maxRunning, running);
    });

    // Poll `count` too, as a second witness (from the daemon's own counters).
    let maxCounted = 0;
    let polling = true;
    const poller = (async () => {
      const counter = await daemon.client();
      while (polling) {
        const { counts } = await counter.count();
        maxCounted = Math.max(maxCounted, counts.RUNNING);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      await counter.close();
    })();

    const started = Date.now();
    const submitted = await Promise.all(
      Array.from({ length: 30 }, (_, i) => client.submit({ id: `conc-${i}`, cmd: [CMD, '--sleep', '200'] })),
    );
    expect(submitted.map(({ task }) => task.id)).toEqual(Array.from({ length: 30 }, (_, i) => `conc-${i}`));
    const finished = await Promise.all(submitted.map(({ task }) => client.wait(task.id)));
    const elapsed = Date.now() - started;
    polling = false;
    await poller;

    expect(finished.map(({ task }) => task.state)).toEqual(Array(30).fill('COMPLETED'));
    expect(maxRunning).toBe(3);
    expect(maxCounted).toBeLessThanOrEqual(3);
    expect(maxCounted).toBeGreaterThan(0);
    // 30 tasks of 200 ms, 3 at a time: at least 10 rounds of 200 ms.
    expect(elapsed).toBeGreaterThanOrEqual(1800);
    expect(elapsed).toBeLessThan(15_000);

    // Third witness, from the records: no instant has more than 3 attempts between started_at and finished_at.
    const edges = finished.flatMap(({ task }) => [
      { at: ms(task.started_at), delta: +1 },
      { at: ms(task.finished_at), delta: -1 },
    ]);
    edges.sort((a, b) => a.at - b.at || a.delta - b.delta); // an end and a start at the same ms do not overlap
    let overlap = 0;
    let maxOverlap = 0;
    for (const edge of edges) {
      overlap += edge.delta;
      maxOverlap = Math.max(maxOverlap, overlap);
    }
    expect(maxOverlap).toBeLessThanOrEqual(3);

    const { counts, tasks } = await client.count();
    expect(counts.COMPLETED).toBe(30);
    expect(tasks).toBe(0);
    log.close();
    await client.close();
  });
});

describe('priorities', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '1']);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
  });

  it('fills a freed slot at once with the highest priority, first-in first-out within a priority', async () => {
    const log = await EventLog.open(daemon);
    const client = await daemon.client();
    await client.submit({ id: 'prio-blocker', cmd: [CMD, '--sleep', '60000'] });
    await log.state('prio-blocker', 'RUNNING');

    const order = [
      { id: 'prio-0', priority: 0 },
      { id: 'prio-5a', priority: 5 },
      { id: 'prio-5b', priority: 5 },
      { id: 'prio-1', priority: 1 },
      { id: 'prio-10', priority: 10 },
    ];
    for (const { id, priority } of order) {
      const { task } = await client.submit({ id, priority, cmd: [CMD, '--stdout', id] });
      expect(task).toMatchObject({ id, state: 'QUEUED', priority });
    }
    const blocker = await client.cancel('prio-blocker');
    expect(blocker.state).toBe('CANCELED');

    const done = await Promise.all(order.map(({ id }) => client.wait(id)));
    expect(done.map(({ task }) => task.state)).toEqual(Array(5).fill('COMPLETED'));
    // The events come on a connection of their own, and may arrive after the answers to wait.
    await Promise.all(order.map(({ id }) => log.state(id, 'COMPLETED')));

    const starts = log.events.filter((task) => task.state === 'RUNNING' && task.id !== 'prio-blocker').map((task) => task.id);
    expect(starts).toEqual(['prio-10', 'prio-5a', 'prio-5b', 'prio-1', 'prio-0']);
    const byId = new Map(done.map(({ task }) => [task.id, task]));
    const startedAt = starts.map((id) => ms(byId.get(id)!.started_at));
    expect([...startedAt].sort((a, b) => a - b)).toEqual(startedAt);
    // "at once": the slot is taken when the blocker ends, not after some poll interval.
    expect(startedAt[0]! - ms(blocker.finished_at)).toBeLessThan(1000);
    expect(startedAt[0]!).toBeGreaterThanOrEqual(ms(blocker.finished_at));
    log.close();
    await client.close();
  });
});

describe('dependencies, retries and delayed start', () => {
  let daemon: TestDaemon;
  let files: string;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '8']);
    files = tempDir('tm-sched-');
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
    removeDir(files);
  });

  it('runs a 3-step pipeline in order', async () => {
    const client = await daemon.client();
    // pipe-a runs long enough for pipe-b to be submitted while it runs (PENDING), on a loaded machine too.
    const a = await client.submit({ id: 'pipe-a', cmd: [CMD, '--sleep', '1000', '--stdout', 'a'] });
    const b = await client.submit({ id: 'pipe-b', cmd: [CMD, '--sleep', '150', '--stdout', 'b'], depends_on: ['pipe-a'] });
    const c = await client.submit({ id: 'pipe-c', cmd: [CMD, '--stdout', 'c'], depends_on: ['pipe-b'] });
    expect(a.task.state).toBe('QUEUED');
    expect(b.task).toMatchObject({ state: 'PENDING', depends_on: ['pipe-a'] });
    expect(c.task).toMatchObject({ state: 'PENDING', depends_on: ['pipe-b'] });

    const last = (await client.wait('pipe-c')).task;
    const first = await client.status('pipe-a');
    const middle = await client.status('pipe-b');
    expect([first, middle, last].map((task) => [task.state, task.stdout])).toEqual([
      ['COMPLETED', 'a'],
      ['COMPLETED', 'b'],
      ['COMPLETED', 'c'],
    ]);
    expect(ms(middle.started_at)).toBeGreaterThanOrEqual(ms(first.finished_at));
    expect(ms(last.started_at)).toBeGreaterThanOrEqual(ms(middle.finished_at));
    await client.close();
  });

  it('starts a task with several dependencies only when all of them have completed', async () => {
    const client = await daemon.client();
    await client.submit({ id: 'fan-fast', cmd: [CMD, '--sleep', '50'] });
    await client.submit({ id: 'fan-slow', cmd: [CMD, '--sleep', '600'] });
    await client.submit({ id: 'fan-in', cmd: [CMD], depends_on: ['fan-fast', 'fan-slow'] });
    const joined = (await client.wait('fan-in')).task;
    const slow = await client.status('fan-slow');
    expect(joined.state).toBe('COMPLETED');
    expect(ms(joined.started_at)).toBeGreaterThanOrEqual(ms(slow.finished_at));
    await client.close();
  });

  it('rejects a dependency on an unknown id with UNKNOWN_DEPENDENCY and creates nothing', async () => {
    const raw = await daemon.raw();
    raw.send(`${JSON.stringify({ op: 'submit', ref: 'u1', id: 'dep-on-ghost', cmd: [CMD], depends_on: ['no-such-task'] })}\n`);
    const response = await raw.next();
    expect(response).toMatchObject({ ok: false, ref: 'u1', error: { code: 'UNKNOWN_DEPENDENCY' } });
    expect(response.error.message).toContain('no-such-task');
    raw.send(`${JSON.stringify({ op: 'status', ref: 'u2', id: 'dep-on-ghost' })}\n`);
    expect(await raw.next()).toMatchObject({ ok: false, ref: 'u2', error: { code: 'NOT_FOUND' } });
    raw.close();
  });

  it('cancels the whole chain, transitively, when a dependency fails', async () => {
    const client = await daemon.client();
    await client.submit({ id: 'fail-a', cmd: [CMD, '--sleep', '100', '--exit', '1'] });
    await client.submit({ id: 'fail-b', cmd: [CMD], depends_on: ['fail-a'] });
    await client.submit({ id: 'fail-c', cmd: [CMD], depends_on: ['fail-b'] });
    const c = (await client.wait('fail-c')).task;
    const b = await client.status('fail-b');
    const a = await client.status('fail-a');
    expect(a).toMatchObject({ state: 'FAILED', exit_code: 1 });
    for (const task of [b, c]) {
      expect(task).toMatchObject({ state: 'CANCELED', attempts: 0, error: { code: 'DEPENDENCY_FAILED' } });
      expect(task.started_at).toBeUndefined();
    }
    // A task submitted on top of an already failed dependency is canceled at once.
    const late = await client.submit({ id: 'fail-late', cmd: [CMD], depends_on: ['fail-c'] });
    expect(late.task).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    await client.close();
  });

  it('cancels the dependents of a pending parent that is canceled', async () => {
    const client = await daemon.client();
    await client.submit({ id: 'cp-a', cmd: [CMD], delay_ms: 60_000 });
    await client.submit({ id: 'cp-b', cmd: [CMD], depends_on: ['cp-a'] });
    await client.submit({ id: 'cp-c', cmd: [CMD], depends_on: ['cp-b'] });
    expect((await client.status('cp-c')).state).toBe('PENDING');
    const parent = await client.cancel('cp-a');
    expect(parent).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });
    for (const id of ['cp-b', 'cp-c']) {
      const { task, waited_out } = await client.wait(id, 5000);
      expect(waited_out).toBeUndefined();
      expect(task).toMatchObject({ state: 'CANCELED', attempts: 0, error: { code: 'DEPENDENCY_FAILED' } });
    }
    await client.close();
  });

  it('keeps dependents waiting while their dependency is being retried, and runs them once it succeeds', async () => {
    const log = await EventLog.open(daemon, ['retry-parent', 'retry-child']);
    const client = await daemon.client();
    const counter = join(files, 'retry-parent.count');
    const record = join(files, 'retry-child.record');
    await client.submit({
      id: 'retry-parent',
      cmd: [CMD, '--fail-until', '3', '--counter', counter],
      retries: 4,
      retry_delay_ms: 200,
    });
    await client.submit({ id: 'retry-child', cmd: [CMD, '--record', record], depends_on: ['retry-parent'] });

    // During the back-off after the first failed attempt, the child is still PENDING.
    const backingOff = await log.next((t) => t.id === 'retry-parent' && t.state === 'PENDING' && t.attempts === 1, 'retry-parent backing off');
    expect(backingOff.run_at).toEqual(expect.any(String));
    expect((await client.status('retry-child')).state).toBe('PENDING');

    const child = (await client.wait('retry-child')).task;
    const parent = await client.status('retry-parent');
    expect(parent).toMatchObject({ state: 'COMPLETED', attempts: 3 });
    expect(child.state).toBe('COMPLETED');
    expect(ms(child.started_at)).toBeGreaterThanOrEqual(ms(parent.finished_at));
    // Every child event before the parent completed says PENDING.
    const parentDone = log.events.findIndex((t) => t.id === 'retry-parent' && t.state === 'COMPLETED');
    const childBefore = log.events.slice(0, parentDone).filter((t) => t.id === 'retry-child');
    expect(childBefore.map((t) => t.state)).toEqual(childBefore.map(() => 'PENDING'));
    expect(readFileSync(record, 'utf8').trim().split('\n').filter((line) => JSON.parse(line).event === 'start')).toHaveLength(1);
    log.close();
    await client.close();
  });

  it('cancels the dependents of a running parent that is canceled', async () => {
    const client = await daemon.client();
    const log = await EventLog.open(daemon, ['crun-a']);
    await client.submit({ id: 'crun-a', cmd: [CMD, '--sleep', '30000'] });
    await client.submit({ id: 'crun-b', cmd: [CMD], depends_on: ['crun-a'] });
    await log.state('crun-a', 'RUNNING');
    expect((await client.cancel('crun-a')).state).toBe('CANCELED');
    expect((await client.wait('crun-b', 5000)).task).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    log.close();
    await client.close();
  });

  it('gives a task that became ready through its dependency its place by priority', async () => {
    const one = await startDaemon(['--concurrency', '1']);
    try {
      const client = await one.client();
      const log = await EventLog.open(one);
      await client.submit({ id: 'gate', cmd: [CMD, '--sleep', '60000'] });
      await log.state('gate', 'RUNNING');
      await client.submit({ id: 'low', cmd: [CMD], priority: 1 });
      await client.submit({ id: 'parent', cmd: [CMD], priority: 5 });
      await client.submit({ id: 'high', cmd: [CMD], priority: 9, depends_on: ['parent'] });
      await client.cancel('gate');
      await client.wait('low');
      await client.wait('high');
      await Promise.all(['parent', 'high', 'low'].map((id) => log.state(id, 'COMPLETED'))); // events come on their own connection
      const starts = log.events.filter((t) => t.state === 'RUNNING' && t.id !== 'gate').map((t) => t.id);
      // parent (5) before low (1); then high (9), ready once parent completed, before low if low is still queued.
      expect(starts).toEqual(['parent', 'high', 'low']);
      log.close();
      await client.close();
    } finally {
      await one.stop();
      removeDir(one.dataDir);
    }
  });

  it('retries attempts that time out or cannot start', async () => {
    const client = await daemon.client();
    const [timedOut, unstartable] = await Promise.all([
      client.run({ cmd: [CMD, '--sleep', '30000'], timeout_ms: 150, retries: 1, retry_delay_ms: 50 }),
      client.run({ cmd: ['/nonexistent/program-for-task-manager-tests'], retries: 2, retry_delay_ms: 50 }),
    ]);
    expect(timedOut.task).toMatchObject({ state: 'FAILED', attempts: 2, max_attempts: 2, exit_code: -1, timed_out: true, error: { code: 'TIMEOUT' } });
    expect(unstartable.task).toMatchObject({ state: 'FAILED', attempts: 3, max_attempts: 3, error: { code: 'SPAWN_FAILED' } });
    await client.close();
  });

  it('retries a failing task until it succeeds', async () => {
    const client = await daemon.client();
    const counter = join(files, 'retry-ok.count');
    const { task } = await client.run({ cmd: [CMD, '--fail-until', '3', '--counter', counter, '--stdout', 'finally'], retries: 5, retry_delay_ms: 100 });
    expect(task).toMatchObject({ state: 'COMPLETED', attempts: 3, max_attempts: 6, exit_code: 0, stdout: 'finally', error: null });
    expect(readFileSync(counter, 'utf8')).toBe('3');
    await client.close();
  });

  it('ends FAILED after the last retry, with the last attempt\'s exit code and output', async () => {
    const client = await daemon.client();
    const counter = join(files, 'retry-fail.count');
    const { task } = await client.run({ cmd: [CMD, '--fail-until', '5', '--counter', counter], retries: 1, retry_delay_ms: 100 });
    expect(task).toMatchObject({ state: 'FAILED', attempts: 2, max_attempts: 2, exit_code: 1, error: { code: 'NONZERO_EXIT' } });
    expect(task.stderr).toBe('run 2 of 5: failing on purpose\n');
    expect(readFileSync(counter, 'utf8')).toBe('2');
    await client.close();
  });

  it('doubles the delay between retries', async () => {
    const client = await daemon.client();
    const record = join(files, 'backoff.record');
    const submitted = Date.now();
    const { task } = await client.run({ cmd: [CMD, '--record', record, '--exit', '1'], retries: 2, retry_delay_ms: 300 });
    const total = Date.now() - submitted;
    expect(task).toMatchObject({ state: 'FAILED', attempts: 3, max_attempts: 3 });
    // 300 ms, then 600 ms of back-off.
    expect(total).toBeGreaterThanOrEqual(880);
    expect(ms(task.finished_at) - ms(task.created_at)).toBeGreaterThanOrEqual(880);
    const lines = readFileSync(record, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { event: string; at: number; attempt: string });
    expect(lines.map((line) => `${line.event}:${line.attempt}`)).toEqual(['start:1', 'end:1', 'start:2', 'end:2', 'start:3', 'end:3']);
    const firstGap = lines[2]!.at - lines[1]!.at;
    const secondGap = lines[4]!.at - lines[3]!.at;
    expect(firstGap).toBeGreaterThanOrEqual(290);
    expect(secondGap).toBeGreaterThanOrEqual(590);
    await client.close();
  });

  it('holds a task with delay_ms PENDING (with run_at) until its time', async () => {
    const client = await daemon.client();
    const { task } = await client.submit({ id: 'delayed', cmd: [CMD], delay_ms: 800 });
    expect(task.state).toBe('PENDING');
    const runAt = ms(task.run_at);
    expect(runAt - ms(task.created_at)).toBeGreaterThanOrEqual(790);
    expect(runAt - ms(task.created_at)).toBeLessThanOrEqual(1000);
    const done = (await client.wait('delayed')).task;
    expect(done.state).toBe('COMPLETED');
    expect(ms(done.started_at) - ms(done.created_at)).toBeGreaterThanOrEqual(790);
    await client.close();
  });

  it('lets a delayed task wait out a wait timeout as PENDING', async () => {
    const client = await daemon.client();
    await client.submit({ id: 'delayed-long', cmd: [CMD], delay_ms: 60_000 });
    const waited = await client.wait('delayed-long', 100);
    expect(waited).toMatchObject({ waited_out: true, task: { id: 'delayed-long', state: 'PENDING', attempts: 0 } });
    expect((await client.cancel('delayed-long')).state).toBe('CANCELED');
    await client.close();
  });

  it('holds a task until start_at, given as an ISO string or as epoch milliseconds', async () => {
    const client = await daemon.client();
    const isoAt = Date.now() + 700;
    const epochAt = Date.now() + 900;
    const iso = await client.submit({ id: 'start-iso', cmd: [CMD], start_at: new Date(isoAt).toISOString() });
    const epoch = await client.submit({ id: 'start-epoch', cmd: [CMD], start_at: epochAt });
    expect(iso.task.state).toBe('PENDING');
    expect(epoch.task.state).toBe('PENDING');
    expect(ms(iso.task.run_at)).toBe(isoAt);
    expect(ms(epoch.task.run_at)).toBe(epochAt);
    const [isoDone, epochDone] = await Promise.all([client.wait('start-iso'), client.wait('start-epoch')]);
    expect(isoDone.task.state).toBe('COMPLETED');
    expect(epochDone.task.state).toBe('COMPLETED');
    expect(ms(isoDone.task.started_at)).toBeGreaterThanOrEqual(isoAt);
    expect(ms(epochDone.task.started_at)).toBeGreaterThanOrEqual(epochAt);

    // A start time in the past does not hold the task.
    const past = await client.submit({ id: 'start-past', cmd: [CMD], start_at: Date.now() - 60_000 });
    expect(past.task.state).not.toBe('PENDING');
    expect((await client.wait('start-past')).task.state).toBe('COMPLETED');
    await client.close();
  });
});
