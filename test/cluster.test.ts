import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TaskManagerClient } from '../src/client/index.js';
import { eventually, removeDir, serveExpectingRefusal, startDaemon, type TestDaemon, tempDir, TASK_MANAGER } from './helpers.js';
import { type PostgresServer, startPostgres } from '../bench/postgres-server.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * Daemons sharing one real PostgreSQL, as operators run them: every
 * operation through any daemon, and the faults a cluster must survive
 * (kill -9 of a daemon, a daemon cut off from the store, PostgreSQL
 * restarted), checked by tasks that log each of their runs.
 */

const LEASE_MS = 3000;
let postgres: PostgresServer;
let databases = 0;
const daemons: TestDaemon[] = [];
const clients: TaskManagerClient[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
}, 60_000);

afterAll(async () => {
  await postgres?.stop();
});

afterEach(async ({ task }) => {
  // What the daemons said is the first thing to read when a cluster test fails.
  if (task.result?.state === 'fail') for (const daemon of daemons) console.error(`daemon on ${daemon.port} (exit ${daemon.process.exitCode}):\n${daemon.stderr()}`);
  for (const client of clients.splice(0)) client.destroy();
  await Promise.all(daemons.splice(0).map((daemon) => (daemon.process.exitCode === null ? daemon.kill() : undefined)));
  for (const dir of dirs.splice(0)) removeDir(dir);
});

/** A fresh database on the server: each test's cluster starts empty. */
const freshStore = (): Promise<string> => postgres.createDatabase(`cluster_${++databases}`);

async function startNode(store: string, args: string[] = []): Promise<TestDaemon> {
  const daemon = await startDaemon(['--store', store, '--lease-ms', String(LEASE_MS), '--concurrency', '4', '--kill-grace-ms', '200', ...args], {
    // Its own process group, as under a shell or systemd: a kill can take the whole group.
    detached: true,
  });
  daemons.push(daemon);
  return daemon;
}

async function clientOf(daemon: TestDaemon): Promise<TaskManagerClient> {
  const client = await daemon.client();
  clients.push(client);
  return client;
}

/** Three daemons on one store, and a client of each. */
async function cluster() {
  const store = await freshStore();
  const nodes = [await startNode(store), await startNode(store), await startNode(store)];
  return { store, nodes, clients: await Promise.all(nodes.map(clientOf)) };
}

/**
 * A task that logs each of its runs to `<dir>/<id>`: "start PID" then "end
 * PID". Before it starts it checks that no earlier run of it is alive, and
 * logs "overlap PID" if one is: two runs of one task at once.
 */
function loggingTask(dir: string, id: string, seconds = 0.4) {
  const log = join(dir, id);
  const script = [
    `for p in $(awk '$1=="start"{print $2}' '${log}' 2>/dev/null); do kill -0 "$p" 2>/dev/null && echo "overlap $p" >> '${log}'; done`,
    `echo "start $$" >> '${log}'`,
    `sleep ${seconds}`,
    `echo "end $$" >> '${log}'`,
  ].join('\n');
  return { id, cmd: script };
}

interface Runs {
  log: string;
  starts: number;
  ends: number;
  overlaps: number;
}

function runsOf(dir: string, id: string): Runs {
  let lines: string[] = [];
  try {
    lines = readFileSync(join(dir, id), 'utf8').trim().split('\n');
  } catch {
    // never started
  }
  const count = (word: string) => lines.filter((line) => line.startsWith(`${word} `)).length;
  return { log: lines.join('\n'), starts: count('start'), ends: count('end'), overlaps: count('overlap') };
}

/**
 * What every fault test asserts: each acknowledged task COMPLETED, no two
 * runs of a task overlapped, and only tasks recorded as interrupted ran more
 * than once (no more times than their interruptions).
 */
async function expectEveryTaskRanSafely(client: TaskManagerClient, dir: string, ids: string[]): Promise<{ rerun: number }> {
  let rerun = 0;
  for (const id of ids) {
    const { task } = await client.wait(id, 120_000);
    expect(task, id).toMatchObject({ state: 'COMPLETED', exit_code: 0 });
    const runs = runsOf(dir, id);
    expect(runs.overlaps, `${id} ran twice at once:\n${runs.log}`).toBe(0);
    // A run may end and still not count: its daemon, cut off, could not record it before its lease ran out.
    expect(runs.ends, `${id} ran to its end`).toBeGreaterThanOrEqual(1);
    // Every run after the first was an interruption's doing. (An interruption may also have cut an attempt
    // short before its process started: a daemon lost after its claim, before its start.)
    expect(runs.starts - 1, `${id} ran again only when it was interrupted`).toBeLessThanOrEqual(task.interrupted ?? 0);
    if (runs.starts > 1) rerun++;
  }
  return { rerun };
}

describe('a cluster of daemons on one PostgreSQL', () => {
  it('serves every operation for every task through every daemon', async () => {
    const { nodes, clients: [a, b, c] } = await cluster();
    const submitted = await a!.submit({ id: 'hello', cmd: 'echo hello; sleep 0.3; echo world' });
    expect(submitted.task.state).toBe('QUEUED');
    const { task } = await b!.wait('hello', 30_000);
    expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'hello\nworld\n', attempts: 1 });
    expect(nodes.map((node) => `127.0.0.1:${node.port}`).some((name) => task.node?.endsWith(String(name.split(':')[1])))).toBe(true);
    expect(await c!.status('hello')).toMatchObject({ state: 'COMPLETED', stdout: 'hello\nworld\n' });

    // Ids are the cluster's: a duplicate through another daemon is recognised, a conflict refused.
    expect(await c!.submit({ id: 'hello', cmd: 'echo hello; sleep 0.3; echo world' })).toMatchObject({ duplicate: true });
    await expect(b!.submit({ id: 'hello', cmd: 'true' })).rejects.toMatchObject({ code: 'ID_CONFLICT' });

    // A pipeline across daemons: the dependent waits, then runs; a failure cancels what waits for it.
    await a!.submit({ id: 'build', cmd: 'sleep 0.3' });
    expect((await b!.submit({ id: 'deploy', cmd: 'true', depends_on: ['build'] })).task.state).toBe('PENDING');
    await c!.submit({ id: 'broken', cmd: 'exit 3' });
    await a!.submit({ id: 'after-broken', cmd: 'true', depends_on: ['broken'] });
    expect((await c!.wait('deploy', 30_000)).task.state).toBe('COMPLETED');
    expect((await b!.wait('after-broken', 30_000)).task).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });

    // Restart, edit and remove through other daemons than the one that took the task.
    expect((await b!.restart('broken')).state).toMatch(/PENDING|QUEUED|RUNNING/);
    expect((await a!.wait('broken', 30_000)).task).toMatchObject({ state: 'FAILED', restarts: 1 });
    await a!.submit({ id: 'later', cmd: 'echo later', start_at: Date.now() + 60_000 });
    expect(await c!.edit('later', { cmd: 'echo edited', start_at: Date.now() })).toMatchObject({ cmd: 'echo edited' });
    expect((await b!.wait('later', 30_000)).task).toMatchObject({ state: 'COMPLETED', stdout: 'edited\n' });
    expect((await c!.remove('later')).id).toBe('later');
    await expect(a!.status('later')).rejects.toMatchObject({ code: 'NOT_FOUND' });

    // Lists and counts are the cluster's, whichever daemon answers.
    const listed = await c!.list({ state: 'COMPLETED' });
    expect(listed.tasks.map((t) => t.id)).toEqual(['hello', 'build', 'deploy']);
    expect((await a!.count()).counts).toMatchObject({ COMPLETED: 3, FAILED: 1, CANCELED: 1 });

    // Every daemon shows the cluster's nodes.
    const stats = await b!.stats();
    expect(stats.nodes?.map((node) => node.address).sort()).toEqual(nodes.map((node) => `127.0.0.1:${node.port}`).sort());
  }, 90_000);

  it('follows a task running on another daemon, and cancels it there within a second', async () => {
    const { clients: [a, b, c] } = await cluster();
    await a!.submit({ id: 'talker', cmd: 'echo one; sleep 0.5; echo two; sleep 60' });
    const seen: string[] = [];
    const followed = c!.follow('talker', (_stream, data) => void seen.push(data));
    await eventually(() => seen.join('').includes('two\n'), 30_000);
    const asked = Date.now();
    const canceled = await b!.cancel('talker');
    expect(Date.now() - asked).toBeLessThan(1500);
    expect(canceled).toMatchObject({ state: 'CANCELED', error: { code: 'CANCELED' } });
    expect(await followed).toMatchObject({ state: 'CANCELED' });
    expect(seen.join('')).toBe('one\ntwo\n');
  }, 60_000);

  it("holds a group's limit across the whole cluster", async () => {
    const { clients: [a, b] } = await cluster();
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    await b!.setGroup('one-at-a-time', 1);
    // Each task fails if another of the group runs as it starts.
    const marker = join(dir, 'running');
    const cmd = `mkdir '${marker}' || exit 7; sleep 0.3; rmdir '${marker}'`;
    const ids = Array.from({ length: 6 }, (_, i) => `g${i}`);
    for (const id of ids) await a!.submit({ id, cmd, group: 'one-at-a-time' });
    for (const id of ids) expect((await b!.wait(id, 60_000)).task, id).toMatchObject({ state: 'COMPLETED' });
    expect((await a!.groups()).find((group) => group.name === 'one-at-a-time')).toMatchObject({ concurrency: 1, running: 0 });
  }, 60_000);

  it('a task that kills its executor every time ends FAILED (KILLED) after 3 tries, as on one daemon', async () => {
    const { clients: [a, b] } = await cluster();
    await a!.submit({ id: 'always', cmd: 'echo before; kill -9 $PPID; sleep 30' });
    const { task } = await b!.wait('always', 60_000);
    expect(task).toMatchObject({ state: 'FAILED', error: { code: 'KILLED' }, interrupted: 2, attempts: 1 });
    expect(task.error?.message).toContain('3 attempts in a row');
  }, 90_000);

  it('refuses a second live daemon with the same node name (exit 2)', async () => {
    const store = await freshStore();
    await startNode(store, ['--node', 'twin']);
    const refused = await serveExpectingRefusal(tempDir('tm-data-'), ['--store', store, '--node', 'twin']);
    expect(refused).toMatchObject({ code: 2, started: false });
    expect(refused.stderr).toMatch(/another live daemon is named "twin"/);
  }, 60_000);

  it('takes its name back at once when restarted on its host after a crash', async () => {
    const store = await freshStore();
    const first = await startNode(store, ['--node', 'phoenix']);
    const client = await clientOf(first);
    await client.submit({ id: 'long', cmd: 'sleep 60' });
    await eventually(async () => (await client.status('long')).state === 'RUNNING', 30_000);
    process.kill(-first.process.pid!, 'SIGKILL');
    await first.exited;
    const started = Date.now();
    const again = await startNode(store, ['--node', 'phoenix']);
    // No wait for the old lease: the daemon that held the name is gone from this host.
    expect(Date.now() - started).toBeLessThan(LEASE_MS);
    const task = (await (await clientOf(again)).wait('long', 5_000)).task;
    expect(task).toMatchObject({ state: 'RUNNING', interrupted: 1, node: 'phoenix' });
  }, 60_000);

  it('registers the requests of one read in order, as one daemon does', async () => {
    const { nodes } = await cluster();
    const raw = await nodes[0]!.raw();
    const read = async (requests: object[]) => {
      raw.send(requests.map((request) => `${JSON.stringify(request)}\n`).join(''));
      return new Map((await raw.take(requests.length)).map((answer) => [answer.ref, answer]));
    };
    const pipeline = await read([
      { op: 'submit', ref: 1, id: 'first', cmd: 'true' },
      { op: 'submit', ref: 2, id: 'second', cmd: 'true', depends_on: ['first'] },
      { op: 'status', ref: 3, id: 'second' },
      { op: 'wait', ref: 4, id: 'second' },
    ]);
    for (const ref of [1, 2, 3]) expect(pipeline.get(ref), `request ${ref}`).toMatchObject({ ok: true });
    expect(pipeline.get(4).task).toMatchObject({ id: 'second', state: 'COMPLETED' });
    // Its id used again in the same read as its remove: a new task, not a duplicate.
    const reused = await read([
      { op: 'remove', ref: 5, id: 'first' },
      { op: 'submit', ref: 6, id: 'first', cmd: 'echo again' },
    ]);
    expect(reused.get(5)).toMatchObject({ ok: true, task: { id: 'first', state: 'COMPLETED' } });
    expect(reused.get(6)).toMatchObject({ ok: true, task: { id: 'first', cmd: 'echo again' } });
    expect(reused.get(6)).not.toHaveProperty('duplicate');
    raw.close();
  }, 60_000);

  it('refuses a store it cannot reach with a clear error (exit 2)', async () => {
    const refused = await serveExpectingRefusal(tempDir('tm-data-'), ['--store', 'postgres://nobody:secret@127.0.0.1:1/none']);
    expect(refused).toMatchObject({ code: 2, started: false });
    expect(refused.stderr).toMatch(/the store postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none could not be opened/);
    expect(refused.stderr).not.toContain('secret');
  }, 60_000);
});

describe('stopping a daemon of a cluster', () => {
  it('a graceful stop hands its running tasks to the other daemons at once', async () => {
    const store = await freshStore();
    const leaving = await startNode(store, ['--shutdown-grace-ms', '100']);
    const staying = await startNode(store);
    const client = await clientOf(staying);
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    const ids = Array.from({ length: 8 }, (_, i) => `s${i}`);
    for (const id of ids) await client.submit(loggingTask(dir, id, 1.5));
    await eventually(async () => ((await client.stats()).nodes ?? []).some((node) => node.address.endsWith(`:${leaving.port}`) && node.running > 0), 30_000);
    const stoppedAt = Date.now();
    expect(await leaving.stop()).toBe(0);
    // Its name is given back as it leaves: nobody waits for its lease to run out.
    expect((await client.stats()).nodes?.map((node) => node.address)).toEqual([`127.0.0.1:${staying.port}`]);
    const { rerun } = await expectEveryTaskRanSafely(client, dir, ids);
    expect(rerun).toBeGreaterThan(0);
    expect(Date.now() - stoppedAt).toBeLessThan(LEASE_MS + 10_000);
  }, 90_000);

  it('serves HTTP for the whole cluster', async () => {
    const { nodes, clients: [a] } = await cluster();
    await a!.submit({ id: 'web', cmd: 'echo from the cluster' });
    await a!.wait('web', 30_000);
    const response = await fetch(`http://127.0.0.1:${nodes[1]!.port}/tasks/web`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ ok: true, task: { id: 'web', state: 'COMPLETED', stdout: 'from the cluster\n' } });
  }, 60_000);
});

describe('faults in a cluster', () => {
  it('kill -9 of one daemon mid-work: its tasks run again elsewhere after its lease, none twice at once', async () => {
    const { nodes, clients: [a, b] } = await cluster();
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    const ids = Array.from({ length: 48 }, (_, i) => `k${i}`);
    for (const id of ids) await a!.submit(loggingTask(dir, id));
    // Once the victim runs tasks, kill its whole process group as an operator or the OOM killer would.
    const victim = nodes[2]!;
    await eventually(async () => ((await b!.stats()).nodes ?? []).some((node) => node.address.endsWith(`:${victim.port}`) && node.running > 0), 30_000);
    process.kill(-victim.process.pid!, 'SIGKILL');
    await victim.exited;
    const { rerun } = await expectEveryTaskRanSafely(b!, dir, ids);
    expect(rerun).toBeGreaterThan(0);
    // The dead daemon left the cluster's view once its lease was taken over.
    await eventually(async () => (await a!.stats()).nodes?.length === 2, 30_000);
  }, 120_000);

  it('a daemon cut off from PostgreSQL kills its tasks before its lease ends, and serves again when the store is back', async () => {
    const store = await freshStore();
    const proxy: TcpProxy = await startTcpProxy(postgres.port);
    try {
      const a = await startNode(store);
      const b = await startNode(store);
      const cut = await startNode(store.replace(`:${postgres.port}/`, `:${proxy.port}/`));
      const [ca, cb] = [await clientOf(a), await clientOf(b)];
      const dir = tempDir('tm-cluster-runs-');
      dirs.push(dir);
      const ids = Array.from({ length: 36 }, (_, i) => `c${i}`);
      for (const id of ids) await ca.submit(loggingTask(dir, id, 0.6));
      await eventually(async () => ((await cb.stats()).nodes ?? []).some((node) => node.address.endsWith(`:${cut.port}`) && node.running > 0), 30_000);
      proxy.cut();
      await eventually(() => cut.stderr().includes("killing this daemon's running tasks"), 30_000);
      const { rerun } = await expectEveryTaskRanSafely(cb, dir, ids);
      expect(rerun).toBeGreaterThan(0);
      proxy.restore();
      // Back in the cluster: it renews or registers again and takes work.
      const after = Array.from({ length: 12 }, (_, i) => `after${i}`);
      await eventually(async () => ((await cb.stats()).nodes ?? []).some((node) => node.address.endsWith(`:${cut.port}`)), 30_000);
      for (const id of after) await ca.submit(loggingTask(dir, id, 0.3));
      await expectEveryTaskRanSafely(cb, dir, after);
      const nodesThatRan = new Set(await Promise.all(after.map(async (id) => (await ca.status(id)).node)));
      expect(nodesThatRan.size).toBeGreaterThan(0);
    } finally {
      await proxy.close();
    }
  }, 150_000);

  it('a frozen daemon (SIGSTOP): its executor processes kill its tasks before its lease can move', async () => {
    const { nodes, clients: [a, b] } = await cluster();
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    // Longer than the lease: a task its daemon left running would still run when it starts elsewhere.
    const ids = Array.from({ length: 12 }, (_, i) => `f${i}`);
    for (const id of ids) await a!.submit(loggingTask(dir, id, (LEASE_MS + 2000) / 1000));
    const frozen = nodes[2]!;
    await eventually(async () => ((await b!.stats()).nodes ?? []).some((node) => node.address.endsWith(`:${frozen.port}`) && node.running > 0), 30_000);
    // The daemon alone stops (a debugger, a stalled VM page-in): its timers cannot fence it.
    process.kill(frozen.process.pid!, 'SIGSTOP');
    try {
      const { rerun } = await expectEveryTaskRanSafely(b!, dir, ids);
      expect(rerun).toBeGreaterThan(0);
    } finally {
      process.kill(frozen.process.pid!, 'SIGCONT');
    }
    // Woken, it finds its lease taken over, and joins again under a new one.
    await eventually(() => frozen.stderr().includes('registered again under a new lease'), 30_000);
  }, 150_000);

  it('PostgreSQL restarted under load: the daemons reconnect and lose nothing', async () => {
    const { clients: [a, b, c] } = await cluster();
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    const ids = Array.from({ length: 48 }, (_, i) => `r${i}`);
    for (const id of ids.slice(0, 24)) await a!.submit(loggingTask(dir, id, 0.3));
    await eventually(async () => (await b!.count()).counts.COMPLETED >= 4, 30_000);
    await postgres.restart();
    // Submits right after the restart are acknowledged once committed, or refused: never lost.
    for (const id of ids.slice(24)) await c!.submit(loggingTask(dir, id, 0.3));
    await expectEveryTaskRanSafely(b!, dir, ids);
  }, 150_000);
});

describe('the task-manager CLI against a cluster', () => {
  it('lists the nodes', async () => {
    const { nodes } = await cluster();
    const out = execFileSync(process.execPath, [TASK_MANAGER, 'nodes', '--port', String(nodes[0]!.port)], { encoding: 'utf8' });
    for (const node of nodes) expect(out).toContain(`127.0.0.1:${node.port}`);
  }, 60_000);
});
