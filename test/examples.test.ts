import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startDaemon, type TestDaemon } from './helpers.js';

/** The scripts of examples/, run as a user would, against a real daemon. */
describe('examples', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });
  const run = (script: string, ...args: string[]) =>
    execFileSync(script.endsWith('.mjs') ? process.execPath : script, [...(script.endsWith('.mjs') ? [join(ROOT, script)] : []), ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, TASK_MANAGER_PORT: String(daemon.port) },
      timeout: 60_000,
    });

  it('over HTTP with curl: send tasks, monitor, ask for a status', () => {
    const sent = run(join(ROOT, 'examples/http/send-tasks.sh')).trim().split('\n').map((line) => JSON.parse(line));
    expect(sent.at(-1)).toMatchObject({ ok: true, task: { id: 'example-report', state: 'COMPLETED', stdout: 'reported\n' } });
    const [count, stats] = run(join(ROOT, 'examples/http/monitor.sh')).trim().split('\n').map((line) => JSON.parse(line));
    expect(count).toMatchObject({ ok: true, counts: { COMPLETED: 2 } });
    expect(stats).toMatchObject({ ok: true, cpu: expect.any(Object), memory: expect.any(Object), disk: expect.any(Object) });
    const [status, output] = run(join(ROOT, 'examples/http/status.sh'), 'example-build').trim().split('\n').map((line) => JSON.parse(line));
    expect(status).toMatchObject({ ok: true, task: { id: 'example-build', state: 'COMPLETED' } });
    expect(output).toEqual({ ok: true, stdout: 'built\n', stderr: '' });
  });

  it('over the line protocol with the client library: send tasks, monitor, ask for a status', () => {
    expect(run('examples/client/send-tasks.mjs')).toBe('example-report: COMPLETED, exit code 0, stdout "reported\\n"\n');
    const monitor = run('examples/client/monitor.mjs');
    expect(monitor).toMatch(/^tasks: .*"COMPLETED":2/m);
    expect(monitor).toMatch(/^cpu: [\d.]+ % of \d+ cores/m);
    expect(monitor).toMatch(/^gpu: /m);
    expect(run('examples/client/status.mjs', 'example-build')).toBe('example-build: COMPLETED, attempts 1/1, exit code 0\nstdout: built\n\n');
  });
});
