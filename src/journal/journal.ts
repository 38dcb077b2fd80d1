import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Low } from 'lowdb';
import type { StoredTask, TaskJournal, TaskPatch } from '../scheduler/index.js';
import { DurableJSONFile, syncDirectory } from './durable-json-file.js';
import { lockDataDir } from './lock.js';
import { LogWriter } from './log-writer.js';
import { encodeEntry, replayLog, tidy } from './replay.js';

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

interface Snapshot {
  format: 1;
  /** the first log generation not contained in this snapshot */
  generation: number;
  tasks: StoredTask[];
}

const SNAPSHOT = 'snapshot.json';
const LOG_NAME = /^log\.(\d+)\.ndjson$/;
const logName = (generation: number) => `log.${generation}.ndjson`;

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

  /** Locks the data dir, replays snapshot and logs, and starts a fresh log generation. */
  static async open(dir: string, options: JournalOptions): Promise<{ journal: Journal; tasks: StoredTask[]; crashed: boolean }> {
    const warn = options.warn ?? ((message: string) => console.warn(message));
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const { release: unlock, tookOverStale: crashed } = await lockDataDir(join(dir, 'lock'));
    try {
      const snapshotFile = new DurableJSONFile<Snapshot>(join(dir, SNAPSHOT));
      const db = new Low<Snapshot>(snapshotFile, { format: 1, generation: 0, tasks: [] });
      await db.read();
      const tasks = new Map(db.data.tasks.map((task) => [task.id, task]));
      const logs = await logGenerations(dir);
      for (const generation of logs) {
        if (generation >= db.data.generation) await replayLog(join(dir, logName(generation)), tasks, warn);
      }
      const recovered = [...tasks.values()].map(tidy);
      const generation = Math.max(db.data.generation, ...logs) + 1;
      const log = await openLog(join(dir, logName(generation)), options);
      const journal = new Journal(dir, db, snapshotFile, log, generation, options, unlock);
      await journal.writeSnapshot(recovered, generation);
      await journal.removeLogsBefore(generation);
      return { journal, tasks: recovered, crashed };
    } catch (error) {
      await unlock();
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
      const next = await openLog(join(this.dir, logName(generation)), this.options);
      await syncDirectory(this.dir); // the new log's name must be durable before anything is acknowledged from it
      this.retiring = this.log;
      this.log = next;
      this.generation = generation;
      const written = this.writeSnapshot(this.snapshotSource(), generation); // serialized synchronously, now
      await written;
      await this.retiring.close();
      this.retiring = undefined;
      await this.removeLogsBefore(generation);
    } catch (error) {
      (this.options.warn ?? console.warn)(`journal compaction failed, will retry: ${(error as Error).message}`);
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

async function openLog(path: string, options: JournalOptions): Promise<LogWriter> {
  const log = await LogWriter.open(path, options.durability === 'fsync');
  if (options.onFailure) log.onFailure = options.onFailure;
  return log;
}

async function logGenerations(dir: string): Promise<number[]> {
  const names = await readdir(dir);
  return names
    .map((name) => LOG_NAME.exec(name)?.[1])
    .filter((g): g is string => g !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}
