import { spawn } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CMD, untilExists, TASK_MANAGER, removeDir, startDaemon, tempDir, type TestDaemon } from './helpers.js';

/** Runs `bin/task-manager` as a real process against the daemon on `port` (given through the environment, as a user might). */
function cli(port: number, args: string[], env: NodeJS.ProcessEnv = {}) {
  return execa(process.execPath, [TASK_MANAGER, ...args], { reject: false, env: { TASK_MANAGER_PORT: String(port), ...env } });
}

/** A port that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('task-manager client commands', () => {
  let daemon: TestDaemon;
  const run = (...args: string[]) => cli(daemon.port, args);

  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
    removeDir(daemon.dataDir);
  });

  it('run prints the task\'s stdout and stderr and exits with its exit code', async () => {
    const result = await run('run', '--', CMD, '--stdout', 'hello', '--stderr', 'oops', '--exit', '3');
    expect(result.exitCode).toBe(3);
    expect(result.stdout).toBe('hello');
    expect(result.stderr).toBe('oops');

    const shell = await run('run', '--shell', 'echo hi | wc -c');
    expect(shell.exitCode).toBe(0);
    expect(shell.stdout.trim()).toBe('3');
  });

  it('run passes --env and --stdin, and options after the program name belong to the program', async () => {
    const result = await run('run', '--env', 'GREETING=a=b', '--stdin', 'from stdin ', CMD, '--echo-stdin', '--print-env', 'GREETING');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('from stdin a=b');
  });

  it('run exits 124 and says why when the task timed out', async () => {
    const result = await run('run', '--timeout-ms', '300', '--', CMD, '--sleep', '60000');
    expect(result.exitCode).toBe(124);
    expect(result.stderr).toContain('TIMEOUT');
  });

  it('run says once how a canceled task ended, and exits 125', async () => {
    const submitted = await run('submit', '--id', 'cli-doomed', '--delay-ms', '60000', '--', 'true');
    expect(submitted.exitCode).toBe(0);
    const waiting = run('run', '--id', 'cli-doomed', '--delay-ms', '60000', '--', 'true');
    await run('cancel', 'cli-doomed');
    const result = await waiting;
    expect(result.exitCode).toBe(125);
    expect(result.stderr).toContain('task cli-doomed CANCELED (canceled before it started)');
    expect(result.stderr).not.toContain('CANCELED: CANCELED');
  });

  it('colours the list only on a terminal: piped, or with NO_COLOR, it is plain', async () => {
    const piped = await run('list');
    expect(piped.stdout).not.toContain('\x1b[');
  });

  it('run --json prints the result as one line and still exits with the task\'s code', async () => {
    const result = await run('run', '--json', '--', CMD, '--stdout', 'x', '--exit', '4');
    expect(result.exitCode).toBe(4);
    expect(result.stdout.split('\n')).toHaveLength(1);
    expect(JSON.parse(result.stdout).task).toMatchObject({ state: 'FAILED', exit_code: 4, stdout: 'x' });
  });

  it('submit prints the id; status and wait summarize the record', async () => {
    const submitted = await run('submit', '--id', 'cli-sub', '--priority', '-2', '--', CMD, '--sleep', '200', '--stdout', 'done');
    expect(submitted.exitCode).toBe(0);
    expect(submitted.stdout).toMatch(/^cli-sub (PENDING|QUEUED|RUNNING)$/);

    const status = await run('status', 'cli-sub');
    expect(status.exitCode).toBe(0);
    expect(status.stdout).toMatch(/^id +cli-sub$/m);
    expect(status.stdout).toMatch(/^priority +-2$/m);

    const waited = await run('wait', 'cli-sub', '--output');
    expect(waited.exitCode).toBe(0);
    expect(waited.stdout).toMatch(/^state +COMPLETED$/m);
    expect(waited.stdout).toMatch(/^exit code +0$/m);
    expect(waited.stdout).toMatch(/^attempts +1\/1$/m);
    expect(waited.stdout).toMatch(/^finished +\d{4}-/m);
    expect(waited.stdout).toContain('--- stdout ---\ndone\n');

    const json = await run('wait', 'cli-sub', '--json');
    expect(JSON.parse(json.stdout).task).toMatchObject({ id: 'cli-sub', state: 'COMPLETED', stdout: 'done' });
  });

  it('wait --timeout-ms shows a task still running, and exits 75', async () => {
    await run('submit', '--id', 'cli-slow', '--', CMD, '--sleep', '60000');
    const waited = await run('wait', 'cli-slow', '--timeout-ms', '100', '--json');
    expect(waited.exitCode).toBe(75);
    expect(JSON.parse(waited.stdout)).toMatchObject({ waited_out: true, task: { id: 'cli-slow' } });
    await run('cancel', 'cli-slow');
  });

  it('list --json prints the tasks and their total; list prints a table', async () => {
    await run('run', '--id', 'cli-list', '--', CMD);
    const json = await run('list', '--json', '--state', 'completed');
    expect(json.exitCode).toBe(0);
    const { tasks, total } = JSON.parse(json.stdout);
    expect(tasks.map((task: { id: string }) => task.id)).toContain('cli-list');
    expect(total).toBe(tasks.length);
    expect(tasks.every((task: { state: string }) => task.state === 'COMPLETED')).toBe(true);

    const table = await run('list', '--limit', '1');
    expect(table.stdout.split('\n')[0]).toMatch(/^ID +STATE +GROUP +PRI +ATTEMPTS +EXIT +DURATION +CMD$/);
    expect(table.stdout).toMatch(/of \d+ shown, newest first; the next page: task-manager list --limit 1 --after /);
  });

  it('cancel cancels a running task; a second cancel and an unknown id are request errors', async () => {
    await run('submit', '--id', 'cli-cancel', '--', CMD, '--sleep', '60000');
    const canceled = await run('cancel', 'cli-cancel');
    expect(canceled.exitCode).toBe(0);
    expect(canceled.stdout).toMatch(/^state +CANCELED$/m);

    const again = await run('cancel', 'cli-cancel');
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toMatch(/^NOT_CANCELABLE: /);

    const unknown = await run('status', 'no-such-task');
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toMatch(/^NOT_FOUND: /);
  });

  it('count, health and stats answer, readable and as JSON', async () => {
    const count = await run('count');
    expect(count.exitCode).toBe(0);
    expect(count.stdout).toMatch(/^COMPLETED +\d+$/m);
    expect(JSON.parse((await run('count', '--json')).stdout)).toMatchObject({ counts: { RUNNING: expect.any(Number) }, tasks: expect.any(Number) });

    const health = await run('health', '--json');
    expect(JSON.parse(health.stdout)).toMatchObject({ version: expect.any(String), uptime_ms: expect.any(Number) });

    const stats = await run('stats', '--json');
    expect(stats.exitCode).toBe(0);
    expect(JSON.parse(stats.stdout)).toMatchObject({
      cpu: { load_avg: expect.any(Array), use_percent: expect.any(Number) },
      memory: { total_bytes: expect.any(Number), free_bytes: expect.any(Number), daemon_rss_bytes: expect.any(Number) },
      disk: { free_bytes: expect.any(Number) },
      counts: { QUEUED: expect.any(Number) },
      concurrency: { limit: 10, running: expect.any(Number) },
      uptime_ms: expect.any(Number),
    });
    expect((await run('stats')).stdout).toMatch(/^running +\d+ of at most 10 \(all groups\)$/m);
  });

  it('a bad command line is refused before anything is sent, with exit code 2', async () => {
    const result = await run('run', '--shell', 'true', '--', 'false');
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toContain('not both');
    // Values out of range, by the protocol's own rules, named by their flag.
    for (const [args, said] of [
      [['submit', '--timeout-ms', '0', '--', 'true'], /--timeout-ms must be an integer from 1/],
      [['run', '--retries', '101', '--', 'true'], /--retries must be/],
      [['submit', '--start-at', 'notadate', '--', 'true'], /--start-at must be an ISO-8601/],
      [['edit', 'some-task', '--start-at', 'bogus'], /--start-at must be an ISO-8601/],
      [['clean', '--state', 'RUNNING'], /finished tasks only: expected one of COMPLETED, FAILED, CANCELED/],
      [['submit', '--delay-ms', '5', '--start-at', '5', '--', 'true'], /give --start-at or --delay-ms, not both/],
      [['edit', 'not an id', '--priority', '1'], /the id must be 1 to 128 characters/],
    ] as const) {
      const refused = await run(...args);
      expect({ args, exitCode: refused.exitCode }).toEqual({ args, exitCode: 2 });
      expect(refused.stderr).toMatch(said);
      expect(refused.stderr).not.toMatch(/\n\s+at /); // one line, no stack
    }
  });
});

describe('task-manager watch', () => {
  let daemon: TestDaemon;

  beforeAll(async () => {
    // one slot, so that a task waits in QUEUED behind a running one until the test says
    daemon = await startDaemon(['--concurrency', '1']);
  });
  afterAll(async () => {
    await daemon.stop();
    removeDir(daemon.dataDir);
  });

  it('without a terminal prints a line per state change, and --exit-when-idle ends it', async () => {
    const client = await daemon.client();
    await client.submit({ id: 'gate', cmd: [CMD, '--sleep', '60000'] });
    await client.submit({ id: 'follower', cmd: [CMD, '--stdout', 'f'] });

    const watch = spawn(process.execPath, [TASK_MANAGER, 'watch', '--port', String(daemon.port), '--exit-when-idle'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => watch.once('exit', resolve));
    const lines: string[] = [];
    let onLine = () => {};
    createInterface({ input: watch.stdout! }).on('line', (line) => {
      lines.push(line);
      onLine();
    });
    const seen = (state: string, id: string) => lines.some((line) => new RegExp(` ${state} +${id} `).test(line));
    const ready = new Promise<void>((resolve) => {
      onLine = () => seen('RUNNING', 'gate') && seen('QUEUED', 'follower') && resolve();
    });
    await Promise.race([ready, exited.then((code) => Promise.reject(new Error(`watch exited (${code}) too early:\n${lines.join('\n')}`)))]);

    await client.cancel('gate');
    expect(await exited).toBe(0);
    await client.close();
    expect(seen('CANCELED', 'gate')).toBe(true);
    expect(seen('RUNNING', 'follower')).toBe(true);
    expect(seen('COMPLETED', 'follower')).toBe(true);
    expect(lines.at(-1)).toMatch(/idle/);
  });
});

describe('task-manager watch across a daemon restart', () => {
  it('reconnects, says so, and goes on showing changes', async () => {
    const port = await closedPort();
    const first = await startDaemon(['--port', String(port)]);
    const gate = join(first.dataDir, 'gate');
    const client = await first.client();
    // A task that is still running after the restart (run again, as interrupted), for the watch to list afresh.
    await client.submit({ id: 'across', cmd: untilExists(gate) });
    await client.close();
    const watch = spawn(process.execPath, [TASK_MANAGER, 'watch', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => watch.once('exit', resolve));
    let output = '';
    let onOutput = () => {};
    for (const stream of [watch.stdout!, watch.stderr!]) {
      stream.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        onOutput();
      });
    }
    /** Resolves once the output, from `from` on, matches. */
    const shows = (pattern: RegExp, from = 0) =>
      Promise.race([
        new Promise<number>((resolve) => {
          onOutput = () => {
            const match = pattern.exec(output.slice(from));
            if (match) resolve(from + match.index + match[0].length);
          };
          onOutput();
        }),
        exited.then((code) => Promise.reject(new Error(`watch exited (${code}):\n${output}`))),
      ]);
    let second: TestDaemon | undefined;
    try {
      await shows(/RUNNING +across /);
      await first.kill();
      const lost = await shows(/lost the daemon at 127\.0\.0\.1:\d+ .*; reconnecting/);
      second = await startDaemon(['--port', String(port)], { dataDir: first.dataDir });
      const back = await shows(/reconnected\n/, lost);
      await shows(/RUNNING +across /, back);
      writeFileSync(gate, '');
      await shows(/COMPLETED +across /, back);
    } finally {
      watch.kill('SIGINT');
      expect(await exited).toBe(130); // Ctrl-C: interrupted, as for run, wait and follow
      await second?.stop();
      removeDir(first.dataDir);
    }
  });
});

describe('task-manager without a daemon, and with a token', () => {
  it('says how to start a daemon and exits 2 when none answers', async () => {
    const port = await closedPort();
    for (const command of [['health'], ['run', '--', 'true'], ['watch']]) {
      const result = await cli(port, command);
      expect(result.exitCode).toBe(2);
      expect(result.stderr).toBe(`cannot connect to the daemon at 127.0.0.1:${port} — start one with: npm start (or bin/task-manager serve)`);
    }
  });

  it('authenticates with --token-file, and reports UNAUTHORIZED without it', async () => {
    const dir = tempDir();
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'a-long-enough-secret-token\n');
    chmodSync(tokenFile, 0o600);
    const daemon = await startDaemon(['--token-file', tokenFile]);
    try {
      const authed = await cli(daemon.port, ['run', '--', 'echo', 'in'], { TASK_MANAGER_TOKEN_FILE: tokenFile });
      expect(authed).toMatchObject({ exitCode: 0, stdout: 'in' });
      const refused = await cli(daemon.port, ['health']);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toBe(`UNAUTHORIZED: the daemon at 127.0.0.1:${daemon.port} needs a token: give --token-file <path> (or set TASK_MANAGER_TOKEN_FILE)`);
      const wrongFile = join(dir, 'wrong');
      writeFileSync(wrongFile, 'another-long-enough-token\n');
      const wrong = await cli(daemon.port, ['health', '--token-file', wrongFile]);
      expect(wrong.stderr).toBe(`UNAUTHORIZED: the token is wrong (the token of --token-file ${wrongFile})`);
    } finally {
      await daemon.stop();
      removeDir(daemon.dataDir);
      removeDir(dir);
    }
  });
});
