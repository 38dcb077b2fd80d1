import { setMaxListeners } from 'node:events';
import { mkdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ClusterScheduler, Database, isUnreachable, migrate, NodeNameTakenError, StoreVersionError, storePatienceMs } from '../cluster/index.js';
import { Executor } from '../executor/index.js';
import type { AttemptRunner } from '../scheduler/index.js';
import { ConfigError, type DaemonConfig } from './config.js';
import { chained, type DaemonContext } from './context.js';
import { GpuSampler } from './gpu.js';
import { openPort } from './port.js';
import { attemptRunner, checkStartup, type RunningDaemon, taskEnvironment } from './startup.js';
import { SystemSampler } from './stats.js';
import { Subscribers } from './subscribers.js';

/** The URL without its password, for messages. */
const shownUrl = (url: string) => url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');

/** A file name made of a node name. */
const fileName = (node: string) => node.replace(/[^A-Za-z0-9._-]/g, '_');

/**
 * A daemon of a cluster: its tasks are in PostgreSQL, shared with every
 * daemon started with the same store. Its data dir holds only what its
 * running attempts need on this host (scripts, output on its way to the store).
 */
export async function startClusterDaemon(config: DaemonConfig, store: string): Promise<RunningDaemon> {
  checkStartup(config);
  // A statement that hangs counts as a store gone well before a fence would be needed.
  const db = new Database(store, Math.max(500, Math.min(10_000, Math.floor(config.leaseMs / 4))));
  try {
    await db.patiently(() => migrate(db), storePatienceMs(config.leaseMs));
  } catch (error) {
    await db.close().catch(() => undefined);
    const why = error instanceof StoreVersionError ? error.message : `could not be opened: ${(error as Error).message}`;
    throw new ConfigError(`the store ${shownUrl(store)} ${why}`);
  }
  let executor: Executor | undefined;
  // Known once the node has its name: no attempt starts before.
  let outputDir = '';
  let runAttempt: AttemptRunner | undefined;
  const outputPaths = (claim: string) => ({ stdout: join(outputDir, `${claim}.stdout`), stderr: join(outputDir, `${claim}.stderr`) });
  const scheduler = new ClusterScheduler({
    db,
    concurrency: config.concurrency,
    leaseMs: config.leaseMs,
    keepFinished: config.keepFinished,
    maxQueue: config.maxQueue,
    runAttempt: (task, signal, onSpawn) => runAttempt!(task, signal, onSpawn),
    outputPaths,
    killAll: () => executor?.killAll(),
    leaseHolds: (validMs) => executor?.leaseHolds(validMs),
    log: config.log,
  });
  const gpus = new GpuSampler();
  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal); // one listener per request waiting on a task
  // Every answer comes after its commit: there is nothing to wait for.
  const committed = { flushed: () => Promise.resolve() };
  const ctx: DaemonContext = {
    config,
    scheduler,
    journal: committed,
    subscribers: new Subscribers(scheduler, committed),
    sampler: new SystemSampler(),
    gpus,
    outputs: { textOf: (task) => scheduler.textOf(task), follow: (task, gone, send) => scheduler.follow(task, gone, send) },
    startedAt: Date.now(),
    stopping: stopping.signal,
    inOrder: chained(),
  };
  let port: Awaited<ReturnType<typeof openPort>>;
  try {
    port = await openPort(ctx);
  } catch (error) {
    await db.close().catch(() => undefined);
    throw error;
  }
  /** A start that fails after listening: the port and the store let go (and the name given back, once taken). */
  const abandon = async () => {
    port.refuse();
    await port.close();
    await db.close().catch(() => undefined);
  };
  const node = config.node ?? `${hostname()}:${port.port}`;
  try {
    await db.patiently(() => scheduler.register(node, `${config.host}:${port.port}`), storePatienceMs(config.leaseMs));
  } catch (error) {
    await abandon();
    if (error instanceof NodeNameTakenError) throw new ConfigError(error.message);
    throw isUnreachable(error) ? new ConfigError(`the store ${shownUrl(store)} could not be reached: ${(error as Error).message}`) : error;
  }
  // This node's files on this host; what an earlier run left is of no use now (its tasks ran again elsewhere).
  const ownerDir = join(config.dataDir, 'nodes', fileName(node));
  const scriptDir = join(ownerDir, 'scripts');
  outputDir = join(ownerDir, 'output');
  try {
    await rm(scriptDir, { recursive: true, force: true });
    await rm(outputDir, { recursive: true, force: true });
    await mkdir(scriptDir, { recursive: true, mode: 0o700 });
    await mkdir(outputDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    // The name is given back at once rather than held until its lease runs out.
    await scheduler.stop(0);
    await abandon();
    throw error;
  }
  executor = new Executor(
    { baseEnv: taskEnvironment(), scriptDir, dataDir: ownerDir, killGraceMs: config.killGraceMs, syncOutput: false, killWithDaemon: true },
    config.log,
  );
  executor.warm();
  runAttempt = attemptRunner(() => executor, ownerDir, outputPaths);
  gpus.start();
  scheduler.start();

  let stopped: Promise<void> | undefined;
  const stop = async () => {
    port.refuse();
    await scheduler.stop(config.shutdownGraceMs);
    executor.close();
    gpus.close();
    stopping.abort();
    await port.close();
    await db.close().catch(() => undefined);
  };
  return {
    host: config.host,
    port: port.port,
    stop: () => (stopped ??= stop()),
    hurry: () => {
      scheduler.endGrace();
      executor.killAll();
    },
    // An unreachable store is waited for (with the tasks fenced), not a reason to stop.
    failed: new Promise<Error>(() => undefined),
  };
}
