import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskManagerError, type TaskManagerClient } from '../src/index.js';
import { CMD, untilExists, TASK_MANAGER, eventually, removeDir, snapshotSettled, startDaemon, tempDir, within, type TestDaemon } from './helpers.js';

const daemons: TestDaemon[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((daemon) => daemon.stop()));
  for (const dir of dirs.splice(0)) removeDir(dir);
});

async function daemon(args: string[] = [], dataDir?: string): Promise<TestDaemon> {
  const started = await startDaemon(args, dataDir ? { dataDir } : {});
  daemons.push(started);
  return started;
}

/** Everything in the journal files of a data dir, as one text. */
const journalText = (dataDir: string) =>
  readdirSync(dataDir)
    .filter((file) => /^(snapshot|log)/.test(file))
    .map((file) => readFileSync(join(dataDir, file), 'utf8'))
    .join('\n');

const outputFiles = (dataDir: string) => readdirSync(join(dataDir, 'output')).sort();

/** A shell task that prints `first`, then waits until `gate` exists, then prints `second`. */
function gated(dir: string): { cmd: string; gate: string } {
  const gate = join(dir, 'gate');
  return { cmd: `echo first; ${untilExists(gate)}; echo second; echo done >&2`, gate };
}

describe('output in files', () => {
  it('keeps output in files of the data dir, not in the journal, and answers with it', async () => {
    const d = await daemon();
    const client = await d.client();
    // The spec says MARKER; only the output says marker.
    const { task } = await client.run({ id: 'printer', cmd: 'for i in $(seq 1 100); do echo OUTPUT-MARKER; done | tr A-Z a-z; printf "to err" >&2' });
    const marker = 'output-marker\n'.repeat(100);
    expect(task).toMatchObject({ state: 'COMPLETED', stdout: marker, stderr: 'to err' });
    expect(outputFiles(d.dataDir)).toEqual(['printer.1.0.stderr', 'printer.1.0.stdout']);
    expect(readFileSync(join(d.dataDir, 'output', 'printer.1.0.stdout'), 'utf8')).toBe(marker);
    expect(journalText(d.dataDir)).not.toContain('output-marker-');
    expect(journalText(d.dataDir)).toContain(`"stdout_bytes":${marker.length}`);
    // A quiet task makes no files at all.
    await client.run({ id: 'quiet', cmd: ['true'] });
    expect(outputFiles(d.dataDir)).toEqual(['printer.1.0.stderr', 'printer.1.0.stdout']);
    expect(await client.status('quiet')).toMatchObject({ stdout: '', stderr: '' });
    await client.close();
  });

  it('cuts output at max_output_bytes in the file too, and keeps multi-byte characters whole up to the cut', async () => {
    const d = await daemon();
    const client = await d.client();
    const { task } = await client.run({ id: 'big', cmd: [CMD, '--stdout-bytes', '100000'], max_output_bytes: 1000 });
    expect(task).toMatchObject({ stdout: 'x'.repeat(1000), stdout_truncated: true, stderr_truncated: false });
    expect(readFileSync(join(d.dataDir, 'output', 'big.1.0.stdout')).length).toBe(1000);
    // A task writing far past the cap: the file is cut back while it runs and when it ends.
    const { task: flood } = await client.run({ id: 'flood', cmd: 'head -c 300000000 /dev/zero', max_output_bytes: 1000 });
    expect(flood).toMatchObject({ state: 'COMPLETED', stdout: '\u0000'.repeat(1000), stdout_truncated: true });
    expect(readFileSync(join(d.dataDir, 'output', 'flood.1.0.stdout')).length).toBe(1000);
    const text = 'é€😀'.repeat(20_000); // 180 kB, read back in many pieces
    const { task: wide } = await client.run({ cmd: [CMD, '--echo-stdin'], stdin: text });
    expect(wide.stdout === text).toBe(true);
    await client.close();
  });

  it('shows a running task\'s output so far in status, and keeps only the last attempt\'s files', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const d = await daemon();
    const client = await d.client();
    const { cmd, gate } = gated(dir);
    await client.submit({ id: 'live', cmd });
    let running = await client.status('live');
    while (running.stdout === '') running = await client.status('live');
    expect(running).toMatchObject({ state: 'RUNNING', stdout: 'first\n' });
    writeFileSync(gate, '');
    expect((await client.wait('live')).task).toMatchObject({ state: 'COMPLETED', stdout: 'first\nsecond\n', stderr: 'done\n' });

    const counter = join(dir, 'counter');
    const { task } = await client.run({ id: 'retried', cmd: [CMD, '--counter', counter, '--fail-until', '3', '--stdout', 'try'], retries: 2, retry_delay_ms: 1 });
    expect(task).toMatchObject({ state: 'COMPLETED', attempts: 3, stdout: 'try' });
    await eventually(() => outputFiles(d.dataDir).filter((file) => file.startsWith('retried.')).join() === 'retried.3.0.stdout' || undefined);
    await client.close();
  });

  it('removes the files of outputs dropped by --keep-output-bytes and of tasks dropped by --keep-finished', async () => {
    const d = await daemon(['--keep-output-bytes', '2500', '--keep-finished', '4']);
    const client = await d.client();
    for (let i = 0; i < 6; i++) await client.run({ id: `kept-${i}`, cmd: [CMD, '--stdout-bytes', '1000'] });
    // The newest two fit 2,500 bytes; of the four tasks kept, the older two have lost their output.
    await eventually(() => outputFiles(d.dataDir).join() === 'kept-4.1.0.stdout,kept-5.1.0.stdout' || undefined);
    expect(await client.status('kept-3')).toMatchObject({ stdout: '', output_dropped: true });
    expect(await client.status('kept-5')).toMatchObject({ stdout: 'x'.repeat(1000) });
    await expect(client.status('kept-1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await client.close();
  });

  it('leaves nothing of a removed task\'s output to a new task under the same id that prints nothing', async () => {
    const d = await daemon();
    const client = await d.client();
    await client.run({ id: 'again', cmd: 'echo old; echo old-err >&2' });
    // Sent together: the new task starts before the old files' removal, which waits for the journal.
    const [, { task }] = await Promise.all([client.remove('again'), client.run({ id: 'again', cmd: ['true'] })]);
    expect(task).toMatchObject({ state: 'COMPLETED', stdout: '', stderr: '' });
    // The old files are removed in the background once the journal holds the removal.
    await eventually(() => outputFiles(d.dataDir).length === 0);
    await client.close();
  });

  it('moves output kept in the journal by an earlier version into files at start', async () => {
    const first = await daemon();
    const dataDir = first.dataDir;
    const client = await first.client();
    await client.run({ id: 'old', cmd: ['true'] });
    await client.close();
    await first.stop();
    daemons.splice(daemons.indexOf(first), 1);
    const log = readdirSync(dataDir).filter((file) => file.startsWith('log.')).sort().at(-1)!;
    writeFileSync(join(dataDir, log), `${JSON.stringify({ id: 'old', set: { stdout: 'kept inline', stderr: '' } })}\n`, { flag: 'a' });
    const second = await daemon([], dataDir);
    const again = await second.client();
    expect(await again.status('old')).toMatchObject({ stdout: 'kept inline', stderr: '' });
    expect(outputFiles(dataDir)).toEqual(['old.1.0.stdout']);
    // Read once the start's snapshot is written: until then it may delete the logs it replaces as they are read.
    await snapshotSettled(dataDir);
    expect(journalText(dataDir)).toContain('"output":"old.1.0"');
    await again.close();
  });
});

describe('follow', () => {
  it('sends a running task\'s first line before it ends, then the rest, then its record', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const d = await daemon();
    const client = await d.client();
    const { cmd, gate } = gated(dir);
    await client.submit({ id: 'followed', cmd });
    const seen: string[] = [];
    let firstSeen: () => void = () => undefined;
    const first = new Promise<void>((resolve) => (firstSeen = resolve));
    let stdout = '';
    const done = client.follow('followed', (stream, data) => {
      seen.push(`${stream}:${data}`);
      // Text comes in pieces as it is written, not line by line.
      if (stream === 'stdout') stdout += data;
      if (stdout.includes('first')) firstSeen();
    });
    await within(first, 10_000, 'the first line');
    expect((await client.status('followed')).state).toBe('RUNNING');
    writeFileSync(gate, '');
    const task = await done;
    expect(task).toMatchObject({ id: 'followed', state: 'COMPLETED', exit_code: 0 });
    expect(task.stdout).toBeUndefined();
    expect(seen.filter((line) => line.startsWith('stdout:')).map((line) => line.slice(7)).join('')).toBe('first\nsecond\n');
    expect(seen.filter((line) => line.startsWith('stderr:')).map((line) => line.slice(7)).join('')).toBe('done\n');
    await client.close();
  });

  it('sends a finished task\'s output and its record at once, on the wire as the protocol says', async () => {
    const d = await daemon();
    const client = await d.client();
    await client.run({ id: 'finished', cmd: [CMD, '--stdout', 'all of it', '--exit', '3'] });
    const raw = await d.raw();
    raw.send('{"op":"follow","id":"finished","ref":"f"}\n');
    const event = await raw.next();
    expect(event).toEqual({ event: 'output', ref: 'f', id: 'finished', stream: 'stdout', data: 'all of it' });
    const answer = await raw.next();
    expect(answer).toMatchObject({ ok: true, ref: 'f', op: 'follow', task: { id: 'finished', state: 'FAILED', exit_code: 3 } });
    expect((answer as { task: object }).task).not.toHaveProperty('stdout');
    raw.send('{"op":"follow","id":"nobody","ref":"n"}\n');
    expect(await raw.next()).toMatchObject({ ok: false, ref: 'n', error: { code: 'NOT_FOUND' } });
    raw.send('{"op":"follow","ref":"m"}\n');
    expect(await raw.next()).toMatchObject({ ok: false, ref: 'm', error: { code: 'BAD_REQUEST', message: expect.stringContaining('id') } });
    raw.close();
    await client.close();
  });

  it('task-manager follow prints the output as it comes and exits with the task\'s exit code', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const d = await daemon();
    const client = await d.client();
    const gate = join(dir, 'gate');
    await client.submit({ id: 'cli-followed', cmd: `echo first; echo oops >&2; ${untilExists(gate)}; echo second; exit 7` });
    const child = spawn(process.execPath, [TASK_MANAGER, 'follow', 'cli-followed', '--port', String(d.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    await eventually(() => stdout === 'first\n' || undefined);
    expect(child.exitCode).toBeNull();
    writeFileSync(gate, '');
    const [code] = await once(child, 'exit');
    expect(code).toBe(7);
    expect(stdout).toBe('first\nsecond\n');
    expect(stderr).toBe('oops\n');
    const unknown = spawn(process.execPath, [TASK_MANAGER, 'follow', 'nobody', '--port', String(d.port)], { stdio: 'ignore' });
    expect((await once(unknown, 'exit'))[0]).toBe(1);
    await client.close();
  });

  it('a follower that disconnects lets go: the daemon serves on, and a finished task\'s files can go', async () => {
    const d = await daemon(['--keep-finished', '1']);
    const client = await d.client();
    await client.submit({ id: 'endless', cmd: [CMD, '--stdout', 'tick', '--sleep', '60000'] });
    const follower = await d.client();
    let got = '';
    void follower.follow('endless', (_stream, data) => (got += data)).catch(() => undefined);
    await eventually(() => got === 'tick' || undefined);
    follower.destroy();
    await client.cancel('endless');
    await client.run({ id: 'next', cmd: ['true'] });
    await eventually(() => !existsSync(join(d.dataDir, 'output', 'endless.1.0.stdout')) || undefined);
    await expect(client.follow('endless', () => undefined)).rejects.toBeInstanceOf(TaskManagerError);
    await client.close();
  });
});

describe('crash while writing output', () => {
  it('after kill -9 mid-write, every result reported before the crash keeps its output, and none is lost', async () => {
    const first = await daemon(['--concurrency', '4']);
    const dataDir = first.dataDir;
    const client: TaskManagerClient = await first.client();
    const reported = new Map<string, string>();
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `w-${i}`;
      // Each prints 200 kB in many writes, so the crash lands in the middle of some.
      runs.push(client.run({ id, cmd: `for i in $(seq 1 50); do head -c 4000 /dev/zero | tr '\\0' ${'abcdefghij'[i % 10]}; done` }).then(({ task }) => reported.set(id, task.stdout!)).catch(() => undefined));
    }
    await eventually(() => reported.size >= 8 || undefined, 30_000);
    await first.kill();
    daemons.splice(daemons.indexOf(first), 1);
    await Promise.all(runs);
    const second = await daemon(['--concurrency', '4'], dataDir);
    const again = await second.client();
    for (const [id, stdout] of reported) {
      expect(stdout.length).toBe(200_000);
      const task = await again.status(id);
      expect(task.state).toBe('COMPLETED');
      expect(task.stdout === stdout).toBe(true);
    }
    for (let i = 0; i < 40; i++) {
      const { task } = await again.wait(`w-${i}`);
      expect(task).toMatchObject({ state: 'COMPLETED' });
      expect(task.stdout!.length).toBe(200_000);
    }
    await again.close();
  });
});
