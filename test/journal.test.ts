import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskManagerClient, TaskRecord } from '../src/index.js';
import {
  CMD,
  TASK_MANAGER,
  eventually,
  removeDir,
  serveExpectingRefusal,
  snapshotOf,
  snapshotSettled,
  startDaemon,
  tempDir,
  type TestDaemon,
} from './helpers.js';

/**
 * The durable state of the data dir, tested through real daemons: torn and
 * corrupt journals, the data dir lock, retention, graceful stop, durability
 * modes, compaction, and recovery after kill -9 with a task still running.
 */

const LOG_NAME = /^log\.(\d+)\.ndjson$/;

// Everything a test started or created, cleaned up after it whatever happened.
const daemons: TestDaemon[] = [];
const dirs: string[] = [];
const taskPids = new Set<number>();

afterEach(async () => {
  await Promise.all(daemons.splice(0).filter(isUp).map((daemon) => daemon.kill()));
  for (const pid of taskPids) if (isRunningCmd(pid)) process.kill(pid, 'SIGKILL');
  taskPids.clear();
  dirs.splice(0).forEach(removeDir);
});

function dir(prefix: string): string {
  const path = tempDir(prefix);
  dirs.push(path);
  return path;
}

async function daemon(args: string[], dataDir: string): Promise<TestDaemon> {
  const started = await startDaemon(args, { dataDir });
  daemons.push(started);
  return started;
}

const isUp = (daemon: TestDaemon) => daemon.process.exitCode === null && daemon.process.signalCode === null;

/** Log files of a data dir, oldest generation first. */
function logs(dataDir: string): { name: string; generation: number; path: string }[] {
  return readdirSync(dataDir)
    .flatMap((name) => {
      const match = LOG_NAME.exec(name);
      return match ? [{ name, generation: Number(match[1]), path: join(dataDir, name) }] : [];
    })
    .sort((a, b) => a.generation - b.generation);
}

const newestLog = (dataDir: string) => logs(dataDir).at(-1)!;

/** Alive and not a zombie. */
function isRunning(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Alive and still one of our bin/cmd processes (not a pid reused by someone else). */
function isRunningCmd(pid: number): boolean {
  if (!isRunning(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cmd');
  } catch {
    return false;
  }
}

function readPid(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8'));
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  taskPids.add(pid);
  return pid;
}

async function expectNotFound(client: TaskManagerClient, id: string): Promise<void> {
  await expect(client.status(id), id).rejects.toMatchObject({ code: 'NOT_FOUND' });
}

/** Runs tasks one after another: each prints its own result, some fail. */
async function runResults(client: TaskManagerClient, prefix: string, n: number): Promise<TaskRecord[]> {
  const tasks: TaskRecord[] = [];
  for (let i = 0; i < n; i++) {
    const exit = i % 3 === 2 ? 3 : 0;
    const { task } = await client.run({ id: `${prefix}-${i}`, cmd: [CMD, '--stdout', `${prefix} result ${i}`, '--exit', String(exit)] });
    expect(task.state).toBe(exit === 0 ? 'COMPLETED' : 'FAILED');
    tasks.push(task);
  }
  return tasks;
}

/** Each task is still there, with the result it had. */
async function expectResults(client: TaskManagerClient, expected: TaskRecord[]): Promise<void> {
  for (const before of expected) {
    const task = await client.status(before.id);
    expect(task, before.id).toMatchObject({
      state: before.state,
      exit_code: before.exit_code,
      stdout: before.stdout,
      attempts: before.attempts,
      finished_at: before.finished_at,
    });
  }
}

describe('journal replay', () => {
  it('replays a log whose last line was torn mid-write, warning with the file name, and keeps every result', async () => {
    const dataDir = dir('tm-journal-torn-');
    const first = await daemon([], dataDir);
    const client = await first.client();
    const results = await runResults(client, 'torn', 5);
    await client.close();
    expect(await first.stop()).toBe(0);

    const log = newestLog(dataDir);
    // The results are in this log (not only in the snapshot), so it must be replayed to keep them.
    expect(readFileSync(log.path, 'utf8')).toContain('"torn-4"');
    appendFileSync(log.path, '{"id":"torn-4","set":{"state":"COMPL');

    const second = await daemon([], dataDir);
    await eventually(() => second.stderr().includes(log.path));
    expect(second.stderr()).toMatch(/cut off|torn|partial|incomplete/i);
    const again = await second.client();
    await expectResults(again, results);
    expect((await again.list()).total).toBe(5);
    // The daemon keeps working after the torn tail: a new result, then a clean restart with no warning.
    const [extra] = await runResults(again, 'after', 1);
    await again.close();
    expect(await second.stop()).toBe(0);

    const third = await daemon([], dataDir);
    const last = await third.client();
    await expectResults(last, [...results, extra!]);
    await last.close();
    expect(await third.stop()).toBe(0);
    expect(third.stderr()).not.toMatch(/cut off|torn|unreadable/i);
  });

  it('refuses to start on a corrupt line in the middle of a log, naming file and line, and leaves the file as it was', async () => {
    const dataDir = dir('tm-journal-corrupt-');
    const first = await daemon([], dataDir);
    const client = await first.client();
    const results = await runResults(client, 'mid', 3);
    await client.close();
    expect(await first.stop()).toBe(0);

    const log = newestLog(dataDir);
    const good = readFileSync(log.path, 'utf8');
    const lines = good.split('\n');
    expect(lines.length).toBeGreaterThan(5);
    lines.splice(2, 0, '{"id":"mid-0","set":{"state": garbage}}'); // becomes line 3
    writeFileSync(log.path, lines.join('\n'));
    const corrupt = readFileSync(log.path);
    const snapshot = readFileSync(join(dataDir, 'snapshot.ndjson'));
    const names = logs(dataDir).map((l) => l.name);

    const refused = await serveExpectingRefusal(dataDir);
    expect(refused.started, refused.stderr).toBe(false);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`${log.path}:3`);
    expect(readFileSync(log.path).equals(corrupt)).toBe(true);
    expect(readFileSync(join(dataDir, 'snapshot.ndjson')).equals(snapshot)).toBe(true);
    expect(logs(dataDir).map((l) => l.name)).toEqual(names);

    // Once repaired by hand, the daemon starts with everything in it.
    writeFileSync(log.path, good);
    const second = await daemon([], dataDir);
    const again = await second.client();
    await expectResults(again, results);
    await again.close();
    expect(await second.stop()).toBe(0);
  });

  it('refuses to start on a corrupt snapshot, naming it, and leaves it as it was', async () => {
    const dataDir = dir('tm-journal-snapshot-');
    const first = await daemon([], dataDir);
    const client = await first.client();
    const results = await runResults(client, 'snap', 3);
    await client.close();
    expect(await first.stop()).toBe(0);

    const path = join(dataDir, 'snapshot.ndjson');
    const good = readFileSync(path);
    expect(good.length).toBeGreaterThan(20);
    writeFileSync(path, good.subarray(0, Math.floor(good.length / 2)));
    const corrupt = readFileSync(path);
    const names = logs(dataDir).map((l) => l.name);

    const refused = await serveExpectingRefusal(dataDir);
    expect(refused.started, refused.stderr).toBe(false);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(path);
    expect(readFileSync(path).equals(corrupt)).toBe(true);
    expect(logs(dataDir).map((l) => l.name)).toEqual(names);

    writeFileSync(path, good);
    const second = await daemon([], dataDir);
    const again = await second.client();
    await expectResults(again, results);
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('data dir lock', () => {
  it('refuses a second daemon naming the first one\'s pid, and takes over the lock of a killed daemon', async () => {
    const dataDir = dir('tm-journal-lock-');
    const lock = join(dataDir, 'lock');
    const first = await daemon([], dataDir);
    const firstPid = first.process.pid!;

    const refused = await serveExpectingRefusal(dataDir);
    expect(refused.started, refused.stderr).toBe(false);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`pid ${firstPid}`);
    // The refused daemon left the first one's lock and journal alone.
    expect(readFileSync(lock, 'utf8')).toMatch(new RegExp(`^${firstPid} `));
    const client = await first.client();
    const results = await runResults(client, 'locked', 1);
    await client.close();

    await first.kill();
    expect(readFileSync(lock, 'utf8')).toMatch(new RegExp(`^${firstPid} `)); // stale now
    const second = await daemon([], dataDir);
    expect(readFileSync(lock, 'utf8')).toMatch(new RegExp(`^${second.process.pid} `));
    const again = await second.client();
    await expectResults(again, results);
    await again.close();
    expect(await second.stop()).toBe(0);
    expect(existsSync(lock)).toBe(false);
  });
});

describe('data dir lock held by a zombie', () => {
  it('takes over the lock of a killed daemon that nobody has reaped yet', async () => {
    const dataDir = dir('tm-journal-zombie-');
    // `exec sleep` becomes the daemon's parent and never reaps it: killed, the daemon stays a zombie.
    const holder = spawn('sh', ['-c', `"${process.execPath}" "${TASK_MANAGER}" serve --port 0 --data-dir "${dataDir}" & echo $!; exec sleep 120`], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      let output = '';
      holder.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      await eventually(() => output.includes('listening'), 30_000);
      const pid = Number(output.split('\n')[0]);
      process.kill(pid, 'SIGKILL');
      const deadOrZombie = () => {
        try {
          return readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
        } catch {
          return true; // reaped after all: gone is as dead as a zombie
        }
      };
      await eventually(deadOrZombie, 30_000);
      const second = await daemon([], dataDir);
      expect(readFileSync(join(dataDir, 'lock'), 'utf8')).toMatch(new RegExp(`^${second.process.pid} `));
      expect(await second.stop(), second.stderr()).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('retention', () => {
  it('--keep-finished 5 keeps the 5 newest finished tasks, in memory, in the journal and across a restart', async () => {
    const dataDir = dir('tm-journal-keep-');
    const ids = Array.from({ length: 12 }, (_, i) => `keep-${i}`);
    const first = await daemon(['--keep-finished', '5'], dataDir);
    const client = await first.client();
    for (const id of ids) expect((await client.run({ id, cmd: ['echo', id] })).task.state).toBe('COMPLETED');

    const check = async (c: TaskManagerClient, kept: string[], dropped: string[]) => {
      for (const id of dropped) await expectNotFound(c, id);
      for (const id of kept) expect(await c.status(id)).toMatchObject({ id, state: 'COMPLETED', stdout: `${id}\n` });
      const list = await c.list();
      expect(list.total).toBe(kept.length);
      expect(list.tasks.map((t) => t.id).sort()).toEqual([...kept].sort());
    };
    await check(client, ids.slice(7), ids.slice(0, 7));
    await client.close();
    expect(await first.stop()).toBe(0);

    const second = await daemon(['--keep-finished', '5'], dataDir);
    // The drops reached the journal: the snapshot written at start holds only the kept tasks.
    await snapshotSettled(dataDir);
    expect(snapshotOf(dataDir).tasks.map((t) => t.id).sort()).toEqual(ids.slice(7).sort());
    const again = await second.client();
    await check(again, ids.slice(7), ids.slice(0, 7));
    // The order survived the restart too: the next finished task pushes out the oldest kept one.
    expect((await again.run({ id: 'keep-12', cmd: ['echo', 'keep-12'] })).task.state).toBe('COMPLETED');
    await check(again, [...ids.slice(8), 'keep-12'], ids.slice(0, 8));
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('retained output', () => {
  it('--keep-output-bytes drops the oldest outputs first, keeps the records, and survives a restart', async () => {
    const dataDir = dir('tm-journal-output-');
    const first = await daemon(['--keep-output-bytes', '3100'], dataDir);
    const client = await first.client();
    for (let i = 0; i < 5; i++) await client.run({ id: `out-${i}`, cmd: [CMD, '--stdout-bytes', '1000'] });
    const check = async (c: TaskManagerClient) => {
      for (let i = 0; i < 5; i++) {
        const task = await c.status(`out-${i}`);
        expect(task.state).toBe('COMPLETED');
        if (i < 2) expect(task).toMatchObject({ stdout: '', output_dropped: true });
        else expect(task.stdout).toHaveLength(1000);
        if (i >= 2) expect(task.output_dropped).toBeUndefined();
      }
    };
    await check(client);
    await client.close();
    expect(await first.stop()).toBe(0);
    const second = await daemon(['--keep-output-bytes', '3100'], dataDir);
    const again = await second.client();
    await check(again);
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('graceful stop', () => {
  it('lets a short task finish within --shutdown-grace-ms, kills a long one to run again after restart, and answers waiters SHUTTING_DOWN', async () => {
    const dataDir = dir('tm-journal-grace-');
    const work = dir('tm-journal-grace-work-');
    const longPidFile = join(work, 'long.pid');
    const args = ['--shutdown-grace-ms', '3000'];
    const first = await daemon(args, dataDir);
    const client = await first.client();
    await client.submit({ id: 'long', cmd: [CMD, '--pid-file', longPidFile, '--sleep', '60000'] });
    const longPid = await eventually(() => readPid(longPidFile));

    const longWaiter = await first.raw();
    longWaiter.send('{"op":"wait","id":"long","ref":"w-long"}\n{"op":"health","ref":"h"}\n');
    expect(await longWaiter.next()).toMatchObject({ ok: true, ref: 'h' }); // the wait is registered
    await client.submit({ id: 'short', cmd: [CMD, '--sleep', '500', '--stdout', 'short done'] });
    const shortWaiter = await first.raw();
    shortWaiter.send('{"op":"wait","id":"short","ref":"w-short"}\n{"op":"health","ref":"h"}\n');
    expect(await shortWaiter.next()).toMatchObject({ ok: true, ref: 'h' });
    // A subscription to the long task's changes: it is QUEUED again, INTERRUPTED, before the daemon exits.
    const events: TaskRecord[] = [];
    client.on('task', (task) => events.push(task));
    await client.subscribe(['long']);

    const sigterm = Date.now();
    const exited = first.stop();
    const shortReply = await shortWaiter.next();
    expect(shortReply).toMatchObject({ ok: true, ref: 'w-short', task: { id: 'short', state: 'COMPLETED', stdout: 'short done' } });
    const longReply = await Promise.race([longWaiter.next(), longWaiter.closed.then(() => 'closed before any answer')]);
    expect(longReply).toMatchObject({ ok: false, ref: 'w-long', error: { code: 'SHUTTING_DOWN' } });
    await longWaiter.closed;
    const code = await exited;
    const elapsed = Date.now() - sigterm;
    expect(code).toBe(0);
    expect(elapsed).toBeGreaterThanOrEqual(2800); // the long task had its grace
    expect(elapsed).toBeLessThan(15_000);
    await eventually(() => !isRunning(longPid));
    expect(events.at(-1)).toMatchObject({ id: 'long', state: 'QUEUED', interrupted: 1, error: { code: 'INTERRUPTED' } });

    const second = await daemon(args, dataDir);
    const again = await second.client();
    expect(await again.status('short')).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout: 'short done', attempts: 1 });
    // The long task runs again as a new process, its interrupted attempt not counted against its (zero) retries.
    const newPid = await eventually(() => {
      const pid = readPid(longPidFile);
      return pid !== undefined && pid !== longPid && pid;
    });
    expect(isRunning(newPid)).toBe(true);
    expect(await again.status('long')).toMatchObject({
      state: 'RUNNING',
      interrupted: 1,
      attempts: 1,
      max_attempts: 1,
      error: { code: 'INTERRUPTED' },
    });
    expect((await again.cancel('long')).state).toBe('CANCELED');
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('durability none', () => {
  it('--durability none keeps results across a graceful restart', async () => {
    const dataDir = dir('tm-journal-none-');
    const first = await daemon(['--durability', 'none'], dataDir);
    const client = await first.client();
    const results = await runResults(client, 'none', 4);
    const { task: later } = await client.submit({ id: 'none-later', cmd: ['echo', 'later'], delay_ms: 2000 });
    expect(later.state).toBe('PENDING');
    await client.close();
    expect(await first.stop()).toBe(0);

    const second = await daemon(['--durability', 'none'], dataDir);
    const again = await second.client();
    await expectResults(again, results);
    expect((await again.wait('none-later')).task).toMatchObject({ state: 'COMPLETED', stdout: 'later\n' });
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('compaction', () => {
  it('--compact-after-bytes keeps at most 2 logs and a bounded log over 200 tasks, and loses no result', async () => {
    const dataDir = dir('tm-journal-compact-');
    const args = ['--compact-after-bytes', '1024'];
    const first = await daemon(args, dataDir);
    const startGeneration = newestLog(dataDir).generation;
    const client = await first.client();
    const ids = Array.from({ length: 200 }, (_, i) => `compact-${i}`);
    let mostLogs = 0;
    for (let batch = 0; batch < ids.length; batch += 20) {
      const runs = ids.slice(batch, batch + 20).map((id) => client.run({ id, cmd: ['echo', id] }));
      for (const { task } of await Promise.all(runs)) expect(task.state).toBe('COMPLETED');
      mostLogs = Math.max(mostLogs, logs(dataDir).length);
    }
    await client.close();
    expect(await first.stop()).toBe(0);

    const final = logs(dataDir);
    const sizes = final.map((log) => statSync(log.path).size);
    const context = `logs ${JSON.stringify(final.map((l, i) => [l.name, sizes[i]]))}`;
    expect(existsSync(join(dataDir, 'snapshot.ndjson'))).toBe(true);
    expect(mostLogs, context).toBeLessThanOrEqual(2);
    expect(final.length, context).toBeLessThanOrEqual(2);
    // It compacted several times along the way (the bound grows with the snapshot, so not 200 times).
    expect(final.at(-1)!.generation - startGeneration, context).toBeGreaterThanOrEqual(3);
    // The log is compacted once it outgrows max(--compact-after-bytes, last snapshot): it stays near the
    // size of the live state (plus what one batch appends during a compaction), not of the whole history.
    const snapshotBytes = statSync(join(dataDir, 'snapshot.ndjson')).size;
    expect(statSync(final.at(-1)!.path).size, `${context}, snapshot ${snapshotBytes}`).toBeLessThan(snapshotBytes + 32 * 1024);
    expect(sizes.reduce((a, b) => a + b, 0), `${context}, snapshot ${snapshotBytes}`).toBeLessThan(2 * snapshotBytes + 64 * 1024);

    const second = await daemon(args, dataDir);
    const again = await second.client();
    const statuses = await Promise.all(ids.map((id) => again.status(id)));
    statuses.forEach((task, i) => {
      expect(task, ids[i]).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout: `${ids[i]}\n` });
    });
    expect((await again.list({ limit: 1000 })).total).toBe(200);
    await again.close();
    expect(await second.stop()).toBe(0);
  });
});

describe('kill -9 recovery', () => {
  it('kills the process left running by a killed daemon and runs its task again as a new process', async () => {
    const dataDir = dir('tm-journal-kill9-');
    const work = dir('tm-journal-kill9-work-');
    const pidFile = join(work, 'task.pid');
    const record = join(work, 'executions.ndjson');
    const first = await daemon([], dataDir);
    const client = await first.client();
    const events: TaskRecord[] = [];
    client.on('task', (task) => events.push(task));
    await client.subscribe(['k9']);
    const cmd = [CMD, '--record', record, '--exclusive', join(work, 'k9.lock'), '--pid-file', pidFile, '--sleep', '60000'];
    await client.submit({ id: 'k9', cmd });
    const oldPid = await eventually(() => readPid(pidFile));
    expect(events.some((task) => task.state === 'RUNNING')).toBe(true);

    await first.kill();
    expect(isRunning(oldPid)).toBe(true); // in its own process group: the daemon's death did not take it along

    const second = await daemon([], dataDir);
    await eventually(() => !isRunning(oldPid));
    const newPid = await eventually(() => {
      const pid = readPid(pidFile);
      return pid !== undefined && pid !== oldPid && pid;
    });
    expect(isRunning(newPid)).toBe(true);
    const again = await second.client();
    expect(await again.status('k9')).toMatchObject({ state: 'RUNNING', interrupted: 1, attempts: 1, error: { code: 'INTERRUPTED' } });
    const executions = readFileSync(record, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { event: string; pid: number });
    expect(executions.filter((e) => e.event === 'overlap')).toEqual([]);
    expect(executions.filter((e) => e.event === 'start').map((e) => e.pid)).toEqual([oldPid, newPid]);
    expect((await again.cancel('k9')).state).toBe('CANCELED');
    await again.close();
    expect(await second.stop()).toBe(0);
  });

  it('after a clean stop leaves alone a process a task detached on purpose', async () => {
    const dir = tempDir('tm-detached-');
    dirs.push(dir);
    const pidFile = join(dir, 'pid');
    const first = await startDaemon();
    daemons.push(first);
    const client = await first.client();
    const detach = `setsid ${CMD} --pid-file ${pidFile} --sleep 30000 </dev/null >/dev/null 2>&1 & sleep 0.3`;
    expect((await client.run({ cmd: detach })).task.state).toBe('COMPLETED');
    await client.close();
    const pid = await eventually(() => existsSync(pidFile) && Number(readFileSync(pidFile, 'utf8')));
    taskPids.add(pid);
    expect(await first.stop()).toBe(0);
    const second = await startDaemon([], { dataDir: first.dataDir });
    daemons.push(second);
    expect((await (await second.client()).health()).version).toBeTypeOf('string');
    expect(second.stderr()).not.toMatch(/killed/);
    process.kill(pid, 0); // still alive: throws if not
    process.kill(pid, 'SIGKILL');
  });
});
