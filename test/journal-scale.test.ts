import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskManagerError } from '../src/index.js';
import { BATCH_CHARS, writeTaskLines } from '../src/journal/snapshot-writer.js';
import { SPEC_DEFAULTS } from '../src/protocol/index.js';
import { newStoredTask } from '../src/scheduler/task.js';
import { logGenerations, removeDir, snapshotOf, snapshotSettled, startDaemon, tempDir, type TestDaemon } from './helpers.js';

/**
 * A journal whose snapshot is larger than a JavaScript string could hold:
 * specs in the gigabytes reach it. The snapshot is written as a stream,
 * so no single string of it ever exists; tested without building such a
 * data dir, which would be too slow here, and end to end with specs of a
 * megabyte each up to --max-spec-bytes.
 */

const MB = 1024 * 1024;

describe('writing a snapshot', () => {
  /** A stream as slow as a disk: one write at a time, each done a turn of the event loop later. */
  class CountingStream extends Writable {
    largestWrite = 0;
    written = '';
    constructor() {
      super({ highWaterMark: 1, decodeStrings: false });
    }
    override _write(chunk: string, _encoding: string, done: () => void): void {
      this.largestWrite = Math.max(this.largestWrite, chunk.length);
      this.written += chunk;
      setImmediate(done);
    }
  }

  it('never builds one string of all tasks, and lets the event loop run between batches', async () => {
    const spec = { ...SPEC_DEFAULTS, cmd: 'x'.repeat(100_000), depends_on: [] };
    const tasks = Array.from({ length: 300 }, (_, i) => newStoredTask(`big-${i}`, i + 1, spec, Date.now()));
    const out = new CountingStream();
    // One count per turn of the event loop, however fast the machine (a timer would fire only
    // once a millisecond had passed).
    let turns = 0;
    let ticking = setImmediate(function tick() {
      turns++;
      ticking = setImmediate(tick);
    });
    await writeTaskLines(tasks, out);
    clearImmediate(ticking);

    const lines = out.written.trimEnd().split('\n');
    expect(lines.map((line) => JSON.parse(line).id)).toEqual(tasks.map((task) => task.id));
    // 60 MB of tasks (the cmd is stored twice), written a batch at a time: no write larger than a batch and the task that filled it.
    const taskLine = JSON.stringify(tasks.at(-1)).length + 1; // the longest id
    expect(out.written.length).toBeGreaterThan(300 * (taskLine - 2));
    expect(out.largestWrite).toBeLessThan(BATCH_CHARS + taskLine);
    // The event loop turned between batches: the write never held it for all of them.
    expect(turns).toBeGreaterThanOrEqual(out.written.length / (BATCH_CHARS + taskLine) - 2);
  });
});

describe('a flood of large specs', () => {
  const daemons: TestDaemon[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(daemons.splice(0).map((daemon) => daemon.kill()));
    dirs.splice(0).forEach(removeDir);
  });

  const flags = ['--compact-after-bytes', String(MB), '--max-spec-bytes', String(48 * MB), '--max-line-bytes', String(2 * MB)];
  const stdin = 'x'.repeat(MB);

  async function daemon(dataDir: string): Promise<TestDaemon> {
    const started = await startDaemon(flags, { dataDir });
    daemons.push(started);
    return started;
  }

  it.each(['kill -9', 'a clean stop'])('takes 1 MB specs until QUEUE_FULL, and after %s starts with every acknowledged task', async (end) => {
    const dataDir = tempDir('tm-flood-');
    dirs.push(dataDir);
    const first = await daemon(dataDir);
    const client = await first.client();
    // They wait an hour: every one stays unfinished, and its spec counts against the bound.
    const acknowledged: string[] = [];
    let refusal: unknown;
    for (let i = 0; refusal === undefined; i++) {
      const window = Array.from({ length: 8 }, (_, k) => client.submit({ id: `flood-${i * 8 + k}`, cmd: ['cat'], stdin, delay_ms: 3_600_000 }));
      for (const submitted of await Promise.allSettled(window)) {
        if (submitted.status === 'fulfilled') acknowledged.push(submitted.value.task.id);
        else refusal = submitted.reason;
      }
      // A compaction under way when a window is sent holds the next one back (how many would fit while the
      // submits run depends on the machine's speed, and a loaded one fitted only one).
      await snapshotSettled(dataDir, 30_000);
    }
    expect(refusal).toBeInstanceOf(TaskManagerError);
    expect(refusal).toMatchObject({ code: 'QUEUE_FULL' });
    expect((refusal as Error).message).toContain('--max-spec-bytes');
    expect(acknowledged.length).toBeGreaterThan(40); // 48 MiB of specs of about 1 MiB each
    expect(acknowledged.length).toBeLessThan(48);
    // The log outgrew the snapshot in turn, and the growing snapshot set the bound: it was compacted twice.
    expect(logGenerations(dataDir).at(-1)).toBeGreaterThanOrEqual(3);
    await client.close();
    if (end === 'kill -9') await first.kill();
    else expect(await first.stop()).toBe(0);

    const second = await daemon(dataDir);
    const again = await second.client();
    const { total, tasks } = await again.list({ limit: 1000 });
    expect(total).toBe(acknowledged.length);
    expect(tasks.map((task) => task.id).sort()).toEqual([...acknowledged].sort());
    expect(tasks.every((task) => task.state === 'PENDING')).toBe(true);
    // The bound holds across the restart: the restored specs count.
    await expect(again.submit({ cmd: ['cat'], stdin, delay_ms: 3_600_000 })).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    await again.close();
    await snapshotSettled(dataDir, 30_000);
    expect(await second.stop()).toBe(0);
    // The snapshot the start wrote holds every task with its whole spec.
    const snapshot = snapshotOf(dataDir);
    expect(snapshot.tasks.length).toBe(acknowledged.length);
    expect(snapshot.tasks.every((task) => task.spec.stdin === stdin)).toBe(true);
  }, 120_000);
});
