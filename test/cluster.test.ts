import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clusterHarness } from './cluster-harness.js';
import { eventually, serveExpectingRefusal, TASK_MANAGER, tempDir } from './helpers.js';

/**
 * Daemons sharing one real PostgreSQL, as operators run them: every
 * operation through any daemon, the CLI against a cluster, names, and the
 * refusal of a store that cannot be reached. The faults are in
 * cluster-faults.test.ts.
 */

const { dirs, freshStore, startNode, clientOf, cluster } = clusterHarness();

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
    // A lease far longer than a start takes, even on a loaded machine: a start that waited for it shows.
    const lease = ['--lease-ms', '20000'];
    const first = await startNode(store, ['--node', 'phoenix', ...lease]);
    const client = await clientOf(first);
    await client.submit({ id: 'long', cmd: 'sleep 60' });
    await eventually(async () => (await client.status('long')).state === 'RUNNING', 30_000);
    process.kill(-first.process.pid!, 'SIGKILL');
    await first.exited;
    const started = Date.now();
    const again = await startNode(store, ['--node', 'phoenix', ...lease]);
    // No wait for the old lease: the daemon that held the name is gone from this host.
    expect(Date.now() - started).toBeLessThan(20_000);
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
    // The start waits for the store as a request would: 10 s, or the lease if shorter.
    const refused = await serveExpectingRefusal(tempDir('tm-data-'), ['--store', 'postgres://nobody:secret@127.0.0.1:1/none', '--lease-ms', '1000']);
    expect(refused).toMatchObject({ code: 2, started: false });
    expect(refused.stderr).toMatch(/the store postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none could not be opened/);
    expect(refused.stderr).not.toContain('secret');
  }, 60_000);
});

describe('the task-manager CLI against a cluster', () => {
  it('lists the nodes', async () => {
    const { nodes } = await cluster();
    const out = execFileSync(process.execPath, [TASK_MANAGER, 'nodes', '--port', String(nodes[0]!.port)], { encoding: 'utf8' });
    for (const node of nodes) expect(out).toContain(`127.0.0.1:${node.port}`);
  }, 60_000);
});

