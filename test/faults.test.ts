import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskManagerClient, TaskRecord } from '../src/index.js';
import { CMD, childrenOf, eventually, removeDir, startDaemon, tempDir, within, type TestDaemon } from './helpers.js';

/**
 * Everyday faults, done the way operators and tasks do them: signals to the
 * daemon's whole process group (Ctrl-C, `kill -TERM -PGID`), to every process
 * of the service (systemd's KillMode=control-group), and tasks that kill or
 * stop the process that supervises them. In every case no task fails because
 * of it, and the record counts exactly the starts that happened.
 */

let work: string;
const daemons: TestDaemon[] = [];
const clients: TaskManagerClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  for (const daemon of daemons.splice(0)) {
    if (daemon.process.exitCode === null && daemon.process.signalCode === null) await daemon.kill();
    for (const pid of taskProcesses(daemon.dataDir)) signalIfThere(pid, 'SIGKILL'); // what the kill left running
    removeDir(daemon.dataDir);
  }
  if (work) removeDir(work);
});

/** Signals a process listed a moment ago, which may have ended since (a task's short-lived `date`, say). */
function signalIfThere(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

async function serve(args: string[], dataDir?: string): Promise<{ daemon: TestDaemon; client: TaskManagerClient }> {
  const daemon = await startDaemon(args, { detached: true, ...(dataDir ? { dataDir } : {}) });
  daemons.push(daemon);
  const client = await daemon.client();
  clients.push(client);
  return { daemon, client };
}

/** Every start and end recorded by `bin/cmd --record`, per task. */
function executions(records: string): { starts: Map<string, number>; ends: Map<string, number> } {
  const starts = new Map<string, number>();
  const ends = new Map<string, number>();
  const text = existsSync(records) ? readFileSync(records, 'utf8') : '';
  for (const line of text.split('\n').filter(Boolean)) {
    const { event, task } = JSON.parse(line) as { event: string; task: string };
    const counter = event === 'start' ? starts : event === 'end' ? ends : undefined;
    counter?.set(task, (counter.get(task) ?? 0) + 1);
  }
  return { starts, ends };
}

const startsSoFar = (records: string) => [...executions(records).starts.values()].reduce((a, b) => a + b, 0);

/** A task that sleeps for a minute on its first run and ends at once when run again. */
function longOnFirstRun(id: string, records: string): string {
  const marker = join(work, `${id}.ran`);
  return `if [ -e ${marker} ]; then exec ${CMD} --record ${records}; fi; touch ${marker}; exec ${CMD} --record ${records} --sleep 60000`;
}

/** Pids of the processes a daemon started for its tasks (they carry its data dir as their mark). */
function taskProcesses(dataDir: string): number[] {
  if (!existsSync(dataDir)) return []; // removed already: the daemon before a restart shares it
  const mark = `TASK_MANAGER_JOURNAL=${realpathSync(dataDir)}`;
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        return readFileSync(`/proc/${name}/environ`, 'latin1').split('\0').includes(mark);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function expectTruthfulRecord(task: TaskRecord, starts: number | undefined): void {
  expect(task.state, `${task.id}: ${JSON.stringify(task.error)}`).toBe('COMPLETED');
  expect(task.attempts + (task.interrupted ?? 0), `${task.id}: attempts + interrupted = real starts`).toBe(starts);
}

/** Restarts on the data dir: each task ran twice, the first run interrupted, and the record says exactly that. */
async function expectRanAgainAfterRestart(dataDir: string, ids: string[]): Promise<void> {
  const again = await serve([], dataDir);
  for (const id of ids) {
    const { task } = await again.client.wait(id);
    expectTruthfulRecord(task, 2);
    expect(task.interrupted, id).toBe(1);
    expect(task.attempts, id).toBe(1);
  }
}

describe('stop signals to the whole process group', () => {
  it('Ctrl-C (SIGINT to the group) is the graceful stop: running tasks finish and are COMPLETED after the next start', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve([]);
    const ids = ['a', 'b', 'c'];
    for (const id of ids) await client.submit({ id, cmd: [CMD, '--record', records, '--sleep', '1500'] });
    await eventually(() => startsSoFar(records) === 3);

    process.kill(-daemon.process.pid!, 'SIGINT');
    expect(await within(daemon.exited, 20_000, 'the daemon to stop')).toBe(0);
    expect(daemon.stderr()).toContain('SIGINT: stopping');
    expect(daemon.stderr()).not.toContain('executor process ended');

    const again = await serve([], daemon.dataDir);
    for (const id of ids) {
      const task = await again.client.status(id);
      expectTruthfulRecord(task, executions(records).starts.get(id));
      expect(task.interrupted).toBeUndefined();
    }
    expect([...executions(records).ends.values()]).toEqual([1, 1, 1]);
  });

  it('SIGTERM to the group: a task that outlives the grace period is INTERRUPTED and runs again after restart, without using a retry', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve(['--shutdown-grace-ms', '300']);
    const ids = ['x', 'y'];
    for (const id of ids) await client.submit({ id, cmd: longOnFirstRun(id, records) });
    await eventually(() => startsSoFar(records) === 2);

    process.kill(-daemon.process.pid!, 'SIGTERM');
    expect(await within(daemon.exited, 20_000, 'the daemon to stop')).toBe(0);

    await expectRanAgainAfterRestart(daemon.dataDir, ids);
  });

  it('Ctrl-C twice kills running tasks at once; they are INTERRUPTED and run again after restart', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve(['--shutdown-grace-ms', '120000']);
    await client.submit({ id: 'long', cmd: longOnFirstRun('long', records) });
    await eventually(() => startsSoFar(records) === 1);

    const began = Date.now();
    process.kill(-daemon.process.pid!, 'SIGINT');
    await eventually(() => daemon.stderr().includes('SIGINT: stopping'));
    process.kill(-daemon.process.pid!, 'SIGINT');
    expect(await within(daemon.exited, 30_000, 'the daemon to stop')).toBe(0);
    expect(Date.now() - began).toBeLessThan(30_000); // far from the 120 s grace period
    expect(daemon.stderr()).toContain('killing running tasks now');

    await expectRanAgainAfterRestart(daemon.dataDir, ['long']);
  });

  it("SIGTERM to every process of the service (systemd's KillMode=control-group): tasks are INTERRUPTED, not FAILED", async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve([]);
    const ids = ['s1', 's2', 's3'];
    for (const id of ids) await client.submit({ id, cmd: longOnFirstRun(id, records) });
    // A program that handles SIGTERM and exits 143, as a JVM or a shell trap does.
    const marker = join(work, 'trapper.ran');
    const trapper = `if [ -e ${marker} ]; then exec ${CMD} --record ${records}; fi; touch ${marker}; trap 'exit 143' TERM; ${CMD} --record ${records} --sleep 60000 & wait`;
    await client.submit({ id: 'trapper', cmd: trapper });
    ids.push('trapper');
    await eventually(() => startsSoFar(records) === 4);

    const everyone = [daemon.process.pid!, ...childrenOf(daemon.process.pid!), ...taskProcesses(daemon.dataDir)];
    expect(everyone.length).toBeGreaterThanOrEqual(1 + 1 + 3);
    for (const pid of everyone) signalIfThere(pid, 'SIGTERM');
    expect(await within(daemon.exited, 20_000, 'the daemon to stop')).toBe(0);

    await expectRanAgainAfterRestart(daemon.dataDir, ids);
  });
});

describe('a task that kills or stops the process supervising it', () => {
  it('kill -9 $PPID: no task fails; the attempts on that executor are interrupted and run again', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve([]);
    const sleepers = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6'];
    for (const id of sleepers) await client.submit({ id, cmd: [CMD, '--record', records, '--sleep', '3000'] });
    await eventually(() => startsSoFar(records) === sleepers.length);
    const marker = join(work, 'killed-once');
    await client.submit({ id: 'killer', cmd: `[ -e ${marker} ] && exit 0; touch ${marker}; kill -9 $PPID; sleep 30` });

    const finals = await Promise.all([...sleepers, 'killer'].map(async (id) => (await client.wait(id)).task));
    for (const task of finals) expect(task.state, `${task.id}: ${JSON.stringify(task.error)}`).toBe('COMPLETED');
    const killer = finals.find((task) => task.id === 'killer')!;
    expect(killer.interrupted).toBe(1);
    expect(killer.attempts).toBe(1);
    // At least one neighbour shared the killed executor: it ran again instead of failing.
    const neighbours = finals.filter((task) => task.id !== 'killer');
    expect(neighbours.some((task) => task.interrupted === 1)).toBe(true);
    const { starts } = executions(records);
    for (const task of neighbours) expectTruthfulRecord(task, starts.get(task.id));
    expect(daemon.stderr()).toContain('an executor process ended (SIGKILL)');
  });

  it('a task that kills its executor every time ends FAILED (KILLED) after 3 tries instead of looping', async () => {
    work = tempDir('tm-faults-');
    const { client } = await serve([]);
    const { task } = await within(client.run({ id: 'always', cmd: 'echo before; sleep 1; kill -9 $PPID; sleep 30' }), 60_000, 'the run to end');
    expect(task.state).toBe('FAILED');
    expect(task.stdout).toBe('before\n'); // what it wrote (and its executor took in) counts, though its executor never reported
    expect(task.error?.code).toBe('KILLED');
    expect(task.error?.message).toContain('3 attempts in a row');
    expect(task.interrupted).toBe(2);
    expect(task.attempts).toBe(1);
  });

  it('kill -STOP $PPID: timeouts and cancel still hold, the stopped executor is replaced, and the stopper runs again', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve(['--kill-grace-ms', '500']);
    const timed = ['t1', 't2', 't3'];
    for (const id of timed) await client.submit({ id, cmd: [CMD, '--record', records, '--sleep', '60000'], timeout_ms: 2500 });
    await client.submit({ id: 'victim', cmd: [CMD, '--record', records, '--sleep', '60000'] });
    await eventually(() => startsSoFar(records) === 4);
    const marker = join(work, 'stopped-once');
    await client.submit({ id: 'stopper', cmd: `[ -e ${marker} ] && exit 0; touch ${marker}; kill -STOP $PPID; sleep 60` });
    await eventually(() => existsSync(marker));

    const canceled = await within(client.cancel('victim'), 10_000, 'cancel while an executor is stopped');
    expect(canceled.state).toBe('CANCELED');
    for (const id of timed) {
      const { task } = await within(client.wait(id), 30_000, `${id} to time out`);
      expect(task.state).toBe('FAILED');
      expect(task.error?.code).toBe('TIMEOUT');
    }
    const { task: stopper } = await within(client.wait('stopper'), 30_000, 'the stopper to run again');
    expect(stopper.state).toBe('COMPLETED');
    expect(stopper.interrupted).toBe(1);
    expect(daemon.stderr()).toMatch(/an executor process \(pid \d+\) is stopped; killing it/);
  });

  it('executors stopped before they start what they were sent: the tasks start on new ones, and count one attempt each', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve([]);
    await client.run({ cmd: 'true' }); // the executor processes are up
    const executors = childrenOf(daemon.process.pid!);
    expect(executors.length).toBeGreaterThan(0);
    for (const pid of executors) process.kill(pid, 'SIGSTOP');
    // Sent to stopped executors, these never start there: no pid ever comes back, and no marked process is found.
    const ids = ['s1', 's2', 's3', 's4'];
    for (const id of ids) await client.submit({ id, cmd: [CMD, '--record', records] });
    const finals = await Promise.all(ids.map(async (id) => (await within(client.wait(id), 30_000, `${id} to run on a new executor`)).task));
    const { starts } = executions(records);
    for (const task of finals) {
      expectTruthfulRecord(task, starts.get(task.id));
      expect({ id: task.id, attempts: task.attempts, interrupted: task.interrupted }).toEqual({ id: task.id, attempts: 1, interrupted: undefined });
    }
    expect(daemon.stderr()).toMatch(/an executor process \(pid \d+\) is stopped; killing it/);
  });

  it('a graceful stop ends within its grace period even when an executor is stopped', async () => {
    work = tempDir('tm-faults-');
    const records = join(work, 'records.ndjson');
    const { daemon, client } = await serve(['--shutdown-grace-ms', '500', '--kill-grace-ms', '500']);
    await client.submit({ id: 'busy', cmd: longOnFirstRun('busy', records) });
    await eventually(() => startsSoFar(records) === 1);
    const marker = join(work, 'stopped-once');
    await client.submit({ id: 'stopper', cmd: `[ -e ${marker} ] && exit 0; touch ${marker}; kill -STOP $PPID; sleep 60` });
    await eventually(() => existsSync(marker));

    const began = Date.now();
    process.kill(daemon.process.pid!, 'SIGTERM');
    expect(await within(daemon.exited, 20_000, 'the daemon to stop')).toBe(0);
    expect(Date.now() - began).toBeLessThan(15_000);

    const again = await serve([], daemon.dataDir);
    for (const id of ['busy', 'stopper']) {
      const { task } = await again.client.wait(id);
      expect(task.state, id).toBe('COMPLETED');
      expect(task.interrupted, id).toBe(1);
    }
  });
});
