import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClusterScheduler, Database, migrate, NodeNameTakenError } from '../src/cluster/index.js';
import type { AttemptRunner } from '../src/scheduler/index.js';
import { removeDir, tempDir } from './helpers.js';
import { type PostgresServer, startPostgres } from '../bench/postgres-server.js';
import { call, describeStoreConformance, FakeRunner, reaches, spec, type StoreOptions, until } from './store-conformance.js';

/**
 * The conformance suite against ClusterScheduler on a real PostgreSQL (one
 * server for the file, a fresh database per scheduler of the suite), and
 * what only a cluster has: several daemons sharing one store.
 */

let postgres: PostgresServer;
let outputs: string;
let databases = 0;
/** closed after each test, once its schedulers have stopped (the suite's afterEach runs before this file's) */
const open: Database[] = [];

beforeAll(async () => {
  postgres = await startPostgres();
  outputs = tempDir('tm-cluster-output-');
}, 60_000);

afterAll(async () => {
  await postgres?.stop();
  if (outputs) removeDir(outputs);
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((db) => db.close()));
});

/** A new empty database on the server; its url. */
const freshDatabase = (): Promise<string> => postgres.createDatabase(`t_${++databases}`);

type NodeOptions = Omit<StoreOptions, 'maxSpecBytes'>;

/** A daemon's scheduler on the database at `url` (migrated, as a daemon's start does), registered as `node` and started. */
async function startNode(url: string, node: string, options: NodeOptions): Promise<ClusterScheduler> {
  const scheduler = await unregistered(url, options);
  await scheduler.register(node, '127.0.0.1:0');
  scheduler.start();
  return scheduler;
}

async function unregistered(url: string, { concurrency, keepFinished, maxQueue, runAttempt }: NodeOptions): Promise<ClusterScheduler> {
  const db = new Database(url, 2000);
  open.push(db);
  await migrate(db);
  const cluster = {
    db,
    concurrency,
    leaseMs: 3000,
    keepFinished,
    maxQueue,
    runAttempt,
    outputPaths: (claim: string) => ({ stdout: join(outputs, `${claim}.out`), stderr: join(outputs, `${claim}.err`) }),
    // No processes here: nothing to kill, no executor to tell how long the lease holds.
    killAll: () => {},
    leaseHolds: () => {},
    log: () => {},
  };
  // Passed as a variable, not a literal: it type-checks whether or not ClusterOptions has leaseHolds yet.
  return new ClusterScheduler(cluster);
}

describeStoreConformance('ClusterScheduler', async (options) => ({ scheduler: await startNode(await freshDatabase(), 'node-a', options) }));

describe('cluster only: daemons sharing one store', () => {
  const schedulers: ClusterScheduler[] = [];
  afterEach(async () => {
    await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.stop(0)));
  });

  /** A fresh database and `count` daemons on it, node-a, node-b..., each with its own runner. */
  async function cluster(count: number, concurrency: number, runAttempt?: (runner: FakeRunner) => AttemptRunner) {
    const url = await freshDatabase();
    const nodes = [];
    for (let i = 0; i < count; i++) {
      const runner = new FakeRunner();
      const scheduler = await startNode(url, `node-${String.fromCharCode(97 + i)}`, {
        concurrency,
        keepFinished: 100,
        maxQueue: 100,
        runAttempt: runAttempt?.(runner) ?? runner.run,
      });
      schedulers.push(scheduler);
      nodes.push({ scheduler, runner });
    }
    return { url, nodes };
  }

  /** Ends every attempt running now. */
  const endAll = (runners: FakeRunner[]) => {
    for (const runner of runners) for (const id of runner.runningIds) runner.end(id);
  };

  it('runs every task exactly once across two daemons', async () => {
    const { nodes } = await cluster(2, 2);
    const ids = Array.from({ length: 10 }, (_, i) => `t${i}`);
    // Submitted through both: either daemon's submit wakes both.
    for (const [i, id] of ids.entries()) await nodes[i % 2]!.scheduler.submit(spec(), id);
    const runners = nodes.map((node) => node.runner);
    await until(
      async () => {
        endAll(runners);
        return (await nodes[0]!.scheduler.countByState()).counts.COMPLETED === ids.length;
      },
      () => `all ${ids.length} COMPLETED`,
    );
    expect(runners.flatMap((runner) => runner.started).sort()).toEqual(ids);
  });

  it("holds a group's limit across daemons: never more than one of group g runs at once", async () => {
    let running = 0;
    let most = 0;
    // Counted by the runners themselves: an attempt ends (and is counted out) before its daemon records it.
    const counted = (runner: FakeRunner): AttemptRunner => async (task, stop, onSpawn) => {
      most = Math.max(most, ++running);
      try {
        return await runner.run(task, stop, onSpawn);
      } finally {
        running--;
      }
    };
    const { nodes } = await cluster(2, 2, counted);
    await nodes[0]!.scheduler.setGroup('g', 1);
    const ids = Array.from({ length: 6 }, (_, i) => `g${i}`);
    for (const [i, id] of ids.entries()) await nodes[i % 2]!.scheduler.submit(spec({ group: 'g' }), id);
    const runners = nodes.map((node) => node.runner);
    await until(
      async () => {
        endAll(runners);
        return (await nodes[1]!.scheduler.countByState()).counts.COMPLETED === ids.length;
      },
      () => `all ${ids.length} COMPLETED`,
    );
    expect(most).toBe(1);
    expect(runners.flatMap((runner) => runner.started).sort()).toEqual(ids);
  });

  it('cancels through one daemon a task running on another: its runner sees the abort within 1 s', async () => {
    const { url, nodes } = await cluster(1, 2);
    const [a] = nodes;
    await a!.scheduler.submit(spec(), 'long');
    await until(() => a!.runner.runningIds.includes('long'), () => 'long running on node-a');
    // node-b joins only now: the task cannot be its.
    const b = await startNode(url, 'node-b', { concurrency: 2, keepFinished: 100, maxQueue: 100, runAttempt: new FakeRunner().run });
    schedulers.push(b);
    const aborted = until(() => !a!.runner.runningIds.includes('long'), () => "node-a's runner aborted", 1000);
    const canceled = await b.cancel(await b.get('long'));
    await aborted;
    expect(canceled.record()).toMatchObject({ state: 'CANCELED', node: 'node-a', error: { code: 'CANCELED' } });
    expect((await reaches(a!.scheduler, 'long', 'CANCELED')).record()).toMatchObject({ error: { code: 'CANCELED' } });
  });

  it("ends a transaction its daemon left idle (frozen) past the statement timeout, so that its row locks hold no one up", async () => {
    const url = await freshDatabase();
    const frozen = new Database(url, 500, 1);
    const other = new Database(url, 5000, 1);
    open.push(frozen, other);
    await frozen.query('CREATE TABLE t (id int PRIMARY KEY)');
    await frozen.query('INSERT INTO t VALUES (1)');
    let locked: () => void = () => undefined;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const stalled = frozen.transaction(async (query) => {
      await query('SELECT id FROM t WHERE id = 1 FOR UPDATE');
      locked();
      await new Promise((resolve) => setTimeout(resolve, 3000)); // a daemon stopped inside its transaction
    });
    const outcome = stalled.then(() => 'committed', (error: Error) => error.message);
    await isLocked;
    expect(await other.query('SELECT id FROM t FOR UPDATE SKIP LOCKED')).toEqual([]); // held
    const free = await until(async () => (await other.query('SELECT id FROM t FOR UPDATE SKIP LOCKED')).length === 1, () => 'the row freed', 2500);
    expect(free).toBe(true);
    expect(await outcome).not.toBe('committed');
  });

  it('refuses a second daemon the name of a live one', async () => {
    const { url, nodes } = await cluster(1, 2);
    const second = await unregistered(url, { concurrency: 2, keepFinished: 100, maxQueue: 100, runAttempt: new FakeRunner().run });
    await expect(call(() => second.register('node-a', '127.0.0.1:0'))).rejects.toBeInstanceOf(NodeNameTakenError);
    // The refused one took nothing from the live one.
    expect((await nodes[0]!.scheduler.nodes()).map((node) => node.name)).toEqual(['node-a']);
  });
});
