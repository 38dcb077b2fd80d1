import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoredGroup, StoredTask, TaskJournal, TaskPatch } from '../scheduler/index.js';
import { prepareDataDir } from './data-dir.js';
import { syncDirectory } from './durable-file.js';
import { DataDirError } from './errors.js';
import { LEGACY_SNAPSHOT, LEGACY_SNAPSHOT_TEMP } from './legacy-snapshot.js';
import { lockDataDir } from './lock.js';
import { LogWriter } from './log-writer.js';
import { logGenerations, logName, readJournal, type JournalOnDisk } from './recovery.js';
import { encodeEntry, type Groups } from './replay.js';
import { SnapshotWriter } from './snapshot-writer.js';

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
 * Durable task state: a snapshot of every task (one line each) plus an
 * append-only NDJSON log of the changes since, like beanstalkd's binlog
 * beside a Redis-style snapshot. A change costs one appended line; the log
 * is folded into a new snapshot when it has grown past its bound.
 */
export class Journal implements TaskJournal {
  private retiring: LogWriter | undefined;
  private compacting: Promise<void> | undefined;
  /** aborts the snapshot being written: the daemon is stopping */
  private readonly closing = new AbortController();
  /** tasks and groups as of now, for the next snapshot (set by whoever owns the state) */
  snapshotSource: () => StoredTask[] = () => [];
  groupSource: () => Groups = () => new Map();

  private constructor(
    private readonly dir: string,
    private log: LogWriter,
    private generation: number,
    /** size of the snapshot on disk */
    private snapshotBytes: number,
    private readonly options: JournalOptions,
    private readonly unlock: () => Promise<void>,
  ) {}

  /**
   * Locks the data dir, reads and checks the whole journal, and only then
   * starts a fresh log generation and its snapshot. A journal that does not
   * add up throws JournalCorruptError with every file left as it was; a file
   * system error throws DataDirError naming the data dir.
   */
  static async open(dir: string, options: JournalOptions): Promise<{ journal: Journal; tasks: StoredTask[]; groups: Groups; crashed: boolean }> {
    const warn = options.warn ?? ((message: string) => console.warn(message));
    try {
      await prepareDataDir(dir, warn);
      const lock = await lockDataDir(join(dir, 'lock'));
      try {
        const found = await readJournal(dir, warn);
        const journal = await Journal.start(dir, found, options, lock.release);
        return { journal, tasks: found.tasks, groups: found.groups, crashed: lock.tookOverStale };
      } catch (error) {
        await lock.abandon();
        throw error;
      }
    } catch (error) {
      throw (error as NodeJS.ErrnoException).code === undefined ? error : new DataDirError(dir, error as NodeJS.ErrnoException);
    }
  }

  /**
   * Starts the log of a new generation after what open has read, and a
   * snapshot of it, as a compaction does. The start waits only until the
   * snapshot's header is written (a disk with no room at all fails the start
   * here, with every file as it was); the tasks are written while the daemon
   * already serves, and until they are durable the logs read stay in place.
   */
  private static async start(dir: string, found: JournalOnDisk, options: JournalOptions, unlock: () => Promise<void>): Promise<Journal> {
    // A new data dir gets a snapshot (generation 0) before its first log, so that no log is ever without one.
    if (found.empty) await (await SnapshotWriter.open(dir, 0, [], new Map())).write();
    const generation = found.lastGeneration + 1;
    const log = await createLog(dir, generation, options);
    let snapshot: SnapshotWriter;
    try {
      snapshot = await SnapshotWriter.open(dir, generation, found.tasks, found.groups);
    } catch (error) {
      await log.close();
      // No snapshot names the new log: it is empty and of no use to the next start.
      await unlink(log.path).catch(() => undefined);
      throw error;
    }
    const journal = new Journal(dir, log, generation, found.snapshotBytes, options, unlock);
    journal.compacting = journal.complete(snapshot, generation).finally(() => (journal.compacting = undefined));
    return journal;
  }

  put(id: string, patch: TaskPatch): void {
    this.append(encodeEntry({ id, set: patch }));
  }

  drop(id: string): void {
    this.append(encodeEntry({ id, drop: true }));
  }

  putGroup(name: string, patch: StoredGroup): void {
    this.append(encodeEntry({ group: name, set: patch }));
  }

  flushed(): Promise<void> {
    return this.retiring ? Promise.all([this.retiring.flushed(), this.log.flushed()]).then(() => undefined) : this.log.flushed();
  }

  /** bytes on disk: the snapshot and the current log */
  get sizeBytes(): number {
    return this.snapshotBytes + this.log.size;
  }

  /** Flushes and closes; a snapshot still being written is given up (the logs it would replace stay). */
  async close(): Promise<void> {
    this.closing.abort();
    await this.compacting;
    await this.log.close();
    await this.unlock();
  }

  private append(line: string): void {
    this.log.append(line);
    const bound = Math.max(this.options.compactAfterBytes ?? 64 * 1024 * 1024, this.snapshotBytes);
    if (!this.compacting && this.log.size > bound) {
      this.compacting = this.compact().finally(() => (this.compacting = undefined));
    }
  }

  /**
   * Starts a new log and snapshots the state at that same instant. Until the
   * snapshot is durable the old log is kept, so a crash at any point leaves
   * snapshot + logs that replay to the same state.
   *
   * The tasks are taken at that instant (the array of them), but each is
   * serialized later, a batch at a time, and may by then hold changes made
   * after the instant. That is still right: every such change is also in
   * the new log, which replay applies over the snapshot, and every log line
   * sets fields to absolute values (or drops the task), so applying it again
   * over a state that already holds it, or a later one, ends in the same
   * state. A task created after the instant is not in the array: the new log
   * creates it. A task dropped after the instant is in the array, and the
   * new log drops it.
   */
  private async compact(): Promise<void> {
    const generation = this.generation + 1;
    let next: LogWriter;
    try {
      next = await createLog(this.dir, generation, this.options);
    } catch (error) {
      this.warnFailed(error as Error);
      return;
    }
    next.follow(this.log.flushed());
    this.retiring = this.log;
    this.log = next;
    this.generation = generation;
    const tasks = this.snapshotSource();
    // Copied at the instant: the header is written before the tasks, and the groups may change meanwhile.
    const groups = new Map(Array.from(this.groupSource(), ([name, group]) => [name, { ...group }]));
    let snapshot: SnapshotWriter;
    try {
      snapshot = await SnapshotWriter.open(this.dir, generation, tasks, groups);
    } catch (error) {
      await this.retire().catch(() => undefined);
      this.warnFailed(error as Error);
      return;
    }
    await this.complete(snapshot, generation);
  }

  /**
   * Writes the tasks of a snapshot of `generation`, then closes the log it
   * replaces and deletes what it holds. A failure is not fatal: the old logs
   * stay (the snapshot on disk still needs them), and the next compaction
   * tries again.
   */
  private async complete(snapshot: SnapshotWriter, generation: number): Promise<void> {
    try {
      this.snapshotBytes = await snapshot.write(this.closing.signal);
      await this.retire();
      await this.removeObsolete(generation);
    } catch (error) {
      await this.retire().catch(() => undefined);
      if (!this.closing.signal.aborted) this.warnFailed(error as Error);
    }
  }

  private warnFailed(error: Error): void {
    (this.options.warn ?? console.warn)(`journal compaction failed, will retry: ${error.message}`);
  }

  /** Closes the log that compaction replaced, once what was appended to it is written. */
  private async retire(): Promise<void> {
    try {
      await this.retiring?.close();
    } finally {
      this.retiring = undefined;
    }
  }

  /** Deletes what the snapshot of `generation` holds: the older logs, and the snapshot of earlier versions. */
  private async removeObsolete(generation: number): Promise<void> {
    const logs = (await logGenerations(this.dir)).filter((old) => old < generation).map(logName);
    for (const name of [...logs, LEGACY_SNAPSHOT, LEGACY_SNAPSHOT_TEMP]) await unlink(join(this.dir, name)).catch(() => undefined);
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
