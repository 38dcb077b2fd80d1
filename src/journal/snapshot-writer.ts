import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate } from 'node:timers/promises';
import type { StoredGroup, StoredTask } from '../scheduler/index.js';
import { syncDirectory } from './durable-file.js';
import { SNAPSHOT, SNAPSHOT_FORMAT, type SnapshotHeader } from './snapshot-format.js';

/**
 * Characters of task lines serialized at a time: 1 to 3 ms of work, the
 * longest a snapshot holds clients up between two turns of the event loop.
 */
export const BATCH_CHARS = 256 * 1024;

/**
 * Writes a snapshot so that a crash or power loss leaves either the old one
 * or the whole new one: a temp file, written as a stream with back-pressure
 * (never one string of all tasks), fsynced, renamed over the old snapshot,
 * and the directory fsynced. A temp file whose write failed (disk full) is
 * removed: it would only hold space the next try needs.
 */
export class SnapshotWriter {
  private constructor(
    private readonly dir: string,
    private readonly temp: string,
    private readonly file: WriteStream,
    private readonly tasks: readonly StoredTask[],
  ) {}

  /**
   * Creates the temp file and writes its header line, naming `tasks.length`
   * tasks and holding the groups' settings; `write` writes the tasks. A disk with no room at all fails here,
   * before anything else is done.
   */
  static async open(dir: string, generation: number, tasks: readonly StoredTask[], groups: ReadonlyMap<string, StoredGroup>): Promise<SnapshotWriter> {
    const temp = join(dir, `.${SNAPSHOT}.tmp`);
    // flush: the file is fsynced before it is closed, and before `write` resolves.
    const file = createWriteStream(temp, { flags: 'w', mode: 0o600, flush: true, highWaterMark: BATCH_CHARS });
    // Every error also reaches a write's callback or the pipeline; unlistened, it would be thrown as well.
    file.on('error', () => undefined);
    const writer = new SnapshotWriter(dir, temp, file, tasks);
    const header: SnapshotHeader = { format: SNAPSHOT_FORMAT, generation, tasks: tasks.length };
    if (groups.size > 0) header.groups = Object.fromEntries(groups);
    try {
      await new Promise<void>((resolve, reject) => file.write(`${JSON.stringify(header)}\n`, (error) => (error ? reject(error) : resolve())));
    } catch (error) {
      await writer.abandon();
      throw error;
    }
    return writer;
  }

  /**
   * Writes the tasks and puts the file in place of the snapshot; resolves
   * with its size. `signal` gives it up (the daemon is stopping): the temp
   * file is removed, and the old snapshot stays as it was.
   */
  async write(signal?: AbortSignal): Promise<number> {
    try {
      await writeTaskLines(this.tasks, this.file, signal);
      await rename(this.temp, join(this.dir, SNAPSHOT));
    } catch (error) {
      await this.abandon();
      throw error;
    }
    await syncDirectory(this.dir);
    return this.file.bytesWritten;
  }

  private async abandon(): Promise<void> {
    if (!this.file.closed) {
      const closed = new Promise<void>((resolve) => this.file.once('close', () => resolve()));
      this.file.destroy();
      await closed;
    }
    await unlink(this.temp).catch(() => undefined);
  }
}

/** Writes one line per task to `out`, a batch at a time, and ends it. */
export function writeTaskLines(tasks: readonly StoredTask[], out: Writable, signal?: AbortSignal): Promise<void> {
  return pipeline(taskLines(tasks), out, { signal });
}

/**
 * The lines of `tasks`, about BATCH_CHARS at a time. Each batch is
 * serialized only once the one before has been taken (the stream pulls the
 * next one when it has room), and the event loop gets a turn in between.
 */
async function* taskLines(tasks: readonly StoredTask[]): AsyncGenerator<string> {
  let batch = '';
  for (const task of tasks) {
    batch += `${JSON.stringify(task)}\n`;
    if (batch.length >= BATCH_CHARS) {
      yield batch;
      batch = '';
      await setImmediate();
    }
  }
  if (batch !== '') yield batch;
}
