import { execa } from 'execa';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CMD, ROOT, eventually, startDaemon, tempDir, type TestDaemon } from './helpers.js';

const SCHEDULER = join(ROOT, 'bin/scheduler');
const dir = tempDir('tm-sched-');

function inputFile(name: string, content: unknown[] | string): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const scheduler = (args: string[]) => execa(process.execPath, [SCHEDULER, ...args], { reject: false, cwd: ROOT });
// biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
const lines = (stdout: string): any[] => stdout.trim().split('\n').map((line) => JSON.parse(line));

describe('bin/scheduler', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    // input.json's tasks keep their files under $TMPDIR: a private one, so that a second copy of
    // the suite running at the same time does not count this one's attempts.
    daemon = await startDaemon(['--concurrency', '4'], { env: { TMPDIR: dir } });
  });
  afterAll(async () => {
    await daemon.stop();
  });

  const sleepers = (n: number, ms: number) => Array.from({ length: n }, () => ({ cmd: [CMD, '--sleep', String(ms)] }));

  it('runs sequentially one task after another, concurrently all at once', async () => {
    const file = inputFile('sleepers.json', sleepers(4, 600));
    const sequential = await scheduler(['-input', file, '-port', String(daemon.port)]);
    expect(sequential.exitCode).toBe(0);
    const concurrent = await scheduler(['--input', file, '--concurrent', '--port', String(daemon.port)]);
    expect(concurrent.exitCode).toBe(0);
    const wall = (stderr: string) => Number(/in ([\d.]+) s/.exec(stderr)![1]);
    expect(wall(sequential.stderr)).toBeGreaterThanOrEqual(2.3);
    // Told by the tasks' own times, not by wall time (which a loaded machine stretches): sequentially each
    // starts once the one before has finished; concurrently all four have started before the first ends.
    const times = (stdout: string) =>
      lines(stdout)
        .map((task) => ({ started: Date.parse(task.started_at), finished: Date.parse(task.finished_at) }))
        .sort((x, y) => x.started - y.started);
    const one = times(sequential.stdout);
    for (let i = 1; i < one.length; i++) expect(one[i]!.started).toBeGreaterThanOrEqual(one[i - 1]!.finished);
    const all = times(concurrent.stdout);
    expect(all).toHaveLength(4);
    expect(Math.max(...all.map((task) => task.started))).toBeLessThan(Math.min(...all.map((task) => task.finished)));
    expect(concurrent.stderr).toMatch(/4 tasks: 4 completed, 0 failed/);
  });

  it('prints one JSON line per task, runs dependencies first, and exits 1 when a task failed', async () => {
    const file = inputFile('deps.json', [
      { id: 'report', cmd: 'echo report', depends_on: ['build'] },
      { id: 'build', cmd: [CMD, '--stdout', 'built'] },
      { id: 'broken', cmd: [CMD, '--exit', '4'] },
    ]);
    for (const mode of [[], ['-concurrent']]) {
      const result = await scheduler(['-input', file, '-port', String(daemon.port), ...mode]);
      expect(result.exitCode).toBe(1);
      const records = lines(result.stdout);
      // biome-ignore lint/suspicious/noExplicitAny: task records as printed; the assertions check their shape
      const byName: Record<string, any> = Object.fromEntries(records.map((r) => [r.id.split(':').pop(), r]));
      expect(byName.build).toMatchObject({ state: 'COMPLETED', stdout: 'built' });
      expect(byName.report).toMatchObject({ state: 'COMPLETED', stdout: 'report\n' });
      expect(byName.report.depends_on).toEqual([byName.build.id]);
      expect(byName.broken).toMatchObject({ state: 'FAILED', exit_code: 4 });
      expect(result.stderr).toMatch(/3 tasks: 2 completed, 1 failed/);
    }
  });

  it('reads NDJSON input and reports a rejected spec as a result line', async () => {
    const file = inputFile('tasks.ndjson', `{"cmd":"echo one"}\n\n{"cmd":"echo two","timout_ms":5}\n`);
    const result = await scheduler(['-input', file, '-port', String(daemon.port)]);
    expect(result.exitCode).toBe(1);
    const [first, second] = lines(result.stdout);
    expect(first).toMatchObject({ state: 'COMPLETED', stdout: 'one\n' });
    expect(second).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
    expect(second.error.message).toContain('timout_ms');
    const one = await scheduler(['-input', inputFile('one.ndjson', '{"cmd":"true"}\n'), '-port', String(daemon.port)]);
    expect(one.stderr).toMatch(/^1 task: 1 completed, 0 failed in /m);
  });

  it('runs the repository input.json, showing every feature it demonstrates', async () => {
    const result = await scheduler(['-concurrent', '-port', String(daemon.port)]);
    // biome-ignore lint/suspicious/noExplicitAny: task records as printed; the assertions check their shape
    const byName: Record<string, any> = Object.fromEntries(lines(result.stdout).map((r) => [r.id.split(':').pop(), r]));
    expect(byName['times-out']).toMatchObject({ state: 'FAILED', timed_out: true, error: { code: 'TIMEOUT' } });
    expect(byName['retried-until-it-works']).toMatchObject({ state: 'COMPLETED', attempts: 3 });
    expect(byName['pipeline-report'].stdout).toBe('sum of 1..1000 = 500500\n');
    expect(byName['network-local-http'].stdout).toBe('200 pong from /ping\n');
    const delayed = byName['delayed-start'];
    expect(Date.parse(delayed.started_at) - Date.parse(delayed.created_at)).toBeGreaterThanOrEqual(1400);
    const others = Object.entries(byName).filter(([name]) => name !== 'times-out');
    expect(others.every(([, r]) => r.state === 'COMPLETED')).toBe(true);
    expect(result.exitCode).toBe(1); // the timeout is part of the demonstration
  });

  it('exits 2 with advice when no daemon listens, and on bad usage', async () => {
    const file = inputFile('one.json', [{ cmd: 'true' }]);
    const noDaemon = await scheduler(['-input', file, '-port', '1']);
    expect(noDaemon.exitCode).toBe(2);
    expect(noDaemon.stderr).toMatch(/npm start/);
    const missing = await scheduler(['-input', join(dir, 'nope.json'), '-port', String(daemon.port)]);
    expect(missing).toMatchObject({ exitCode: 2, stderr: `scheduler: --input ${join(dir, 'nope.json')}: no such file` });
    const badLine = inputFile('bad.ndjson', '{"cmd":"true"}\n{"cmd": tru}\n');
    const bad = await scheduler(['-input', badLine, '-port', String(daemon.port)]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(new RegExp(`^scheduler: ${badLine}:2: not valid JSON \\(`));
    const notSpec = await scheduler(['-input', inputFile('number.ndjson', '{"cmd":"true"}\n5\n'), '-port', String(daemon.port)]);
    expect(notSpec.stderr).toContain(':2: expected a task spec, a JSON object');
    const unknown = await scheduler(['--frobnicate']);
    expect(unknown.exitCode).toBe(2);
    const long = 'x'.repeat(125); // a valid id, but not with the run's prefix
    const tooLong = await scheduler(['-input', inputFile('long-id.json', [{ id: long, cmd: 'true' }]), '-port', String(daemon.port)]);
    expect(tooLong).toMatchObject({ exitCode: 2, stderr: expect.stringMatching(/has 125 characters: with this run's prefix .* passes 128; give --keep-ids/) });
    const notSpecItem = await scheduler(['-input', inputFile('null-item.json', [{ cmd: 'true' }, null]), '-port', String(daemon.port)]);
    expect(notSpecItem).toMatchObject({ exitCode: 2, stderr: expect.stringContaining('null-item.json: item 2: expected a task spec') });
  });

  it('orders a chain of 10,000 dependencies, listed dependents first, without running out of stack', async () => {
    const chain = Array.from({ length: 10_000 }, (_, i) => ({ id: `c${i}`, cmd: 'true', ...(i < 9_999 ? { depends_on: [`c${i + 1}`] } : {}) }));
    // No daemon: the order is made before connecting, which then fails as without a daemon (exit 2).
    const result = await scheduler(['-input', inputFile('chain.json', chain), '-port', '1']);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/cannot connect/);
    const cycle = await scheduler(['-input', inputFile('cycle.json', [{ id: 'a', cmd: 'true', depends_on: ['b'] }, { id: 'b', cmd: 'true', depends_on: ['a'] }]), '-port', '1']);
    expect(cycle).toMatchObject({ exitCode: 2, stderr: 'scheduler: dependency cycle: a -> b -> a' });
  });

  it('stops quietly when its reader does (| head -1), with the status of a program ended by SIGPIPE', async () => {
    // The first task ends at once; the others a while later, when head has long gone.
    const specs = [{ cmd: 'echo first' }, ...Array.from({ length: 5 }, (_, i) => ({ cmd: `sleep 0.5; echo ${i}` }))];
    const file = inputFile('staggered.ndjson', specs.map((spec) => JSON.stringify(spec)).join('\n'));
    const command = `"${process.execPath}" "${SCHEDULER}" -input "${file}" -port ${daemon.port} -concurrent | head -1; exit \${PIPESTATUS[0]}`;
    const piped = await execa('bash', ['-c', command], { reject: false });
    expect(piped.stderr).not.toMatch(/EPIPE|Error/);
    expect(lines(piped.stdout)[0]).toMatchObject({ state: 'COMPLETED', stdout: 'first\n' });
    expect(piped.exitCode).toBe(141);
  });
});

describe('bin/scheduler across a daemon restart', () => {
  it('reconnects, resubmits and prints every result exactly once', async () => {
    const first = await startDaemon();
    const starts = join(dir, 'restart-starts.ndjson');
    const file = inputFile('restart.json', Array.from({ length: 6 }, (_, i) => ({ id: `r${i}`, cmd: [CMD, '--record', starts, '--sleep', '1500'] })));
    const run = scheduler(['-input', file, '-concurrent', '-port', String(first.port)]);
    // Kill the daemon once every task's process has started (RUNNING alone is journaled just
    // before the start: killed then, an attempt rightly does not count as interrupted), then
    // start it again on the same port and data dir.
    await eventually(() => existsSync(starts) && readFileSync(starts, 'utf8').trim().split('\n').length === 6, 30_000);
    await first.kill();
    const second = await startDaemon(['--port', String(first.port)], { dataDir: first.dataDir });
    const result = await run;
    await second.stop();
    expect(result.exitCode).toBe(0);
    const records = lines(result.stdout);
    expect(records).toHaveLength(6);
    expect(new Set(records.map((r) => r.id)).size).toBe(6);
    expect(records.every((r) => r.state === 'COMPLETED' && r.interrupted === 1)).toBe(true);
    expect(result.stderr).toMatch(/reconnecting/);
  });
});
