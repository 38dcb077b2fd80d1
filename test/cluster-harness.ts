import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { type PostgresServer, startPostgres } from '../bench/postgres-server.js';
import type { TaskManagerClient } from '../src/client/index.js';
import { removeDir, startDaemon, type TestDaemon } from './helpers.js';

/**
 * What the cluster test files share: a real PostgreSQL per file, daemons
 * on it as operators run them, and tasks that log each of their runs so
 * that a fault test can tell a run twice at once from a run again.
 */

export const LEASE_MS = 3000;

/** Starts a PostgreSQL for the calling test file, and cleans up after each of its tests. */
export function clusterHarness() {
  let postgres: PostgresServer | undefined;
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
  const freshStore = (): Promise<string> => postgres!.createDatabase(`cluster_${++databases}`);

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

  return { postgres: () => postgres!, dirs, freshStore, startNode, clientOf, cluster };
}

/**
 * A task that logs each of its runs to `<dir>/<id>`: "start PID" then "end
 * PID". Before it starts it checks that no earlier run of it is alive, and
 * logs "overlap PID" if one is: two runs of one task at once.
 */
export function loggingTask(dir: string, id: string, seconds = 0.4) {
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

export function runsOf(dir: string, id: string): Runs {
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
export async function expectEveryTaskRanSafely(client: TaskManagerClient, dir: string, ids: string[]): Promise<{ rerun: number }> {
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

