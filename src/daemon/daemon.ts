import { setMaxListeners } from 'node:events';
import { mkdir, realpath, rm } from 'node:fs/promises';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  ATTEMPT_VARIABLE,
  attemptKey,
  chooseSpawner,
  Executor,
  killLeftovers,
  OWNER_VARIABLE,
  readStartEvidence,
  removeStartEvidence,
  TASK_VARIABLE,
} from '../executor/index.js';
import { Journal } from '../journal/index.js';
import { encodeLine, errorResponse, requestError } from '../protocol/index.js';
import { Scheduler, type StoredTask, startId } from '../scheduler/index.js';
import { ConfigError, type DaemonConfig, DEFAULT_CONFIG } from './config.js';
import { Connection } from './connection.js';
import type { DaemonContext } from './context.js';
import { followOutput } from './follow.js';
import { GpuSampler } from './gpu.js';
import type { HttpFront } from './http/front.js';
import { OutputFiles } from './output-files.js';
import { sniffProtocol } from './sniff.js';
import { SystemSampler } from './stats.js';
import { Subscribers } from './subscribers.js';

export interface RunningDaemon {
  host: string;
  port: number;
  /** Stops accepting, lets running tasks finish within the grace period, flushes and closes. */
  stop(): Promise<void>;
  /** Ends the grace period of a stop at once: running tasks are killed now, to run again at the next start. */
  hurry(): void;
  /**
   * Settles if the daemon can no longer keep its promises (the journal cannot
   * be written: disk full, I/O error). By then it has killed its running
   * tasks (they run again at the next start) and stopped accepting; what is
   * left is for its host to end the process.
   */
  failed: Promise<Error>;
}

const isLoopback = (host: string) =>
  host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

/** The daemon's own settings stay out of the tasks' environment (the token above all). */
function taskEnvironment(): Record<string, string> {
  // fromEntries, not assignment: a variable named __proto__ would otherwise set the prototype and vanish.
  return Object.fromEntries(
    Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined && !entry[0].startsWith('TASK_MANAGER_')),
  );
}

export async function startDaemon(overrides: Partial<DaemonConfig> = {}): Promise<RunningDaemon> {
  const config: DaemonConfig = { ...DEFAULT_CONFIG, ...overrides };
  if (!isLoopback(config.host) && config.token === undefined) {
    throw new ConfigError(
      `refusing to listen on ${config.host} without a token: anyone who can connect can run commands as this user. ` +
        'Give --token-file, or listen on 127.0.0.1 and reach it through an SSH tunnel.',
    );
  }
  // Which way tasks start is known before anything is opened: a path forced but missing is a failed start.
  let fallback: string | undefined;
  try {
    ({ fallback } = chooseSpawner());
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  if (fallback) config.log(`tasks start with Node's child_process.spawn (${fallback}); see docs/performance.md`);
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
    runAttempt: ({ id, attempt, spec, startId: start, alone, output }, signal, onSpawn) => {
      const marks = { [TASK_VARIABLE]: id, [ATTEMPT_VARIABLE]: String(attempt), [OWNER_VARIABLE]: dataDir };
      return executor.run(spec, {
        // Set after the task's own env, which must not move the marks that recovery relies on.
        env: { ...spec.env, ...marks },
        marks: Object.entries(marks).map(([name, value]) => `${name}=${value}`),
        startId: start,
        alone,
        output: outputs.paths(output),
        signal,
        onSpawn,
      });
    },
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
  };
  // HTTP's framework is loaded with the first HTTP connection: a daemon spoken to in lines starts without it.
  let http: Promise<HttpFront> | undefined;
  const httpFront = () => (http ??= import('./http/front.js').then(({ startHttpFront }) => startHttpFront(ctx)));
  const connections = new Set<Connection>();
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    if (sockets.size >= config.maxConnections) {
      socket.on('error', () => undefined);
      socket.end(encodeLine(errorResponse(undefined, requestError.TOO_MANY_CONNECTIONS(config.maxConnections))));
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined); // a reset while the protocol is told is no error; 'close' follows
    sniffProtocol(socket, (protocol, ended) => {
      if (protocol === 'http') {
        return void httpFront().then(
          (front) => {
            if (!socket.destroyed) front.accept(socket);
          },
          (error: Error) => {
            http = undefined; // tried again with the next HTTP connection
            config.log(`HTTP could not be served: ${error.stack ?? error.message}`);
            socket.destroy();
          },
        );
      }
      const connection = new Connection(socket, ctx, ended);
      connections.add(connection);
      socket.on('close', () => connections.delete(connection));
    });
  });

  try {
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolveListen();
      });
    });
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
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;

  let stopped: Promise<void> | undefined;
  let journalFailed = false;
  const stop = async () => {
    server.close();
    await scheduler.stop(config.shutdownGraceMs);
    executor.close(!journalFailed);
    gpus.close();
    stopping.abort(); // whoever still waits for a task is told the daemon is stopping
    await journal.flushed().catch(() => undefined);
    for (const connection of connections) connection.close();
    await (await http?.catch(() => undefined))?.close();
    const closing = [...sockets].map((socket) => new Promise((done) => socket.once('close', done)));
    const patience = setTimeout(() => {
      for (const socket of sockets) socket.destroy();
    }, 1000);
    await Promise.all(closing);
    clearTimeout(patience);
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
    port,
    stop: () => (stopped ??= stop()),
    hurry,
    failed,
  };
}

