import { existsSync, readFileSync, readdirSync, realpathSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskManagerError, type TaskManagerClient } from '../src/index.js';
import type { TaskState } from '../src/protocol/index.js';
import { CMD, untilExists, EventLog, eventually, isAlive, isGone, readPid, removeDir, startDaemon, tempDir, type TestDaemon } from './helpers.js';

/**
 * The query and control ops around the scheduler: cancel, wait, list, count,
 * idempotent ids, script payloads, stats and subscribe. Waiting is done on
 * the subscribe stream and the `wait` op; only effects outside any event
 * (a process dying, a file appearing) are polled.
 */

const STATES: TaskState[] = ['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'];

/** Starts recorded in `file`; a line still being written (no newline yet) is not read. */
const recordedStarts = (file: string): number =>
  existsSync(file)
    ? readFileSync(file, 'utf8').split('\n').slice(0, -1).filter((line) => JSON.parse(line).event === 'start').length
    : 0;

/** The error code a rejected client call carries. */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(TaskManagerError);
    return (error as TaskManagerError).code;
  }
  throw new Error('the request succeeded, an error was expected');
}

describe('cancel and wait', () => {
  let daemon: TestDaemon;
  let files: string;
  let log: EventLog;
  let client: TaskManagerClient;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '1', '--kill-grace-ms', '500']);
    files = tempDir('tm-ops-');
    log = await EventLog.open(daemon);
    client = await daemon.client();
  });
  afterAll(async () => {
    log.close();
    await client.close();
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
    removeDir(files);
  });

  it('cancels a QUEUED task, which then never starts', async () => {
    const record = join(files, 'queued.record');
    await client.submit({ id: 'cq-blocker', cmd: [CMD, '--sleep', '60000'] });
    await log.state('cq-blocker', 'RUNNING');
    const { task: queued } = await client.submit({ id: 'cq-victim', cmd: [CMD, '--record', record] });
    expect(queued.state).toBe('QUEUED');

    const canceled = await client.cancel('cq-victim');
    expect(canceled).toMatchObject({ id: 'cq-victim', state: 'CANCELED', attempts: 0, error: { code: 'CANCELED' } });
    expect(canceled.started_at).toBeUndefined();
    expect(canceled.finished_at).toEqual(expect.any(String));

    // Free the slot and push another task through it: the canceled one must not have taken it.
    await client.cancel('cq-blocker');
    const { task: after } = await client.run({ id: 'cq-after', cmd: [CMD] });
    expect(after.state).toBe('COMPLETED');
    expect(recordedStarts(record)).toBe(0);
    expect(await client.status('cq-victim')).toMatchObject({ state: 'CANCELED', attempts: 0 });
    expect(log.statesOf('cq-victim')).toEqual(['QUEUED', 'CANCELED']);
  });

  it('cancels a RUNNING task by killing its whole process group', async () => {
    const mainPidFile = join(files, 'main.pid');
    const grandchildPidFile = join(files, 'grandchild.pid');
    await client.submit({ id: 'cr-tree', cmd: [CMD, '--pid-file', mainPidFile, '--grandchild', grandchildPidFile, '--sleep', '30000'] });
    await log.state('cr-tree', 'RUNNING');
    const mainPid = await eventually(() => readPid(mainPidFile));
    const grandchildPid = await eventually(() => readPid(grandchildPidFile));
    expect(isAlive(mainPid)).toBe(true);
    expect(isAlive(grandchildPid)).toBe(true);

    const asked = Date.now();
    const canceled = await client.cancel('cr-tree');
    expect(Date.now() - asked).toBeLessThan(10_000);
    expect(canceled).toMatchObject({ id: 'cr-tree', state: 'CANCELED', attempts: 1, error: { code: 'CANCELED' } });
    expect(canceled.finished_at).toEqual(expect.any(String));
    await eventually(() => isGone(mainPid), 5000);
    await eventually(() => isGone(grandchildPid), 5000);
  });

  it('cancels a RUNNING task that ignores SIGTERM (SIGKILL after the grace period)', async () => {
    const pidFile = join(files, 'stubborn.pid');
    await client.submit({ id: 'cr-stubborn', cmd: [CMD, '--pid-file', pidFile, '--ignore-term', '--sleep', '30000'] });
    await log.state('cr-stubborn', 'RUNNING');
    const pid = await eventually(() => readPid(pidFile));
    const canceled = await client.cancel('cr-stubborn');
    expect(canceled.state).toBe('CANCELED');
    await eventually(() => isGone(pid), 5000);
  });

  it('does not retry a task canceled while running', async () => {
    const record = join(files, 'retry-cancel.record');
    await client.submit({ id: 'cr-retry', cmd: [CMD, '--record', record, '--sleep', '30000'], retries: 3, retry_delay_ms: 0 });
    await log.state('cr-retry', 'RUNNING');
    await eventually(() => recordedStarts(record) === 1);
    const canceled = await client.cancel('cr-retry');
    expect(canceled).toMatchObject({ state: 'CANCELED', attempts: 1 });
    // With concurrency 1, a retry (priority 0, submitted earlier) would run before this task.
    expect((await client.run({ cmd: [CMD] })).task.state).toBe('COMPLETED');
    expect(recordedStarts(record)).toBe(1);
    expect(await client.status('cr-retry')).toMatchObject({ state: 'CANCELED', attempts: 1 });
  });

  it('cancels a task waiting out its retry back-off', async () => {
    await client.submit({ id: 'cr-backoff', cmd: [CMD, '--exit', '1'], retries: 3, retry_delay_ms: 60_000 });
    const backingOff = await log.next((t) => t.id === 'cr-backoff' && t.state === 'PENDING' && t.attempts === 1, 'cr-backoff backing off');
    expect(backingOff.run_at).toEqual(expect.any(String));
    const canceled = await client.cancel('cr-backoff');
    expect(canceled).toMatchObject({ state: 'CANCELED', attempts: 1, error: { code: 'CANCELED' } });
  });

  it('answers NOT_CANCELABLE for a finished task and NOT_FOUND for an unknown id, and the connection stays usable', async () => {
    await client.run({ id: 'cf-done', cmd: [CMD] });
    const raw = await daemon.raw();
    raw.send(`${JSON.stringify({ op: 'cancel', ref: 1, id: 'cf-done' })}\n`);
    expect(await raw.next()).toMatchObject({ ok: false, ref: 1, error: { code: 'NOT_CANCELABLE' } });
    raw.send(`${JSON.stringify({ op: 'cancel', ref: 2, id: 'no-such-task' })}\n`);
    expect(await raw.next()).toMatchObject({ ok: false, ref: 2, error: { code: 'NOT_FOUND' } });
    raw.send(`${JSON.stringify({ op: 'status', ref: 3, id: 'cf-done' })}\n`);
    expect(await raw.next()).toMatchObject({ ok: true, ref: 3, task: { id: 'cf-done', state: 'COMPLETED' } });
    raw.close();
    expect((await client.status('cf-done')).state).toBe('COMPLETED');
  });

  it('wait returns once the task is terminal', async () => {
    const { task } = await client.submit({ id: 'w-run', cmd: [CMD, '--sleep', '300', '--stdout', 'waited'] });
    expect(task.state).not.toMatch(/COMPLETED|FAILED|CANCELED/);
    const waited = await client.wait('w-run');
    expect(waited.waited_out).toBeUndefined();
    expect(waited.task).toMatchObject({ id: 'w-run', state: 'COMPLETED', stdout: 'waited', exit_code: 0 });
    // On a terminal task, wait answers at once.
    expect((await client.wait('w-run', 0)).task.state).toBe('COMPLETED');
  });

  it('wait with timeout_ms answers ok with waited_out and the current task', async () => {
    await client.submit({ id: 'w-long', cmd: [CMD, '--sleep', '30000'] });
    await log.state('w-long', 'RUNNING');
    const raw = await daemon.raw();
    const asked = Date.now();
    raw.send(`${JSON.stringify({ op: 'wait', ref: 'w', id: 'w-long', timeout_ms: 200 })}\n`);
    const response = await raw.next();
    const elapsed = Date.now() - asked;
    expect(response).toMatchObject({ ok: true, ref: 'w', op: 'wait', waited_out: true, task: { id: 'w-long', state: 'RUNNING' } });
    expect(elapsed).toBeGreaterThanOrEqual(180);
    expect(elapsed).toBeLessThan(5000);
    raw.send(`${JSON.stringify({ op: 'wait', ref: 'x', id: 'no-such-task', timeout_ms: 200 })}\n`);
    expect(await raw.next()).toMatchObject({ ok: false, ref: 'x', error: { code: 'NOT_FOUND' } });
    raw.close();
    expect((await client.cancel('w-long')).state).toBe('CANCELED');
  });
});

describe('list, count and stats', () => {
  let daemon: TestDaemon;
  let client: TaskManagerClient;
  let log: EventLog;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '2']);
    client = await daemon.client();
    log = await EventLog.open(daemon);
    // A fresh daemon holding: 5 COMPLETED, 1 FAILED, 2 PENDING, 1 RUNNING.
    for (let i = 1; i <= 5; i++) await client.run({ id: `l-ok-${i}`, cmd: [CMD, '--stdout', `out ${i}`, '--stderr', 'err'] });
    await client.run({ id: 'l-bad', cmd: [CMD, '--stdout', 'partial', '--exit', '2'] });
    await client.submit({ id: 'l-later-1', cmd: [CMD], delay_ms: 600_000 });
    await client.submit({ id: 'l-later-2', cmd: [CMD], delay_ms: 600_000 });
    await client.submit({ id: 'l-run', cmd: [CMD, '--sleep', '60000'] });
    await log.state('l-run', 'RUNNING');
  });
  afterAll(async () => {
    log.close();
    await client.close();
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
  });

  const allIds = ['l-ok-1', 'l-ok-2', 'l-ok-3', 'l-ok-4', 'l-ok-5', 'l-bad', 'l-later-1', 'l-later-2', 'l-run'];

  it('lists records without stdout/stderr, with a total', async () => {
    const { tasks, total } = await client.list();
    expect(total).toBe(9);
    expect(tasks.map((task) => task.id).sort()).toEqual([...allIds].sort());
    for (const task of tasks) {
      expect(task).not.toHaveProperty('stdout');
      expect(task).not.toHaveProperty('stderr');
      expect(STATES).toContain(task.state);
      expect(task.created_at).toEqual(expect.any(String));
    }
    expect(tasks.find((task) => task.id === 'l-bad')).toMatchObject({ state: 'FAILED', exit_code: 2 });
  });

  it('filters by state', async () => {
    const expected: Record<TaskState, string[]> = {
      COMPLETED: ['l-ok-1', 'l-ok-2', 'l-ok-3', 'l-ok-4', 'l-ok-5'],
      FAILED: ['l-bad'],
      PENDING: ['l-later-1', 'l-later-2'],
      RUNNING: ['l-run'],
      QUEUED: [],
      CANCELED: [],
    };
    for (const state of STATES) {
      const { tasks, total } = await client.list({ state });
      expect(tasks.map((task) => task.id).sort(), state).toEqual(expected[state]);
      expect(total, state).toBe(expected[state].length);
      expect(tasks.every((task) => task.state === state)).toBe(true);
    }
  });

  it('pages with limit and after', async () => {
    const everything = (await client.list()).tasks.map((task) => task.id);
    const paged: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 20; page++) {
      const { tasks, total } = await client.list(after === undefined ? { limit: 2 } : { limit: 2, after });
      if (page === 0) expect(total).toBe(9);
      expect(tasks.length).toBeLessThanOrEqual(2);
      if (tasks.length === 0) break;
      paged.push(...tasks.map((task) => task.id));
      after = tasks.at(-1)!.id;
    }
    expect(paged).toEqual(everything);

    const completed: string[] = [];
    after = undefined;
    const sizes: number[] = [];
    for (let page = 0; page < 20; page++) {
      const { tasks, total } = await client.list(after === undefined ? { state: 'COMPLETED', limit: 2 } : { state: 'COMPLETED', limit: 2, after });
      if (page === 0) expect(total).toBe(5);
      if (tasks.length === 0) break;
      sizes.push(tasks.length);
      completed.push(...tasks.map((task) => task.id));
      after = tasks.at(-1)!.id;
    }
    expect(sizes).toEqual([2, 2, 1]);
    expect([...completed].sort()).toEqual(['l-ok-1', 'l-ok-2', 'l-ok-3', 'l-ok-4', 'l-ok-5']);
  });

  it('counts by state, and tasks = the number not terminal', async () => {
    const { counts, tasks } = await client.count();
    expect(counts).toEqual({ PENDING: 2, QUEUED: 0, RUNNING: 1, COMPLETED: 5, FAILED: 1, CANCELED: 0 });
    expect(tasks).toBe(3);
  });

  it('reports stats with sane values', async () => {
    const first = await client.stats();
    expect(first.cpu.cores).toBe(cpus().length);
    expect(first.cpu.load_avg).toHaveLength(3);
    for (const load of first.cpu.load_avg) expect(load).toBeGreaterThanOrEqual(0);
    expect(first.cpu.use_percent).toBeGreaterThanOrEqual(0);
    expect(first.cpu.use_percent).toBeLessThanOrEqual(100);

    expect(first.memory.total_bytes).toBe(totalmem());
    expect(first.memory.free_bytes).toBeGreaterThan(0);
    expect(first.memory.free_bytes).toBeLessThanOrEqual(first.memory.total_bytes);
    expect(first.memory.daemon_rss_bytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(first.memory.daemon_rss_bytes).toBeLessThan(first.memory.total_bytes);

    const fs = statfsSync(daemon.dataDir);
    expect(first.disk.total_bytes).toBe(fs.blocks * fs.bsize);
    expect(first.disk.free_bytes).toBeGreaterThan(0);
    expect(first.disk.free_bytes).toBeLessThanOrEqual(first.disk.total_bytes);

    expect(first.counts).toEqual({ PENDING: 2, QUEUED: 0, RUNNING: 1, COMPLETED: 5, FAILED: 1, CANCELED: 0 });
    expect(first.concurrency).toEqual({ limit: 2, running: 1 });
    expect(first.uptime_ms).toBeGreaterThan(0);
    const health = await client.health();
    expect(health.uptime_ms).toBeGreaterThanOrEqual(first.uptime_ms);
    expect(health.uptime_ms - first.uptime_ms).toBeLessThan(5000);
  });

  it('counts cancellations, and list defaults to 100 records', async () => {
    await client.cancel('l-later-1');
    await client.cancel('l-run');
    const { counts, tasks } = await client.count();
    expect(counts).toEqual({ PENDING: 1, QUEUED: 0, RUNNING: 0, COMPLETED: 5, FAILED: 1, CANCELED: 2 });
    expect(tasks).toBe(1);
    expect((await client.stats()).concurrency).toEqual({ limit: 2, running: 0 });

    await Promise.all(Array.from({ length: 100 }, (_, i) => client.submit({ id: `l-many-${i}`, cmd: 'true', delay_ms: 600_000 })));
    const listed = await client.list();
    expect(listed.tasks).toHaveLength(100);
    expect(listed.total).toBe(109);
    expect((await client.list({ state: 'PENDING', limit: 1000 })).total).toBe(101);
    expect((await client.count()).tasks).toBe(101);
  });
});

describe('idempotent ids, scripts and subscribe', () => {
  let daemon: TestDaemon;
  let files: string;
  let client: TaskManagerClient;
  beforeAll(async () => {
    daemon = await startDaemon(['--concurrency', '6']);
    files = tempDir('tm-ops-');
    client = await daemon.client();
  });
  afterAll(async () => {
    await client.close();
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
    removeDir(files);
  });

  it('runs a task once however often the same id and spec are submitted', async () => {
    const record = join(files, 'idem.record');
    const spec = { id: 'idem-1', cmd: [CMD, '--record', record, '--sleep', '300'], priority: 3 };
    const first = await client.submit(spec);
    expect(first.duplicate).toBeUndefined();
    const again = await client.submit(spec);
    expect(again.duplicate).toBe(true);
    expect(again.task).toMatchObject({ id: 'idem-1', created_at: first.task.created_at });

    // Two copies in one read, on a raw connection.
    const raw = await daemon.raw();
    const line = (ref: number) => JSON.stringify({ op: 'submit', ref, ...spec });
    raw.send(`${line(1)}\n${line(2)}\n`);
    const answers = await raw.take(2);
    for (const answer of answers) expect(answer).toMatchObject({ ok: true, duplicate: true, task: { id: 'idem-1' } });
    raw.close();

    const done = (await client.wait('idem-1')).task;
    expect(done.state).toBe('COMPLETED');
    const late = await client.submit(spec);
    expect(late).toMatchObject({ duplicate: true, task: { id: 'idem-1', state: 'COMPLETED', attempts: 1 } });
    const rerun = await client.run(spec);
    expect(rerun).toMatchObject({ duplicate: true, task: { id: 'idem-1', state: 'COMPLETED', attempts: 1 } });
    expect(recordedStarts(record)).toBe(1);
  });

  it('answers ID_CONFLICT for the same id with a different spec, and keeps the original', async () => {
    const { task } = await client.submit({ id: 'idem-2', cmd: [CMD, '--stdout', 'original'] });
    expect(await codeOf(client.submit({ id: 'idem-2', cmd: [CMD, '--stdout', 'other'] }))).toBe('ID_CONFLICT');
    expect(await codeOf(client.submit({ id: 'idem-2', cmd: [CMD, '--stdout', 'original'], priority: 1 }))).toBe('ID_CONFLICT');
    expect(await codeOf(client.run({ id: 'idem-2', cmd: [CMD, '--stdout', 'original'], retries: 2 }))).toBe('ID_CONFLICT');
    const done = (await client.wait('idem-2')).task;
    expect(done).toMatchObject({ state: 'COMPLETED', stdout: 'original', created_at: task.created_at, max_attempts: 1, priority: 0 });
  });

  it('runs script payloads in every language, with args, and removes the script file afterwards', async () => {
    const scriptsDir = join(realpathSync(daemon.dataDir), 'scripts');
    const shell = `printf '%s|%s|' "$LANG_NAME" "$0"; printf '[%s]' "$@"; echo`;
    const scripts = {
      sh: { lang: 'sh', source: shell.replace('$LANG_NAME', 'sh') },
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, for bash to read
      bash: { lang: 'bash', source: shell.replace('"$LANG_NAME"', '"bash${BASH_VERSION:+!}"') },
      python: { lang: 'python', source: 'import sys\nprint("python|%s|%s" % (sys.argv[0], "".join("[%s]" % a for a in sys.argv[1:])))\n' },
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a template literal in the script, for node to read
      node: { lang: 'node', source: 'console.log(`node|${process.argv[1]}|${process.argv.slice(2).map((a) => `[${a}]`).join("")}`)' },
      bin: { lang: 'bin', source_b64: Buffer.from(`#!/bin/sh\n${shell.replace('$LANG_NAME', 'bin')}\n`).toString('base64') },
    } as const;
    const results = await Promise.all(
      Object.entries(scripts).map(async ([lang, script]) => [lang, (await client.run({ script, args: ['one', 'two words'] })).task] as const),
    );
    for (const [lang, task] of results) {
      expect(task, lang).toMatchObject({ state: 'COMPLETED', exit_code: 0, cmd: null, script: { lang }, args: ['one', 'two words'] });
      const [printedLang, path, args] = task.stdout!.trimEnd().split('|');
      expect(printedLang).toBe(lang === 'bash' ? 'bash!' : lang);
      expect(args).toBe('[one][two words]');
      expect(realpathSync(dirname(path!)), `${lang} script written under the data dir`).toBe(scriptsDir);
      expect(existsSync(path!), `${lang} script file removed`).toBe(false);
    }
    expect(readdirSync(scriptsDir)).toEqual([]);
  });

  it('removes the script file of a canceled script too', async () => {
    const scriptsDir = join(realpathSync(daemon.dataDir), 'scripts');
    const log = await EventLog.open(daemon, ['script-cancel']);
    const started = join(files, 'script-cancel-started');
    // The marker says the script has printed its path: a cancel before that would find no output.
    await client.submit({ id: 'script-cancel', script: { lang: 'sh', source: `echo "$0"; touch ${started}; exec sleep 30` } });
    await log.state('script-cancel', 'RUNNING');
    await eventually(() => existsSync(started));
    const file = await eventually(() => readdirSync(scriptsDir)[0]);
    const canceled = await client.cancel('script-cancel');
    expect(canceled.state).toBe('CANCELED');
    expect(basename(canceled.stdout!.trim())).toBe(file);
    await eventually(() => !existsSync(join(scriptsDir, file)), 5000);
    log.close();
  });

  it('subscribe with ids delivers only those ids, as records without output', async () => {
    const only = await EventLog.open(daemon, ['sub-1']);
    const everyone = await EventLog.open(daemon);
    // sub-2 is held until sub-1 is in: sub-1 waits for it (PENDING) whatever the machine's speed.
    const gate = join(tempDir('tm-gate-'), 'open');
    await client.submit({ id: 'sub-2', cmd: `${untilExists(gate)}; printf two` });
    await client.submit({ id: 'sub-1', cmd: [CMD, '--stdout', 'one'], depends_on: ['sub-2'] });
    writeFileSync(gate, '');
    // sub-1 starts only after sub-2 completed, so on this connection any sub-2 event would have come first.
    const done = await only.state('sub-1', 'COMPLETED');
    await everyone.state('sub-1', 'COMPLETED');
    expect(done).toMatchObject({ exit_code: 0, attempts: 1 });
    expect(done.finished_at).toEqual(expect.any(String));
    expect(only.events.map((task) => task.id)).toEqual(only.events.map(() => 'sub-1'));
    expect(only.statesOf('sub-1')).toEqual(['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED']);
    expect(everyone.statesOf('sub-2')).toEqual(['QUEUED', 'RUNNING', 'COMPLETED']);
    expect(everyone.statesOf('sub-1')).toEqual(['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED']);
    for (const task of [...only.events, ...everyone.events]) {
      expect(task).not.toHaveProperty('stdout');
      expect(task).not.toHaveProperty('stderr');
    }
    // The output is there for status.
    expect((await client.status('sub-1')).stdout).toBe('one');
    only.close();
    everyone.close();
  });

  it('a subscribed client can close gracefully', async () => {
    const subscriber = await daemon.client();
    await subscriber.subscribe(['nothing-here']);
    const closed = await Promise.race([
      subscriber.close().then(() => true),
      new Promise<false>((resolve) => setTimeout(resolve, 3000, false)),
    ]);
    subscriber.destroy();
    expect(closed, 'TaskManagerClient.close() resolves within 3 s after subscribe()').toBe(true);
  });
});
