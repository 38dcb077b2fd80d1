import { setMaxListeners } from 'node:events';
import { mkdir, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  attemptKey,
  Executor,
  killLeftovers,
  readStartEvidence,
  removeStartEvidence,
} from '../executor/index.js';
import { Journal } from '../journal/index.js';
import { Scheduler, type StoredTask, startId } from '../scheduler/index.js';
import { type DaemonConfig, DEFAULT_CONFIG } from './config.js';
import { atOnce, type DaemonContext } from './context.js';
import { followOutput } from './follow.js';
import { GpuSampler } from './gpu.js';
import { OutputFiles } from './output-files.js';
import { openPort, type Port } from './port.js';
import { attemptRunner, checkStartup, type RunningDaemon, taskEnvironment } from './startup.js';

export type { RunningDaemon };
import { SystemSampler } from './stats.js';
import { Subscribers } from './subscribers.js';

export async function startDaemon(overrides: Partial<DaemonConfig> = {}): Promise<RunningDaemon> {
  const config: DaemonConfig = { ...DEFAULT_CONFIG, ...overrides };
  // A daemon of a cluster loads PostgreSQL's client; one with an embedded journal does without it.
  if (config.store !== undefined) return (await import('./cluster-daemon.js')).startClusterDaemon(config, config.store);
  checkStartup(config);
  let fail: (error: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => (fail = resolve));
  const { journal, tasks, groups, crashed } = await Journal.open(config.dataDir, {
    durability: config.durability,
    compactAfterBytes: config.compactAfterBytes,
    warn: config.log,
    onFailure: (error) => fail(error),
  });
  const dataDir = await realpath(config.dataDir);
  config.dataDir = dataDir;
  // After a crash (a stale lock, or tasks still RUNNING in the journal), anything this data dir's
  // daemon started may still run; after a clean stop nothing does, and what a task detached on
  // purpose is left alone.
  const running = tasks.filter((task) => task.state === 'RUNNING');
  const leftovers = crashed || running.length > 0 ? await killLeftovers(dataDir, running) : { killed: 0, attempts: new Set<string>() };
  if (leftovers.killed > 0) config.log(`killed ${leftovers.killed} process(es) left running by the previous daemon`);
  // An attempt RUNNING in the journal counts as started if its pid was recorded, a process of it
  // was still running, or its executor process said so when the daemon went.
  const evidence = await readStartEvidence(dataDir);
  const started = (task: StoredTask) =>
    task.pgid !== undefined || leftovers.attempts.has(attemptKey(task.id, task.attempts)) || evidence.attempts.has(startId(task));

  // Script files of attempts that a crash cut short are of no use to anyone now.
  const scriptDir = join(dataDir, 'scripts');
  await rm(scriptDir, { recursive: true, force: true });
  await mkdir(scriptDir, { mode: 0o700 });
  const syncOutput = config.durability === 'fsync';
  const outputs = await OutputFiles.open(dataDir, tasks, journal, syncOutput);
  const executor = new Executor(
    { baseEnv: taskEnvironment(), scriptDir, dataDir, killGraceMs: config.killGraceMs, syncOutput },
    config.log,
  );
  const scheduler = new Scheduler({
    concurrency: config.concurrency,
    journal,
    keepFinished: config.keepFinished,
    keepOutputBytes: config.keepOutputBytes,
    maxQueue: config.maxQueue,
    maxSpecBytes: config.maxSpecBytes,
    discardOutput: (name) => outputs.discard(name),
    runAttempt: attemptRunner(() => executor, dataDir, (name) => outputs.paths(name)),
  });
  executor.warm();
  journal.snapshotSource = () => scheduler.snapshot();
  journal.groupSource = () => scheduler.groupSettings();
  const gpus = new GpuSampler();
  gpus.start();

  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal); // one listener per request waiting on a task
  const ctx: DaemonContext = {
    config,
    scheduler,
    journal,
    subscribers: new Subscribers(scheduler, journal),
    sampler: new SystemSampler(),
    gpus,
    outputs: {
      textOf: (task) => outputs.textOf(task),
      follow: async (task, gone, send) => {
        await followOutput(task, outputs, gone, send);
        return task;
      },
    },
    startedAt: Date.now(),
    stopping: stopping.signal,
    inOrder: atOnce,
  };
  let port: Port;
  try {
    port = await openPort(ctx);
  } catch (error) {
    // Nothing has started yet: leave the data dir as a clean stop would (no stale lock).
    executor.close();
    await journal.close();
    throw error;
  }
  // Tasks start only once the port is ours; no connection is served before this line runs.
  scheduler.restore(tasks, started, groups);
  // The evidence has done its work once the journal holds what it told.
  void journal.flushed().then(() => removeStartEvidence(evidence.files), () => undefined);

  let stopped: Promise<void> | undefined;
  let journalFailed = false;
  const stop = async () => {
    port.refuse();
    await scheduler.stop(config.shutdownGraceMs);
    executor.close(!journalFailed);
    gpus.close();
    stopping.abort(); // whoever still waits for a task is told the daemon is stopping
    await journal.flushed().catch(() => undefined);
    await port.close();
    await journal.close();
  };
  const hurry = () => {
    scheduler.endGrace();
    executor.killAll();
  };
  void failed.then((error) => {
    // Without a journal no acknowledgement can be kept: stop rather than run on without durability.
    config.log(`${error.message}; stopping, since nothing new could be made durable (running tasks are killed and run again at the next start)`);
    journalFailed = true;
    stopped ??= stop();
    hurry();
  });
  return {
    host: config.host,
    port: port.port,
    stop: () => (stopped ??= stop()),
    hurry,
    failed,
  };
}

