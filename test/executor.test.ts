import { chmodSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markedProcesses, marksOf } from '../src/executor/leftovers.js';
import { CMD, eventually, isAlive, isGone, readPid, removeDir, startDaemon, tempDir, within, type RawConnection, type TestDaemon } from './helpers.js';

const KILL_GRACE_MS = 300;


// Both ways of starting a task pass the same tests: vfork and exec through the addon, and Node's spawn.
describe.each(['native', 'node'])('executor through a real daemon (%s spawn)', (spawnPath) => {
  let daemon: TestDaemon;
  let dir: string;
  let n = 0;

  beforeAll(async () => {
    dir = tempDir('tm-exec-');
    daemon = await startDaemon(['--kill-grace-ms', String(KILL_GRACE_MS)], {
      env: { TASK_MANAGER_SECRET_X: '1', TASK_MANAGER_CONCURRENCY: '10', TM_VISIBLE_FROM_DAEMON: 'daemon-value', TASK_MANAGER_SPAWN: spawnPath },
    });
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
    removeDir(dir);
  });

  /** Sends one `run` on its own connection and returns the response. */
  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  async function run(spec: Record<string, unknown>, ms = 20_000): Promise<any> {
    const raw = await daemon.raw();
    try {
      const ref = `run-${++n}`;
      raw.send(`${JSON.stringify({ op: 'run', ref, ...spec })}\n`);
      const response = await within(raw.next(), ms, JSON.stringify(spec));
      expect(response.ref).toBe(ref);
      return response;
    } finally {
      raw.close();
    }
  }

  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  async function runTask(spec: Record<string, unknown>, ms?: number): Promise<any> {
    const response = await run(spec, ms);
    expect(response, JSON.stringify(response)).toMatchObject({ ok: true, op: 'run' });
    return response.task;
  }

  describe('string cmd: /bin/sh -c', () => {
    it('runs pipes', async () => {
      const task = await runTask({ cmd: 'echo hello world | tr a-z A-Z' });
      expect(task).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout: 'HELLO WORLD\n', error: null });
    });

    it('expands $VAR from the spec env and from the daemon environment', async () => {
      const task = await runTask({ cmd: 'printf "%s|%s|%s" "$GREETING" "$TM_VISIBLE_FROM_DAEMON" "$HOME"', env: { GREETING: 'hi there' } });
      expect(task.stdout).toBe(`hi there|daemon-value|${process.env.HOME}`);
    });

    it('supports shell syntax (variables, arithmetic, && and ||)', async () => {
      const task = await runTask({ cmd: 'a=1; b=$((a+1)); echo $b && false || echo fallback' });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: '2\nfallback\n' });
    });

    it('a program the shell cannot find is exit 127, NONZERO_EXIT', async () => {
      const task = await runTask({ cmd: 'no-such-program-tm-5f3a' });
      expect(task).toMatchObject({ state: 'FAILED', exit_code: 127, error: { code: 'NONZERO_EXIT' } });
      expect(task.stderr).toContain('no-such-program-tm-5f3a');
    });
  });

  describe('array cmd: no shell', () => {
    it('passes arguments literally ($HOME, ;, | stay as they are)', async () => {
      const literal = '$HOME; echo pwned | cat `id` $(id)';
      const task = await runTask({ cmd: [CMD, '--stdout', literal] });
      expect(task).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout: literal });
    });

    it('finds argv[0] on PATH', async () => {
      const task = await runTask({ cmd: ['printf', '%s-%s', 'a b', '$x'] });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'a b-$x' });
    });

    it('appends args after the cmd array', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout'], args: ['from args $HOME'] });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'from args $HOME' });
      const more = await runTask({ cmd: ['printf', '%s,'], args: ['one', 'two', 'three'] });
      expect(more.stdout).toBe('one,two,three,');
    });

    it('a program not on PATH is FAILED with SPAWN_FAILED, and the daemon keeps working', async () => {
      const task = await runTask({ cmd: ['no-such-program-tm-5f3a', '--flag'] });
      expect(task).toMatchObject({ state: 'FAILED', error: { code: 'SPAWN_FAILED' } });
      expect(task.error.message.length).toBeGreaterThan(0);
      expect(task.exit_code).not.toBe(0);
      const after = await runTask({ cmd: [CMD, '--stdout', 'still here'] });
      expect(after).toMatchObject({ state: 'COMPLETED', stdout: 'still here' });
    });

    it('a missing absolute path is FAILED with SPAWN_FAILED', async () => {
      const task = await runTask({ cmd: ['/nonexistent/dir/prog'] });
      expect(task).toMatchObject({ state: 'FAILED', error: { code: 'SPAWN_FAILED' } });
    });

    it('a file without execute permission is FAILED with SPAWN_FAILED', async () => {
      const file = join(dir, 'not-executable.sh');
      writeFileSync(file, '#!/bin/sh\necho should-not-run\n');
      chmodSync(file, 0o644);
      const task = await runTask({ cmd: [file] });
      expect(task).toMatchObject({ state: 'FAILED', error: { code: 'SPAWN_FAILED' } });
      expect(task.stdout).toBe('');
    });
  });

  describe('cwd, env, stdin', () => {
    it('runs in the given cwd', async () => {
      const cwd = realpathSync(tempDir('tm-cwd-'));
      try {
        const task = await runTask({ cmd: 'pwd; echo made > here.txt', cwd });
        expect(task).toMatchObject({ state: 'COMPLETED', stdout: `${cwd}\n` });
        expect(readFileSync(join(cwd, 'here.txt'), 'utf8')).toBe('made\n');
        const array = await runTask({ cmd: ['pwd'], cwd });
        expect(array.stdout).toBe(`${cwd}\n`);
      } finally {
        removeDir(cwd);
      }
    });

    it('a missing cwd is FAILED with SPAWN_FAILED (checked when the task starts, not a request error)', async () => {
      const response = await run({ cmd: [CMD, '--stdout', 'x'], cwd: join(dir, 'does-not-exist') });
      expect(response.ok).toBe(true);
      expect(response.task).toMatchObject({ state: 'FAILED', stdout: '', error: { code: 'SPAWN_FAILED' } });
      const string = await runTask({ cmd: 'echo x', cwd: join(dir, 'does-not-exist') });
      expect(string).toMatchObject({ state: 'FAILED', error: { code: 'SPAWN_FAILED' } });
    });

    it('adds env to the daemon environment', async () => {
      const task = await runTask({ cmd: [CMD, '--print-env', 'FROM_SPEC'], env: { FROM_SPEC: 'spec value with spaces =;$' } });
      expect(task.stdout).toBe('spec value with spaces =;$\n');
      const inherited = await runTask({ cmd: [CMD, '--print-env', 'TM_VISIBLE_FROM_DAEMON'], env: { OTHER: 'x' } });
      expect(inherited.stdout).toBe('daemon-value\n');
    });

    it('feeds stdin to the process', async () => {
      const task = await runTask({ cmd: [CMD, '--echo-stdin'], stdin: 'line one\nline two\n' });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'line one\nline two\n' });
      const shell = await runTask({ cmd: 'tr a-z A-Z', stdin: 'shout' });
      expect(shell.stdout).toBe('SHOUT');
    });

    it('feeds a large stdin while reading the output (no pipe deadlock)', async () => {
      const input = 'abcdefghij'.repeat(30_000); // 300 kB, more than a pipe buffer
      const task = await runTask({ cmd: 'cat', stdin: input, timeout_ms: 15_000 });
      expect(task.state).toBe('COMPLETED');
      expect(task.stdout.length).toBe(input.length);
      expect(task.stdout === input).toBe(true);
    });

    it('without stdin the program sees end-of-file at once', async () => {
      const started = Date.now();
      const task = await runTask({ cmd: [CMD, '--echo-stdin', '--stdout', 'eof'], timeout_ms: 10_000 });
      expect(task).toMatchObject({ state: 'COMPLETED', timed_out: false, stdout: 'eof' });
      const shell = await runTask({ cmd: 'cat; read line; echo "read=$?"', timeout_ms: 10_000 });
      expect(shell).toMatchObject({ state: 'COMPLETED', stdout: 'read=1\n' });
      expect(Date.now() - started).toBeLessThan(9_000);
    });
  });

  describe('output and exit status', () => {
    it('captures stdout and stderr separately', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout', 'to out', '--stderr', 'to err'] });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'to out', stderr: 'to err', stdout_truncated: false, stderr_truncated: false });
      const shell = await runTask({ cmd: 'echo out; echo err >&2' });
      expect(shell).toMatchObject({ stdout: 'out\n', stderr: 'err\n' });
    });

    it('keeps UTF-8 output intact', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout', 'héllo wörld €😀'] });
      expect(task.stdout).toBe('héllo wörld €😀');
    });

    it('a non-zero exit is FAILED with exit_code and NONZERO_EXIT (still ok: true)', async () => {
      const response = await run({ cmd: [CMD, '--stdout', 'partial', '--stderr', 'why', '--exit', '3'] });
      expect(response.ok).toBe(true);
      expect(response.task).toMatchObject({
        state: 'FAILED', exit_code: 3, signal: null, timed_out: false, stdout: 'partial', stderr: 'why', error: { code: 'NONZERO_EXIT' },
      });
      const shell = await runTask({ cmd: 'exit 7' });
      expect(shell).toMatchObject({ state: 'FAILED', exit_code: 7, error: { code: 'NONZERO_EXIT' } });
    });

    it('exit 0 is COMPLETED with error null and the record fields of the contract', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout', 'ok'] });
      expect(task).toMatchObject({
        state: 'COMPLETED', exit_code: 0, signal: null, timed_out: false, error: null,
        stdout_truncated: false, stderr_truncated: false, attempts: 1, max_attempts: 1, depends_on: [],
      });
      expect(typeof task.id).toBe('string');
      for (const field of ['created_at', 'started_at', 'finished_at']) expect(Number.isNaN(Date.parse(task[field]))).toBe(false);
    });

    it('max_output_bytes cuts a 5 MB stdout to the cap without killing the program', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout-bytes', '5000000', '--stdout', 'END'], max_output_bytes: 1000 });
      expect(task).toMatchObject({ state: 'COMPLETED', exit_code: 0, timed_out: false, error: null });
      expect(task.stdout).toBe(`END${'x'.repeat(997)}`); // bin/cmd prints --stdout before --stdout-bytes
      expect(task.stdout_truncated).toBe(true);
      expect(task.stderr_truncated).toBe(false);
    });

    it('max_output_bytes applies to stderr on its own', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout', 'small', '--stderr-bytes', '3000'], max_output_bytes: 1000 });
      expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'small', stdout_truncated: false, stderr_truncated: true });
      expect(task.stderr).toBe('y'.repeat(1000));
    });

    it('output of exactly max_output_bytes is not truncated', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout-bytes', '1000'], max_output_bytes: 1000 });
      expect(task.stdout.length).toBe(1000);
      expect(task.stdout_truncated).toBe(false);
    });

    it('the default cap is 1048576 bytes per stream', async () => {
      const task = await runTask({ cmd: [CMD, '--stdout-bytes', '1100000'] });
      expect(task.state).toBe('COMPLETED');
      expect(task.stdout.length).toBe(1_048_576);
      expect(task.stdout_truncated).toBe(true);
    });

    it('an attempt whose executor process died under it leaves no file of a stream it kept empty', async () => {
      const id = `silent-lost-${spawnPath}`;
      const task = await runTask({ id, cmd: 'sleep 0.2; kill -9 $PPID; sleep 30' }, 60_000);
      expect(task).toMatchObject({ state: 'FAILED', stdout: '', stderr: '', stdout_truncated: false, stderr_truncated: false, error: { code: 'KILLED' } });
      // Retention drops such a task without looking for its files: none may be left behind.
      expect(readdirSync(join(daemon.dataDir, 'output')).filter((file) => file.startsWith(`${id}.`))).toEqual([]);
    });

    it('an attempt whose executor process died under it after writing past max_output_bytes is reported cut at the cap', async () => {
      const task = await runTask({ cmd: "head -c 5000 /dev/zero | tr '\\0' x; sleep 0.3; kill -9 $PPID; sleep 30", max_output_bytes: 1000 }, 60_000);
      expect(task).toMatchObject({ state: 'FAILED', stdout: 'x'.repeat(1000), stdout_truncated: true, error: { code: 'KILLED' } });
    });
  });

  describe('timeouts', () => {
    it('kills a task past timeout_ms: FAILED, exit_code -1, timed_out, TIMEOUT, long before it would end', async () => {
      const started = Date.now();
      const task = await runTask({ cmd: [CMD, '--sleep', '30000'], timeout_ms: 300 });
      const elapsed = Date.now() - started;
      expect(task).toMatchObject({ state: 'FAILED', exit_code: -1, timed_out: true, error: { code: 'TIMEOUT' } });
      expect(elapsed).toBeLessThan(10_000);
      expect(task.duration_ms).toBeGreaterThanOrEqual(250);
      expect(task.duration_ms).toBeLessThan(10_000);
    });

    it('sends SIGTERM first, so the program can clean up', async () => {
      const task = await runTask({ cmd: "trap 'echo got-term; exit 0' TERM; sleep 30 & wait", timeout_ms: 500 });
      expect(task).toMatchObject({ state: 'FAILED', exit_code: -1, timed_out: true, stdout: 'got-term\n', error: { code: 'TIMEOUT' } });
    });

    it('kills the whole process group: a grandchild dies too', async () => {
      const pidFile = join(dir, 'grandchild.pid');
      const raw: RawConnection = await daemon.raw();
      try {
        raw.send(`${JSON.stringify({ op: 'run', ref: 'gc', cmd: [CMD, '--grandchild', pidFile, '--sleep', '30000'], timeout_ms: 3000 })}\n`);
        const pid = await eventually(() => readPid(pidFile), 10_000);
        expect(isAlive(pid)).toBe(true);
        const response = await within(raw.next(), 20_000, 'the grandchild task');
        expect(response.task).toMatchObject({ state: 'FAILED', exit_code: -1, timed_out: true, error: { code: 'TIMEOUT' } });
        await eventually(() => isGone(pid), 5_000);
      } finally {
        raw.close();
      }
    });

    it("carries its attempt's marks, by which its processes are found when their pid never reached the daemon", async () => {
      const pidFile = join(dir, 'marked-grandchild.pid');
      const id = `marked-${spawnPath}`;
      const raw: RawConnection = await daemon.raw();
      try {
        raw.send(`${JSON.stringify({ op: 'submit', id, cmd: [CMD, '--grandchild', pidFile, '--sleep', '30000'] })}\n`);
        await raw.next();
        const grandchild = await eventually(() => readPid(pidFile), 10_000);
        const marks = marksOf({ TASK_MANAGER_TASK_ID: id, TASK_MANAGER_ATTEMPT: '1', TASK_MANAGER_JOURNAL: realpathSync(daemon.dataDir) });
        const found = (await markedProcesses(marks)).map(({ pid }) => pid);
        expect(found).toContain(grandchild);
        expect(await markedProcesses(marksOf({ TASK_MANAGER_TASK_ID: id, TASK_MANAGER_ATTEMPT: '2', TASK_MANAGER_JOURNAL: realpathSync(daemon.dataDir) }))).toEqual([]);
        raw.send(`${JSON.stringify({ op: 'cancel', id })}\n`);
        await raw.next();
        await eventually(() => isGone(grandchild), 5_000);
      } finally {
        raw.close();
      }
    });

    it('SIGKILLs a program that ignores SIGTERM after --kill-grace-ms', async () => {
      const pidFile = join(dir, 'ignore-term.pid');
      const started = Date.now();
      const task = await runTask({ cmd: [CMD, '--pid-file', pidFile, '--ignore-term', '--sleep', '30000'], timeout_ms: 1500 });
      const elapsed = Date.now() - started;
      expect(task).toMatchObject({ state: 'FAILED', exit_code: -1, timed_out: true, signal: 'SIGKILL', error: { code: 'TIMEOUT' } });
      // it outlived the SIGTERM by the grace period, and no more than that (the default grace is 2000 ms)
      expect(task.duration_ms).toBeGreaterThanOrEqual(1500 + KILL_GRACE_MS - 50);
      expect(elapsed).toBeLessThan(10_000);
      const pid = readPid(pidFile);
      expect(pid).toBeDefined();
      await eventually(() => isGone(pid!), 5_000);
    });
  });

  describe('timing and concurrency', () => {
    it('duration_ms matches the run time of the program', async () => {
      const task = await runTask({ cmd: [CMD, '--sleep', '300'] });
      expect(task.state).toBe('COMPLETED');
      expect(task.duration_ms).toBeGreaterThanOrEqual(250);
      expect(task.duration_ms).toBeLessThan(5_000);
      expect(Date.parse(task.finished_at) - Date.parse(task.started_at)).toBeGreaterThanOrEqual(250);
    });

    it('answers in completion order on one connection: a fast run overtakes a slow one', async () => {
      const raw = await daemon.raw();
      try {
        raw.send(`${JSON.stringify({ op: 'run', ref: 'slow', cmd: [CMD, '--sleep', '1500', '--stdout', 'slow'] })}\n`);
        raw.send(`${JSON.stringify({ op: 'run', ref: 'fast', cmd: [CMD, '--stdout', 'fast'] })}\n`);
        const [first, second] = await within(raw.take(2), 20_000, 'slow and fast');
        expect(first).toMatchObject({ ok: true, ref: 'fast', task: { state: 'COMPLETED', stdout: 'fast' } });
        expect(second).toMatchObject({ ok: true, ref: 'slow', task: { state: 'COMPLETED', stdout: 'slow' } });
      } finally {
        raw.close();
      }
    });
  });

  describe('task environment', () => {
    it('sets TASK_MANAGER_TASK_ID to the task id', async () => {
      const task = await runTask({ id: 'env-check.1', cmd: [CMD, '--print-env', 'TASK_MANAGER_TASK_ID'] });
      expect(task).toMatchObject({ id: 'env-check.1', state: 'COMPLETED', stdout: 'env-check.1\n' });
      const generated = await runTask({ cmd: [CMD, '--print-env', 'TASK_MANAGER_TASK_ID'] });
      expect(generated.stdout).toBe(`${generated.id}\n`);
    });

    it('does not pass on the TASK_MANAGER_ variables the daemon was started with', async () => {
      const secret = await runTask({ cmd: [CMD, '--print-env', 'TASK_MANAGER_SECRET_X'] });
      expect(secret).toMatchObject({ state: 'COMPLETED', stdout: '\n' });
      const all = await runTask({ cmd: ['env'] });
      const names = all.stdout.split('\n').map((line: string) => line.split('=')[0]);
      expect(names).toContain('TM_VISIBLE_FROM_DAEMON'); // the daemon's other variables do pass
      expect(names).toContain('TASK_MANAGER_TASK_ID');
      expect(names).not.toContain('TASK_MANAGER_SECRET_X');
      expect(names).not.toContain('TASK_MANAGER_CONCURRENCY');
    });
  });

  it('a process that outlives its task may go on writing: it is not killed for it, and the task reported keeps its output', async () => {
    const pidFile = join(dir, 'late-writer.pid');
    const task = await runTask({ id: `late-writer-${spawnPath}`, cmd: `setsid sh -c 'echo $$ > ${pidFile}; sleep 0.5; while :; do echo late; sleep 0.05; done' & while [ ! -s ${pidFile} ]; do sleep 0.01; done; echo hi` });
    expect(task).toMatchObject({ state: 'COMPLETED', stdout: 'hi\n' });
    const pid = await eventually(() => readPid(pidFile), 15_000);
    try {
      const raw = await daemon.raw();
      try {
        // well past its first late lines: still alive, and the task still says what it said when it ended
        await new Promise((resolve) => setTimeout(resolve, 1500));
        expect(isGone(pid)).toBe(false);
        raw.send(`${JSON.stringify({ op: 'status', id: task.id })}\n`);
        expect((await within(raw.next(), 10_000, 'status')).task).toMatchObject({ stdout: 'hi\n' });
      } finally {
        raw.close();
      }
    } finally {
      process.kill(pid, 'SIGKILL');
      await eventually(() => isGone(pid), 5_000);
    }
  });

  it('ends a task when its main process exits, even if a process it detached still holds its output', async () => {
    const pidFile = join(dir, 'detached-pid');
    const started = Date.now();
    const response = await run({ cmd: `setsid ${CMD} --pid-file ${pidFile} --sleep 30000 & sleep 0.3; echo hi`, timeout_ms: 20_000 });
    try {
      expect(response.task).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout: 'hi\n', timed_out: false });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      // The detached program may not have written its pid yet on a loaded machine: wait for it, so that
      // it neither outlives the suite nor writes into a directory being removed.
      const pid = await eventually(() => readPid(pidFile), 15_000);
      if (!isGone(pid)) process.kill(pid, 'SIGKILL');
      await eventually(() => isGone(pid), 5_000);
    }
  });
});
