import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskManagerClient, TaskManagerError } from '../src/index.js';
import { CMD, type RawConnection, TASK_MANAGER, startDaemon, tasksAfterARun, tempDir, type TestDaemon } from './helpers.js';

const dir = tempDir('tm-auth-');

/** A token file as a user would make it: `echo "$TOKEN" > file` (with its newline), then chmod. */
function tokenFile(name: string, token: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, `${token}\n`);
  chmodSync(path, mode);
  return path;
}

const newToken = () => randomBytes(24).toString('base64url');

/** Runs `task-manager serve` expecting it to refuse to start; it is killed if it listens instead. */
async function refusedStart(args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = await execa(process.execPath, [TASK_MANAGER, 'serve', '--port', '0', '--data-dir', tempDir('tm-data-'), ...args], {
    reject: false,
    timeout: 20_000,
    env,
  });
  return { exitCode: result.exitCode, stderr: result.stderr, stdout: result.stdout, timedOut: result.timedOut };
}

const authLine = (token: unknown, ref = 'a') => `${JSON.stringify({ op: 'auth', ref, token })}\n`;
const recordRun = (file: string, ref: string) => `${JSON.stringify({ op: 'run', ref, cmd: [CMD, '--record', file] })}\n`;

/** Resolves with the next message, or 'nothing' if the connection is closed without one. */
async function nextOrNothing(raw: RawConnection): Promise<unknown> {
  await raw.closed;
  return Promise.race([raw.next(), Promise.resolve('nothing')]);
}

describe('token authentication', () => {
  const token = newToken();
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--token-file', tokenFile('token', token)]);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  const authed = () => TaskManagerClient.connect({ port: daemon.port, token });

  it('refuses a request before auth with UNAUTHORIZED, closes the connection, and runs nothing', async () => {
    const first = join(dir, 'before-auth-1');
    const later = join(dir, 'before-auth-2');
    const raw = await daemon.raw();
    raw.socket.on('error', () => undefined);
    // Everything in one write: nothing after the refused line may be read, not even a correct auth.
    raw.send(recordRun(first, 'r1') + authLine(token) + recordRun(later, 'r2'));
    const refusal = await raw.next();
    expect(refusal).toMatchObject({ ok: false, ref: 'r1', error: { code: 'UNAUTHORIZED' } });
    expect(refusal.error.message).toMatch(/auth/);
    expect(await nextOrNothing(raw)).toBe('nothing');

    // Whatever the daemon holds, it holds only what this authenticated client gives it.
    const client = await authed();
    const { task } = await client.run({ cmd: [CMD, '--stdout', 'mine'] });
    expect(task.stdout).toBe('mine');
    const { tasks } = await client.list();
    expect(tasks.filter((t) => JSON.stringify(t.cmd).includes('before-auth'))).toEqual([]);
    expect(existsSync(first)).toBe(false);
    expect(existsSync(later)).toBe(false);
    await client.close();
  });

  it('refuses a wrong token with UNAUTHORIZED and closes the connection', async () => {
    for (const wrong of [newToken(), token.slice(0, -1), `${token}x`, token.toUpperCase() === token ? token.toLowerCase() : token.toUpperCase(), '']) {
      const raw = await daemon.raw();
      raw.socket.on('error', () => undefined);
      raw.send(`${authLine(wrong, 'bad')}{"op":"health","ref":"after"}\n`);
      const refusal = await raw.next();
      expect(refusal, `token ${JSON.stringify(wrong)}`).toMatchObject({ ok: false, ref: 'bad', error: { code: 'UNAUTHORIZED' } });
      expect(refusal.error.message).not.toContain(token);
      if (wrong !== '') expect(refusal.error.message).not.toContain(wrong);
      expect(await nextOrNothing(raw)).toBe('nothing');
    }
  });

  /**
   * Sends `first`, then in the same write a correct auth and a run that would create a file, and
   * expects exactly one UNAUTHORIZED line and the end of the connection; nothing after `first` is read.
   */
  async function refusedFirst(name: string, first: string | Buffer) {
    const marker = join(dir, `first-${name}`);
    const raw = await daemon.raw();
    raw.socket.on('error', () => undefined); // the daemon may end the connection while this is still writing
    raw.send(Buffer.concat([Buffer.from(first), Buffer.from(authLine(token, 'late-auth') + recordRun(marker, 'late-run'))]));
    const refusal = await raw.next();
    expect(refusal, name).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
    expect(refusal.error.message).toContain('"op":"auth"');
    expect(await nextOrNothing(raw)).toBe('nothing');
    return { refusal, marker };
  }

  it.each([
    ['garbage', 'hello daemon\n', 'BAD_JSON'],
    ['invalid JSON', '{"op":"auth","token":\n', 'BAD_JSON'],
    ['invalid UTF-8', Buffer.from([0xff, 0xfe, 0x0a]), 'BAD_JSON'],
    ['a line that is not an object', '[1,2,3]\n', 'BAD_REQUEST'],
    ['an unknown op', '{"op":"explode","ref":"x"}\n', 'UNKNOWN_OP'],
    ['an over-long line', `${'x'.repeat(1024 * 1024 + 10)}\n`, 'LINE_TOO_LONG'],
  ])('answers %s before auth with one UNAUTHORIZED (saying what the line was) and closes, reading nothing after it', async (name, first, code) => {
    const { refusal, marker } = await refusedFirst(name, first);
    expect(refusal.error.message).toContain(code);
    expect(await tasksAfterARun(await authed())).not.toContain(marker);
    expect(existsSync(marker)).toBe(false);
  });

  it('refuses a malformed auth with UNAUTHORIZED, echoing its ref and saying what was wrong, and closes', async () => {
    for (const [line, field] of [
      ['{"op":"auth","ref":"n","token":12345678901234567890}\n', 'token must be a string'],
      ['{"op":"auth","ref":"n"}\n', 'token is required'],
      ['{"op":"auth","ref":"n","token":"x","user":"me"}\n', 'user'],
    ] as const) {
      const { refusal, marker } = await refusedFirst(line, line);
      expect(refusal, line).toMatchObject({ ref: 'n', error: { code: 'UNAUTHORIZED' } });
      expect(refusal.error.message).toContain(field);
      expect(await tasksAfterARun(await authed())).not.toContain(marker);
    }
  });

  it('accepts the right token (the file read without its newline), after which requests work', async () => {
    const raw = await daemon.raw();
    raw.send(authLine(token, 'hello'));
    expect(await raw.next()).toEqual({ ok: true, ref: 'hello', op: 'auth' });
    raw.send(`${JSON.stringify({ op: 'run', ref: 'r', cmd: [CMD, '--stdout', 'after auth'] })}\n{"op":"health","ref":"h"}\n`);
    const answers = await raw.take(2);
    expect(answers.find((a) => a.ref === 'r')).toMatchObject({ ok: true, task: { state: 'COMPLETED', stdout: 'after auth' } });
    expect(answers.find((a) => a.ref === 'h')).toMatchObject({ ok: true, op: 'health' });
    raw.close();
  });

  it('authenticates through the client library: TaskManagerClient.connect({port, token})', async () => {
    const client = await TaskManagerClient.connect({ port: daemon.port, token });
    const { task } = await client.run({ cmd: [CMD, '--stdout', 'via client'] });
    expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'via client' });
    await client.close();

    const refused = await TaskManagerClient.connect({ port: daemon.port, token: newToken() }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(TaskManagerError);
    expect((refused as TaskManagerError).code).toBe('UNAUTHORIZED');

    const anonymous = await TaskManagerClient.connect({ port: daemon.port });
    await expect(anonymous.health()).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await anonymous.close();
  });
});

describe('token rules at start-up', () => {
  it('closes a connection that does not authenticate within --auth-timeout-ms, freeing its slot', async () => {
    const token = newToken();
    const daemon = await startDaemon(['--token-file', tokenFile('idle', token), '--auth-timeout-ms', '300', '--max-connections', '1']);
    try {
      const idle = await daemon.raw();
      expect(await idle.next()).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
      await idle.closed;
      // The daemon may see the close a moment after the client does: until then the one slot is taken.
      for (;;) {
        const next = await daemon.raw();
        next.send(`${JSON.stringify({ op: 'auth', ref: 'a', token })}\n{"op":"health","ref":"h"}\n`);
        const first = await next.next();
        if (first.error?.code === 'TOO_MANY_CONNECTIONS') {
          next.close();
          await new Promise((resolve) => setTimeout(resolve, 20));
          continue;
        }
        expect([first, await next.next()]).toMatchObject([{ ok: true, ref: 'a' }, { ok: true, ref: 'h' }]);
        next.close();
        break;
      }
    } finally {
      await daemon.stop();
    }
  });

  it('refuses a token file that group or others can read, saying to chmod it', async () => {
    for (const mode of [0o644, 0o640, 0o604]) {
      const file = tokenFile(`token-${mode.toString(8)}`, newToken(), mode);
      const result = await refusedStart(['--token-file', file]);
      expect(result.timedOut, `mode ${mode.toString(8)}: the daemon started`).toBe(false);
      expect(result.exitCode).toBe(2);
      expect(result.stderr).toContain('chmod');
      expect(result.stderr).toContain(file);
    }
  });

  it('refuses a token shorter than 16 characters', async () => {
    const result = await refusedStart(['--token-file', tokenFile('short', 'fifteen-chars-x')]);
    expect(result.timedOut).toBe(false);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/16/);
    // Padding does not count: the file is trimmed.
    const padded = await refusedStart(['--token-file', tokenFile('padded', '   short-token   \n\n')]);
    expect(padded.exitCode).toBe(2);
  });

  it('refuses --host 0.0.0.0 without a token, saying why', async () => {
    const result = await refusedStart(['--host', '0.0.0.0']);
    expect(result.timedOut, 'the daemon started listening on all interfaces without a token').toBe(false);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/token/);
    expect(result.stderr).toMatch(/run commands/);
    expect(result.stdout).not.toMatch(/listening/);
  });

  it('listens on 0.0.0.0 when given a token, and still requires it', async () => {
    const token = newToken();
    const daemon = await startDaemon(['--host', '0.0.0.0', '--token-file', tokenFile('wide', token)]);
    try {
      const addresses = ['127.0.0.1'];
      const external = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal);
      if (external) addresses.push(external.address);
      for (const host of addresses) {
        const client = await TaskManagerClient.connect({ host, port: daemon.port, token });
        expect((await client.run({ cmd: [CMD, '--stdout', host] })).task.stdout).toBe(host);
        await client.close();
      }
      const raw = await daemon.raw();
      raw.socket.on('error', () => undefined);
      raw.send('{"op":"health","ref":"anon"}\n');
      expect(await raw.next()).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
  });

  it('never shows the token: not in its output, not in a task environment, not in the journal', async () => {
    const token = newToken();
    const file = tokenFile('quiet', token);
    // Settings given as TASK_MANAGER_* variables, the token among them as a user might.
    const env = { TASK_MANAGER_TOKEN_FILE: file, TASK_MANAGER_TOKEN: token, TASK_MANAGER_CONCURRENCY: '3' };
    const daemon = await startDaemon([], { env });
    let stdout = '';
    daemon.process.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    try {
      // The variable was honoured: the daemon wants the token.
      const raw = await daemon.raw();
      raw.socket.on('error', () => undefined);
      raw.send(`${authLine(`${token.slice(0, 10)}-wrong`)}{"op":"health"}\n`);
      expect(await raw.next()).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });

      const client = await TaskManagerClient.connect({ port: daemon.port, token });
      for (const name of Object.keys(env)) {
        const { task } = await client.run({ cmd: [CMD, '--print-env', name] });
        expect(task.stdout, `${name} reached the task`).toBe('\n');
      }
      const { task } = await client.run({ cmd: 'env' });
      expect(task.state).toBe('COMPLETED');
      expect(task.stdout).toContain('PATH=');
      const dump = task.stdout ?? '';
      expect(dump).not.toContain(token);
      expect(dump).not.toContain(file);
      const inherited = dump
        .split('\n')
        .map((line) => line.split('=')[0]!)
        .filter((name) => name.startsWith('TASK_MANAGER_'));
      // Only what the daemon sets for the task itself.
      expect(inherited.filter((name) => !['TASK_MANAGER_TASK_ID', 'TASK_MANAGER_ATTEMPT', 'TASK_MANAGER_JOURNAL'].includes(name))).toEqual([]);
      await client.close();
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
    expect(daemon.stderr()).not.toContain(token);
    expect(stdout).not.toContain(token);
    const files = (d: string): string[] =>
      readdirSync(d).flatMap((name) => (statSync(join(d, name)).isDirectory() ? files(join(d, name)) : [join(d, name)]));
    for (const path of files(daemon.dataDir)) expect(readFileSync(path, 'latin1'), path).not.toContain(token);
  });
});
