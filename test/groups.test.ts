import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskManagerClient, TaskManagerError } from '../src/index.js';
import { http } from './http-client.js';
import { CMD, untilExists, EventLog, TASK_MANAGER, eventually, isGone, removeDir, startDaemon, tempDir, within, type TestDaemon } from './helpers.js';

/**
 * Protocol 1.1 over real daemons: groups and their limits, pause and
 * resume, restart, remove and edit, all of it across a restart of the
 * daemon; GPU figures from an nvidia-smi on PATH; and the exit codes of
 * `task-manager wait`.
 */

const daemons: TestDaemon[] = [];
const clients: TaskManagerClient[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(daemons.splice(0).map((daemon) => daemon.kill()));
  dirs.splice(0).forEach(removeDir);
});

async function daemonAt(dataDir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ daemon: TestDaemon; client: TaskManagerClient; events: EventLog }> {
  const daemon = await startDaemon(args, { dataDir, env });
  daemons.push(daemon);
  const client = await daemon.client();
  const events = await EventLog.open(daemon);
  clients.push(client, events.client);
  return { daemon, client, events };
}

async function stopped(daemon: TestDaemon): Promise<void> {
  expect(await daemon.stop()).toBe(0);
  daemons.splice(daemons.indexOf(daemon), 1);
}

function dir(prefix: string): string {
  const path = tempDir(prefix);
  dirs.push(path);
  return path;
}

/** A fresh folder for a test, and the data dir of its daemons inside it. */
function workDir(prefix: string): { work: string; dataDir: string } {
  const work = dir(prefix);
  return { work, dataDir: join(work, 'data') };
}

const refusal = (promise: Promise<unknown>) => promise.then(
  () => {
    throw new Error('accepted');
  },
  (error: TaskManagerError) => ({ code: error.code, message: error.reason }),
);

describe('groups', () => {
  it('limit their own tasks while the default group runs alongside, and a raised limit starts more at once', async () => {
    const work = dir('tm-groups-');
    const { client, events } = await daemonAt(join(work, 'data'), ['--concurrency', '2']);
    const gate = join(work, 'gate');
    expect(await refusal(client.submit({ id: 'early', cmd: 'true', group: 'gpu' }))).toMatchObject({ code: 'UNKNOWN_GROUP', message: expect.stringContaining('"gpu"') });
    expect(await client.setGroup('gpu', 1)).toEqual({ name: 'gpu', concurrency: 1, running: 0, queued: 0, paused: false });
    for (const id of ['g1', 'g2', 'g3']) await client.submit({ id, cmd: untilExists(gate), group: 'gpu' });
    for (const id of ['d1', 'd2']) await client.submit({ id, cmd: untilExists(gate) });
    await Promise.all(['g1', 'd1', 'd2'].map((id) => events.state(id, 'RUNNING')));
    expect(await client.groups()).toEqual([
      { name: 'default', concurrency: 2, running: 2, queued: 0, paused: false },
      { name: 'gpu', concurrency: 1, running: 1, queued: 2, paused: false },
    ]);
    expect((await client.status('g2')).state).toBe('QUEUED');
    expect((await client.stats()).concurrency).toEqual({ limit: 3, running: 3 });
    await client.setGroup('gpu', 3);
    await Promise.all(['g2', 'g3'].map((id) => events.state(id, 'RUNNING')));
    writeFileSync(gate, '');
    for (const id of ['g1', 'g2', 'g3', 'd1', 'd2']) expect((await client.wait(id)).task).toMatchObject({ state: 'COMPLETED', group: id.startsWith('g') ? 'gpu' : 'default' });
  });

  it('pause holds starts (running tasks go on), and groups, limits and paused flags survive a restart', async () => {
    const { work, dataDir } = workDir('tm-pause-');
    const first = await daemonAt(dataDir);
    const gate = join(work, 'gate');
    await first.client.setGroup('batch', 2);
    await first.client.submit({ id: 'running', cmd: untilExists(gate), group: 'batch' });
    await first.events.state('running', 'RUNNING');
    expect(await first.client.pause('batch')).toEqual([{ name: 'batch', concurrency: 2, running: 1, queued: 0, paused: true }]);
    await first.client.submit({ id: 'held', cmd: 'echo held', group: 'batch' });
    expect((await first.client.run({ id: 'other', cmd: 'echo other' })).task.state).toBe('COMPLETED');
    expect((await first.client.status('held')).state).toBe('QUEUED');
    writeFileSync(gate, '');
    expect((await first.client.wait('running')).task.state).toBe('COMPLETED');
    expect(await refusal(first.client.pause('nope'))).toMatchObject({ code: 'UNKNOWN_GROUP' });
    await stopped(first.daemon);

    const second = await daemonAt(dataDir, ['--concurrency', '4']);
    expect(await second.client.groups()).toEqual([
      { name: 'default', concurrency: 4, running: 0, queued: 0, paused: false },
      { name: 'batch', concurrency: 2, running: 0, queued: 1, paused: true },
    ]);
    expect((await second.client.wait('held', 300)).waited_out).toBe(true);
    // Without a group, every group is paused, and resumed.
    expect((await second.client.pause()).map((group) => group.paused)).toEqual([true, true]);
    await second.client.submit({ id: 'held-too', cmd: 'echo too' });
    expect((await second.client.resume()).map((group) => group.paused)).toEqual([false, false]);
    expect((await second.client.wait('held')).task).toMatchObject({ state: 'COMPLETED', stdout: 'held\n' });
    expect((await second.client.wait('held-too')).task.state).toBe('COMPLETED');
  });
});

describe('restart, remove and edit', () => {
  it('restart runs a failed task again with the tasks canceled because it failed, and its count survives a restart', async () => {
    const { work, dataDir } = workDir('tm-restart-');
    const fixed = join(work, 'fixed');
    const { client, ...first } = await daemonAt(dataDir);
    await client.submit({ id: 'build', cmd: `[ -e '${fixed}' ] && echo built` });
    await client.submit({ id: 'test', cmd: 'echo tested', depends_on: ['build'] });
    expect((await client.wait('test')).task).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    expect(await refusal(client.restart('test'))).toMatchObject({ code: 'NOT_RESTARTABLE', message: expect.stringContaining('"build"') });
    writeFileSync(fixed, '');
    const restarted = await client.restart('build');
    expect(restarted).toMatchObject({ id: 'build', attempts: 0, restarts: 1, exit_code: null, stdout: '', error: null });
    expect(['QUEUED', 'RUNNING']).toContain(restarted.state);
    expect((await client.wait('build')).task).toMatchObject({ state: 'COMPLETED', stdout: 'built\n', attempts: 1, restarts: 1 });
    expect((await client.wait('test')).task).toMatchObject({ state: 'COMPLETED', stdout: 'tested\n', restarts: 1 });
    await client.submit({ id: 'long', cmd: untilExists(join(work, 'never')) });
    await first.events.state('long', 'RUNNING');
    expect(await refusal(client.restart('long'))).toMatchObject({ code: 'NOT_RESTARTABLE', message: expect.stringContaining('RUNNING') });
    await client.cancel('long');
    await stopped(first.daemon);

    const second = await daemonAt(dataDir);
    expect(await second.client.status('build')).toMatchObject({ state: 'COMPLETED', restarts: 1, stdout: 'built\n' });
    expect((await second.client.restart('build')).restarts).toBe(2);
    expect((await second.client.wait('build')).task).toMatchObject({ state: 'COMPLETED', stdout: 'built\n', restarts: 2 });
  });

  it('remove kills a running task, cancels its dependents, and the task stays forgotten after a restart', async () => {
    const { work, dataDir } = workDir('tm-remove-');
    const pidFile = join(work, 'pid');
    const { client, ...first } = await daemonAt(dataDir);
    await client.submit({ id: 'upstream', cmd: [CMD, '--pid-file', pidFile, '--sleep', '60000'] });
    await client.submit({ id: 'downstream', cmd: 'true', depends_on: ['upstream'] });
    await first.events.state('upstream', 'RUNNING');
    await eventually(() => existsSync(pidFile));
    const removed = await client.remove('upstream');
    expect(removed).toMatchObject({ id: 'upstream', state: 'CANCELED', error: { code: 'CANCELED' } });
    await eventually(() => isGone(Number(readFileSync(pidFile, 'utf8'))));
    expect(await refusal(client.status('upstream'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await client.status('downstream')).toMatchObject({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED' } });
    expect(await refusal(client.remove('upstream'))).toMatchObject({ code: 'NOT_FOUND' });
    // A finished task with a finished dependent: removed, the dependent keeps its record.
    await client.remove('downstream');
    // Its id used again at once: the new task's output is its own, whatever the removal deletes.
    await client.run({ id: 'again', cmd: 'echo first' });
    const [gone, rerun] = await Promise.all([client.remove('again'), client.run({ id: 'again', cmd: 'sleep 0.3; echo second' })]);
    expect(gone.stdout).toBe('first\n');
    expect(rerun.task.stdout).toBe('second\n');
    expect(await client.status('again')).toMatchObject({ stdout: 'second\n' });
    await client.remove('again');
    expect((await client.list()).total).toBe(0);
    await stopped(first.daemon);

    const second = await daemonAt(dataDir);
    expect(await refusal(second.client.status('upstream'))).toMatchObject({ code: 'NOT_FOUND' });
    expect((await second.client.list()).total).toBe(0);
    // Its id is free again.
    expect((await second.client.run({ id: 'upstream', cmd: 'echo again' })).task).toMatchObject({ state: 'COMPLETED', stdout: 'again\n', restarts: 0 });
  });

  it('edit changes a task not yet started and refuses one that has', async () => {
    const work = dir('tm-edit-');
    const { client } = await daemonAt(join(work, 'data'));
    await client.setGroup('later', 1);
    await client.pause('later');
    await client.submit({ id: 'e', cmd: 'echo old', group: 'later', delay_ms: 60_000 });
    const edited = await client.edit('e', { cmd: ['echo', 'new'], priority: 7, delay_ms: 0, group: 'default' });
    expect(edited).toMatchObject({ cmd: ['echo', 'new'], priority: 7, group: 'default' });
    expect((await client.wait('e')).task).toMatchObject({ state: 'COMPLETED', stdout: 'new\n' });
    expect(await refusal(client.edit('e', { priority: 1 }))).toMatchObject({ code: 'NOT_EDITABLE', message: expect.stringContaining('COMPLETED') });
    expect(await refusal(client.edit('nobody', { priority: 1 }))).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('stats.gpu', () => {
  function fakeNvidiaSmi(script: string): string {
    const bin = join(dir('tm-gpu-'), 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'nvidia-smi'), `#!/bin/sh\n${script}\n`);
    chmodSync(join(bin, 'nvidia-smi'), 0o755);
    return bin;
  }

  it('reports each GPU that nvidia-smi on PATH lists', async () => {
    const bin = fakeNvidiaSmi('echo "0, NVIDIA A100-SXM4-40GB, 35, 1024, 40960"\necho "1, Tesla T4, [N/A], 0, 15360"');
    const { client } = await daemonAt(join(dir('tm-gpu-data-'), 'data'), [], { PATH: `${bin}:${process.env.PATH}` });
    expect((await client.stats()).gpu).toEqual([
      { index: 0, name: 'NVIDIA A100-SXM4-40GB', utilization_percent: 35, memory_used_bytes: 1024 * 2 ** 20, memory_total_bytes: 40960 * 2 ** 20 },
      { index: 1, name: 'Tesla T4', utilization_percent: null, memory_used_bytes: 0, memory_total_bytes: 15360 * 2 ** 20 },
    ]);
  });

  it('is [] without nvidia-smi', async () => {
    const { client } = await daemonAt(join(dir('tm-gpu-data-'), 'data'), [], { PATH: '/usr/bin:/bin' });
    expect((await client.stats()).gpu).toEqual([]);
  });

  it('never waits long on an nvidia-smi that hangs, and kills it', async () => {
    const work = dir('tm-gpu-hang-');
    const pidFile = join(work, 'pid');
    const bin = fakeNvidiaSmi(`echo $$ > '${pidFile}'\nexec sleep 600`);
    const { client } = await daemonAt(join(work, 'data'), [], { PATH: `${bin}:${process.env.PATH}` });
    for (let i = 0; i < 3; i++) {
      const asked = Date.now();
      expect((await within(client.stats(), 5000, 'stats')).gpu).toEqual([]);
      // The first waits for the first reading, less than a second; the others not at all. (Wide margins: a loaded machine.)
      expect(Date.now() - asked).toBeLessThan(2500);
    }
    await eventually(() => existsSync(pidFile));
    await eventually(() => isGone(Number(readFileSync(pidFile, 'utf8'))), 20_000);
  });
});

describe('task-manager wait', () => {
  it('exits as the task did: its code, 124 timed out, 125 canceled, 75 when --timeout-ms runs out', async () => {
    const work = dir('tm-wait-');
    const { daemon, client } = await daemonAt(join(work, 'data'));
    const wait = (...args: string[]) => execa(process.execPath, [TASK_MANAGER, 'wait', ...args, '--port', String(daemon.port)], { reject: false });
    await client.submit({ id: 'ok', cmd: 'true' });
    await client.submit({ id: 'seven', cmd: 'exit 7' });
    await client.submit({ id: 'slow', cmd: 'sleep 30', timeout_ms: 200 });
    await client.submit({ id: 'doomed', cmd: untilExists(join(work, 'never')) });
    await client.cancel('doomed');
    expect((await wait('ok')).exitCode).toBe(0);
    expect((await wait('seven')).exitCode).toBe(7);
    expect((await wait('slow')).exitCode).toBe(124);
    expect((await wait('doomed')).exitCode).toBe(125);
    await client.submit({ id: 'forever', cmd: untilExists(join(work, 'never')) });
    const out = await wait('forever', '--timeout-ms', '200');
    expect(out.exitCode).toBe(75);
    expect(out.stdout).toContain('still');
    expect((await wait('nobody')).exitCode).toBe(1);
    await client.cancel('forever');
  });

  it('the management subcommands print JSON with --json and name what was wrong', async () => {
    const work = dir('tm-cli-');
    const { daemon, client } = await daemonAt(join(work, 'data'));
    const cli = (...args: string[]) => execa(process.execPath, [TASK_MANAGER, ...args], { reject: false, env: { TASK_MANAGER_PORT: String(daemon.port), NO_COLOR: '1' } });
    expect(JSON.parse((await cli('set-group', 'gpu', '2', '--json')).stdout)).toEqual({ group: { name: 'gpu', concurrency: 2, running: 0, queued: 0, paused: false } });
    expect(JSON.parse((await cli('pause', 'gpu', '--json')).stdout)).toMatchObject({ group: { name: 'gpu', paused: true } });
    expect(JSON.parse((await cli('groups', '--json')).stdout).groups).toHaveLength(2);
    expect((await cli('submit', '--group', 'gpu', '--id', 'g', '--', 'echo', 'hi')).exitCode).toBe(0);
    expect(JSON.parse((await cli('edit', 'g', '--priority', '4', '--json')).stdout).task).toMatchObject({ priority: 4 });
    expect((await cli('resume', 'gpu')).stdout).toMatch(/^gpu +2 +\d +\d +running$/m);
    expect((await cli('wait', 'g')).exitCode).toBe(0);
    const log = await cli('log', 'g');
    expect(log.stdout).toBe('hi');
    expect(JSON.parse((await cli('restart', 'g', '--json')).stdout).task).toMatchObject({ id: 'g', restarts: 1 });
    expect((await cli('wait', 'g')).exitCode).toBe(0);
    await client.run({ id: 'bad', cmd: 'exit 3' });
    await client.run({ id: 'bad-gpu', cmd: 'exit 3', group: 'gpu' });
    expect((await cli('list', '--group', 'gpu', '--state', 'FAILED')).stdout).toMatch(/^bad-gpu +FAILED +gpu /m);
    expect((await cli('clean', '--state', 'FAILED', '--group', 'gpu')).stdout).toBe('removed 1 finished task');
    expect((await cli('status', 'bad')).exitCode).toBe(0);
    expect((await cli('clean', '--state', 'FAILED')).stdout).toBe('removed 1 finished task');
    expect(JSON.parse((await cli('remove', 'g', '--json')).stdout).task).toMatchObject({ id: 'g' });
    expect((await cli('list', '--json')).stdout).toBe('{"tasks":[],"total":0}');
    const unknown = await cli('submit', '--group', 'nope', '--', 'true');
    expect(unknown).toMatchObject({ exitCode: 1, stderr: expect.stringMatching(/^UNKNOWN_GROUP: group "nope" does not exist; make it first with set_group/) });
    expect(await cli('clean', '--state', 'RUNNING')).toMatchObject({ exitCode: 2, stderr: expect.stringMatching(/--state .*'RUNNING' is invalid\. clean removes finished tasks only/) });
    expect((await cli('set-group', 'gpu', '0')).exitCode).toBe(2);
    expect(JSON.parse((await cli('parallel', '3', '--json')).stdout).group).toMatchObject({ name: 'default', concurrency: 3 });
    expect(JSON.parse((await cli('parallel', '1', '-g', 'gpu', '--json')).stdout).group).toMatchObject({ name: 'gpu', concurrency: 1 });
    expect((await cli('edit', 'g')).stderr).toContain('nothing to change');
    const bash = (await cli('completion', 'bash')).stdout;
    expect(bash).toContain('complete -o default -F _task_manager task-manager');
    expect(bash).toMatch(/compgen -W "serve run submit add .*restart edit remove rm clean groups set-group set_group parallel pause resume/);
    expect((await cli('completion', 'fish')).stdout).toContain("complete -c task-manager -n '__fish_seen_subcommand_from list' -l oldest");
    expect((await cli('completion', 'tcsh')).exitCode).toBe(2);
  });
});

describe('groups, restart, edit and remove over HTTP', () => {
  it('answer as the line protocol does, with the statuses of their errors', async () => {
    const { daemon } = await daemonAt(join(dir('tm-http-groups-'), 'data'));
    const call = (method: string, path: string, body?: unknown) => http(daemon.port, method, path, body === undefined ? {} : { body });
    expect(await call('PUT', '/groups/gpu', { concurrency: 2 })).toMatchObject({ status: 200, json: { ok: true, group: { name: 'gpu', concurrency: 2 } } });
    expect((await call('GET', '/groups')).json.groups.map((group: { name: string }) => group.name)).toEqual(['default', 'gpu']);
    expect(await call('POST', '/pause', { group: 'gpu' })).toMatchObject({ status: 200, json: { group: { name: 'gpu', paused: true } } });
    expect(await call('POST', '/pause', { group: 'nope' })).toMatchObject({ status: 400, json: { ok: false, error: { code: 'UNKNOWN_GROUP' } } });
    expect((await call('POST', '/tasks', { id: 'held', cmd: 'echo held', group: 'gpu' })).status).toBe(201);
    expect(await call('PATCH', '/tasks/held', { cmd: 'echo edited', priority: 3 })).toMatchObject({ status: 200, json: { task: { cmd: 'echo edited', priority: 3 } } });
    expect((await call('GET', '/tasks?group=gpu&order=newest')).json.tasks.map((task: { id: string }) => task.id)).toEqual(['held']);
    expect((await call('POST', '/resume')).json.groups).toHaveLength(2);
    expect((await call('GET', '/tasks/held/wait')).json.task).toMatchObject({ state: 'COMPLETED', stdout: 'edited\n' });
    expect(await call('PATCH', '/tasks/held', { priority: 1 })).toMatchObject({ status: 409, json: { error: { code: 'NOT_EDITABLE' } } });
    expect(await call('POST', '/tasks/held/restart')).toMatchObject({ status: 200, json: { task: { id: 'held', restarts: 1 } } });
    expect((await call('GET', '/tasks/held/wait')).json.task).toMatchObject({ state: 'COMPLETED', restarts: 1 });
    expect(await call('DELETE', '/tasks/held')).toMatchObject({ status: 200, json: { task: { id: 'held', stdout: 'edited\n' } } });
    expect((await call('GET', '/tasks/held')).status).toBe(404);
    expect((await call('POST', '/tasks', { id: 'running', cmd: untilExists(join(dir('tm-http-gate-'), 'never')) })).status).toBe(201);
    expect(await call('POST', '/tasks/running/restart')).toMatchObject({ status: 409, json: { error: { code: 'NOT_RESTARTABLE' } } });
    expect((await call('DELETE', '/tasks/running')).json.task).toMatchObject({ state: 'CANCELED' });
  });

  it('a connection that closes its side before sending a byte is ended by the daemon too', async () => {
    const { daemon } = await daemonAt(join(dir('tm-half-close-'), 'data'));
    const socket = connect({ host: '127.0.0.1', port: daemon.port });
    await new Promise((resolve) => socket.once('connect', resolve));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.end();
    await within(closed, 10_000, 'the daemon ending a connection that sent nothing');
  });
});
