import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CMD, childrenOf, startDaemon, type TestDaemon } from './helpers.js';

describe('daemon smoke', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  it('runs a shell command and answers with its output, exit code and duration', async () => {
    const raw = await daemon.raw();
    raw.send('{"cmd":"echo hi"}\n');
    const response = await raw.next();
    expect(response.ok).toBe(true);
    expect(response.task).toMatchObject({ state: 'COMPLETED', stdout: 'hi\n', exit_code: 0 });
    expect(typeof response.task.duration_ms).toBe('number');
    raw.close();
  });

  it('answers submit at once with the state the task was accepted in', async () => {
    const raw = await daemon.raw();
    raw.send(`${JSON.stringify({ op: 'submit', ref: 7, cmd: [CMD, '--sleep', '100'] })}\n`);
    const response = await raw.next();
    expect(response).toMatchObject({ ok: true, ref: 7, op: 'submit', task: { state: 'QUEUED', attempts: 0 } });
    raw.close();
  });

  it('runs through the client library', async () => {
    const client = await daemon.client();
    const { task } = await client.run({ cmd: [CMD, '--stdout', 'hello', '--exit', '3'] });
    expect(task).toMatchObject({ state: 'FAILED', exit_code: 3, stdout: 'hello', error: { code: 'NONZERO_EXIT' } });
    await client.close();
  });

  it('runs, as its launcher starts it, with V8 keeping its heap when idle, and so do its executor processes', async () => {
    const client = await daemon.client();
    await client.run({ cmd: ['true'] }); // an executor process is up
    await client.close();
    const nodeFlags = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      } catch {
        return []; // gone since it was listed
      }
    };
    expect(nodeFlags(daemon.process.pid!)).toContain('--no-memory-reducer');
    const executors = childrenOf(daemon.process.pid!).filter((pid) => nodeFlags(pid).some((arg) => arg.endsWith('executor-process.js')));
    expect(executors.length).toBeGreaterThan(0);
    for (const pid of executors) expect(nodeFlags(pid)).toContain('--no-memory-reducer');
  });
});
