import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import type { StoredTask, TaskJournal, TaskPatch } from '../scheduler/index.js';
import { prepareDataDir } from './data-dir.js';
import { DurableJSONFile, syncDirectory } from './durable-json-file.js';
import { DataDirError } from './errors.js';
import { lockDataDir } from './lock.js';
import { LogWriter } from './log-writer.js';
import { SNAPSHOT, logGenerations, logName, readJournal, type JournalOnDisk, type Snapshot } from './recovery.js';
import { encodeEntry } from './replay.js';

export type Durability = 'fsync' | 'none';

export interface JournalOptions {
  /** `fsync`: every acknowledged change is on disk; `none`: left to the OS page cache */
  durability: Durability;
  /** the log is compacted into a new snapshot once it is larger than this and the last snapshot */
  compactAfterBytes?: number;
  warn?: (message: string) => void;
  /** the journal can no longer be written (disk full, I/O error) */
  onFailure?: (error: Error) => void;
}

/**
 * Durable task state: a lowdb JSON snapshot of every task plus an
 * append-only NDJSON log of the changes since, like beanstalkd's binlog
 * beside a Redis-style snapshot. A change costs one appended line; the log
 * is folded into a new snapshot when it has grown past its bound.
 */
export class Journal implements TaskJournal {
  private retiring: LogWriter | undefined;
  private compacting: Promise<void> | undefined;
  /** tasks as of now, for the next snapshot (set by whoever owns the state) */
  snapshotSource: () => StoredTask[] = () => [];

  private constructor(
    private readonly dir: string,
    private readonly db: Low<Snapshot>,
    private readonly snapshotFile: DurableJSONFile<Snapshot>,
    private log: LogWriter,
    private generation: number,
    private readonly options: JournalOptions,
    private readonly unlock: () => Promise<void>,
  ) {}

  /**
   * Locks the data dir, reads and checks the whole journal, and only then
   * starts a fresh log generation with a snapshot of everything. A journal
   * that does not add up throws JournalCorruptError with every file left as
   * it was; a file system error throws DataDirError naming the data dir.
   */
  static async open(dir: string, options: JournalOptions): Promise<{ journal: Journal; tasks: StoredTask[]; crashed: boolean }> {
    const warn = options.warn ?? ((message: string) => console.warn(message));
    try {
      await prepareDataDir(dir, warn);
      const lock = await lockDataDir(join(dir, 'lock'));
      try {
        const found = await readJournal(dir, warn);
        const journal = await Journal.start(dir, found, options, lock.release);
        return { journal, tasks: found.tasks, crashed: lock.tookOverStale };
      } catch (error) {
        await lock.abandon();
        throw error;
      }
    } catch (error) {
      throw (error as NodeJS.ErrnoException).code === undefined ? error : new DataDirError(dir, error as NodeJS.ErrnoException);
    }
  }

  /** Writes what open has read as the snapshot of a new generation. */
  private static async start(dir: string, found: JournalOnDisk, options: JournalOptions, unlock: () => Promise<void>): Promise<Journal> {
    const snapshotFile = new DurableJSONFile<Snapshot>(join(dir, SNAPSHOT));
    const db = new Low<Snapshot>(snapshotFile, { format: 1, generation: 0, tasks: [] });
    // A new data dir gets a snapshot (generation 0) before its first log, so that no log is ever without one.
    if (found.empty) await snapshotFile.write({ format: 1, generation: 0, tasks: [] });
    const generation = found.lastGeneration + 1;
    const log = await createLog(dir, generation, options);
    const journal = new Journal(dir, db, snapshotFile, log, generation, options, unlock);
    const replaced = snapshotFile.replaced;
    try {
      await journal.writeSnapshot(found.tasks, generation);
      await journal.removeLogsBefore(generation);
      return journal;
    } catch (error) {
      await log.close();
      // No snapshot names the new log yet: it is empty and of no use to the next start.
      if (snapshotFile.replaced === replaced) await unlink(log.path).catch(() => undefined);
      throw error;
    }
  }

  put(id: string, patch: TaskPatch): void {
    this.append(encodeEntry({ id, set: patch }));
  }

  drop(id: string): void {
    this.append(encodeEntry({ id, drop: true }));
  }

  flushed(): Promise<void> {
    return this.retiring ? Promise.all([this.retiring.flushed(), this.log.flushed()]).then(() => undefined) : this.log.flushed();
  }

  /** bytes on disk: the snapshot and the current log */
  get sizeBytes(): number {
    return this.snapshotFile.bytes + this.log.size;
  }

  async close(): Promise<void> {
    await this.compacting;
    await this.log.close();
    await this.unlock();
  }

  private append(line: string): void {
    this.log.append(line);
    const bound = Math.max(this.options.compactAfterBytes ?? 64 * 1024 * 1024, this.snapshotFile.bytes);
    if (!this.compacting && this.log.size > bound) {
      this.compacting = this.compact().finally(() => (this.compacting = undefined));
    }
  }

  /**
   * Starts a new log and snapshots the state at that same instant. Until the
   * snapshot is durable the old log is kept, so a crash at any point leaves
   * snapshot + logs that replay to the same state.
   */
  private async compact(): Promise<void> {
    try {
      const generation = this.generation + 1;
      const next = await createLog(this.dir, generation, this.options);
      next.follow(this.log.flushed());
      this.retiring = this.log;
      this.log = next;
      this.generation = generation;
      await this.writeSnapshot(this.snapshotSource(), generation); // serialized synchronously, now
      await this.retire();
      await this.removeLogsBefore(generation);
    } catch (error) {
      // The old log stays on disk (the snapshot on disk still needs it), but its writer is done with.
      await this.retire().catch(() => undefined);
      (this.options.warn ?? console.warn)(`journal compaction failed, will retry: ${(error as Error).message}`);
    }
  }

  /** Closes the log that compaction replaced, once what was appended to it is written. */
  private async retire(): Promise<void> {
    try {
      await this.retiring?.close();
    } finally {
      this.retiring = undefined;
    }
  }

  private async writeSnapshot(tasks: StoredTask[], generation: number): Promise<void> {
    this.db.data = { format: 1, generation, tasks };
    const writing = this.db.write(); // serializes before it returns
    this.db.data = { format: 1, generation, tasks: [] }; // the scheduler owns the tasks from here
    await writing;
  }

  private async removeLogsBefore(generation: number): Promise<void> {
    for (const old of await logGenerations(this.dir)) {
      if (old < generation) await unlink(join(this.dir, logName(old))).catch(() => undefined);
    }
  }
}

/**
 * Creates the log of a new generation and makes its name durable, before
 * any snapshot names it and before anything appended to it is acknowledged.
 */
async function createLog(dir: string, generation: number, options: JournalOptions): Promise<LogWriter> {
  const log = await LogWriter.open(join(dir, logName(generation)), options.durability === 'fsync');
  if (options.onFailure) log.onFailure = options.onFailure;
  try {
    await syncDirectory(dir);
    return log;
  } catch (error) {
    await log.close();
    await unlink(log.path).catch(() => undefined);
    throw error;
  }
}
