import { describe, expect, it } from 'vitest';
import { clusterHarness, expectEveryTaskRanSafely, LEASE_MS, loggingTask } from './cluster-harness.js';
import type { TaskManagerClient } from '../src/index.js';
import { eventually, tempDir, type TestDaemon } from './helpers.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * The faults a cluster must survive, checked by tasks that log each of
 * their runs: a daemon stopping (gracefully), kill -9 of a daemon, a daemon
 * cut off from the store, a frozen daemon, PostgreSQL restarted.
 */

const { postgres, dirs, freshStore, startNode, clientOf, cluster } = clusterHarness();

/** The store lists a task running on `node` now (stats' counts per node can be a lease renewal old). */
const runsTasks = async (client: TaskManagerClient, node: TestDaemon) =>
  (await client.list({ state: 'RUNNING' })).tasks.some((task) => task.node?.endsWith(`:${node.port}`));

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
    await eventually(() => runsTasks(client, leaving), 30_000);
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
    const ids = Array.from({ length: 36 }, (_, i) => `k${i}`);
    for (const id of ids) await a!.submit(loggingTask(dir, id, 1));
    // Once it runs tasks, kill its whole process group as an operator or the OOM killer would.
    const victim = nodes[2]!;
    await eventually(() => runsTasks(b!, victim), 30_000);
    process.kill(-victim.process.pid!, 'SIGKILL');
    await victim.exited;
    const { rerun } = await expectEveryTaskRanSafely(b!, dir, ids);
    expect(rerun).toBeGreaterThan(0);
    // The dead daemon left the cluster's view once its lease was taken over.
    await eventually(async () => (await a!.stats()).nodes?.length === 2, 30_000);
  }, 120_000);

  it('a daemon cut off from PostgreSQL kills its tasks before its lease ends, and serves again when the store is back', async () => {
    const store = await freshStore();
    const proxy: TcpProxy = await startTcpProxy(postgres().port);
    try {
      const a = await startNode(store);
      const b = await startNode(store);
      const cut = await startNode(store.replace(`:${postgres().port}/`, `:${proxy.port}/`));
      const [ca, cb] = [await clientOf(a), await clientOf(b)];
      const dir = tempDir('tm-cluster-runs-');
      dirs.push(dir);
      const ids = Array.from({ length: 36 }, (_, i) => `c${i}`);
      for (const id of ids) await ca.submit(loggingTask(dir, id, 0.6));
      await eventually(() => runsTasks(cb, cut), 30_000);
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
    await eventually(() => runsTasks(b!, frozen), 30_000);
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

  it('PostgreSQL restarted under load: the daemons reconnect and lose nothing, and subscribers hear each end once', async () => {
    const { nodes, clients: [a, b, c] } = await cluster();
    const dir = tempDir('tm-cluster-runs-');
    dirs.push(dir);
    // A subscriber on b: after the restart its daemon looks at every task again, and tells only what changed.
    const watcher = await clientOf(nodes[1]!);
    const ends = new Map<string, number>();
    watcher.on('task', (task) => {
      if (task.state === 'COMPLETED') ends.set(task.id, (ends.get(task.id) ?? 0) + 1);
    });
    await watcher.subscribe();
    const ids = Array.from({ length: 48 }, (_, i) => `r${i}`);
    for (const id of ids.slice(0, 24)) await a!.submit(loggingTask(dir, id, 0.3));
    await eventually(async () => (await b!.count()).counts.COMPLETED >= 4, 30_000);
    await postgres().restart();
    // Submits right after the restart are acknowledged once committed, or refused: never lost.
    for (const id of ids.slice(24)) await c!.submit(loggingTask(dir, id, 0.3));
    await expectEveryTaskRanSafely(b!, dir, ids);
    await eventually(() => ids.every((id) => ends.has(id)), 30_000);
    expect([...ends].filter(([, count]) => count > 1)).toEqual([]);
    await watcher.close();
  }, 150_000);
});
