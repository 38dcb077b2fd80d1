import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startDaemon, tempDir } from './helpers.js';

const CYCLES = 14;
const TASKS_PER_CYCLE = 12;

interface Execution {
  event: 'end' | 'overlap';
  task: string;
}

/**
 * Crash loop: submit tasks that record each execution, SIGKILL the daemon at
 * a random moment (while it accepts submits, runs tasks, writes its journal
 * and compacts it: the compaction bound is tiny), restart it, repeat; then
 * check that nothing acknowledged was lost and nothing ran twice at once.
 */
describe('crash loop', () => {
  it(`loses no acknowledged task over ${CYCLES} kill -9 cycles and never runs a task twice at once`, async () => {
    const dataDir = tempDir('tm-crash-data-');
    const work = tempDir('tm-crash-work-');
    const records = join(work, 'executions.ndjson');
    const starts = join(work, 'starts.txt');
    const flags = ['--compact-after-bytes', '4096', '--kill-grace-ms', '200'];
    const acknowledged = new Set<string>();
    const journalSizes: number[] = [];
    let port = 0;

    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const daemon = await startDaemon([...flags, '--concurrency', '4', ...(port ? ['--port', String(port)] : [])], { dataDir });
      port = daemon.port;
      const raw = await daemon.raw();
      const killAfter = Math.random() * 600;
      const killed = new Promise<void>((resolve) => setTimeout(resolve, killAfter)).then(() => daemon.kill());
      for (let i = 0; i < TASKS_PER_CYCLE; i++) {
        const id = `c${cycle}-t${i}`;
        const spec: Record<string, unknown> = {
          op: 'submit',
          ref: id,
          id,
          // A shell, no Node: it notes each start the moment it exists, holds the task's lock (the kernel
          // frees it when the process dies, kill -9 included) and notes an overlap if another run holds it.
          cmd: [
            `echo ${id} >> ${starts}`,
            `exec 9>> ${join(work, `${id}.lock`)}`,
            `flock -n 9 || echo '{"event":"overlap","task":"${id}"}' >> ${records}`,
            `sleep ${(Math.random() * 0.4).toFixed(3)}`,
            `echo '{"event":"end","task":"${id}"}' >> ${records}`,
          ].join('; '),
        };
        if (i % 3 === 2) spec.depends_on = [`c${cycle}-t${i - 1}`];
        if (i % 4 === 3) Object.assign(spec, { retries: 2, retry_delay_ms: 50 });
        raw.send(`${JSON.stringify(spec)}\n`);
      }
      // Acknowledgements that arrive before the kill are promises the daemon must keep.
      const collect = (async () => {
        for (;;) {
          const message = await Promise.race([raw.next(), raw.closed.then(() => undefined)]);
          if (message === undefined) return;
          if (message.ok) acknowledged.add(message.task.id);
        }
      })();
      await killed;
      await collect;
      // Executor processes outlive the daemon for a moment: reports they could not send are no error.
      expect(daemon.stderr()).not.toMatch(/EPIPE|Unhandled|at .*\.js:\d+/);
      journalSizes.push(journalBytes(dataDir));
    }

    // The last start only finishes the work: more at once, since the lock files still catch any overlap.
    const daemon = await startDaemon([...flags, '--concurrency', '16', '--port', String(port)], { dataDir });
    const client = await daemon.client();
    const finals = await Promise.all([...acknowledged].map(async (id) => (await client.wait(id)).task));
    journalSizes.push(journalBytes(dataDir));
    await client.close();
    expect(await daemon.stop()).toBe(0);

    expect(acknowledged.size).toBeGreaterThan(CYCLES); // the loop really exercised something
    for (const task of finals) expect(task.state, `${task.id}: ${JSON.stringify(task.error)}`).toBe('COMPLETED');

    const executions: Execution[] = readFileSync(records, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(executions.filter((e) => e.event === 'overlap')).toEqual([]);
    const ended = new Set(executions.filter((e) => e.event === 'end').map((e) => e.task));
    for (const task of finals) expect(ended.has(task.id), `${task.id} is COMPLETED but never ran to its end`).toBe(true);
    // The record tells the truth: every start of a task's process is counted, as an attempt or an interruption.
    const started = new Map<string, number>();
    for (const id of readFileSync(starts, 'utf8').trim().split('\n')) started.set(id, (started.get(id) ?? 0) + 1);
    const told = finals.map((task) => [task.id, task.attempts + (task.interrupted ?? 0)]);
    expect(told).toEqual(finals.map((task) => [task.id, started.get(task.id)]));

    // Compaction keeps the journal near the size of the live state, not of its history.
    const snapshot = statSync(join(dataDir, 'snapshot.ndjson')).size;
    expect(Math.max(...journalSizes)).toBeLessThan(2 * snapshot + 256 * 1024);
    expect(readdirSync(dataDir).filter((name) => name.startsWith('log.')).length).toBeLessThanOrEqual(2);
  }, 240_000);
});

function journalBytes(dir: string): number {
  return readdirSync(dir)
    .filter((name) => name.startsWith('log.') || name === 'snapshot.ndjson')
    .reduce((total, name) => total + statSync(join(dir, name)).size, 0);
}
