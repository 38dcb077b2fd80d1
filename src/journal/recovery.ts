import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoredTask } from '../scheduler/index.js';
import { DurableJSONFile } from './durable-json-file.js';
import { JournalCorruptError } from './errors.js';
import { replayLog, tidy } from './replay.js';
import { isCount, isObject, shown, storedTaskProblem } from './stored-task.js';

export interface Snapshot {
  format: 1;
  /** the first log generation not contained in this snapshot */
  generation: number;
  tasks: StoredTask[];
}

export const SNAPSHOT = 'snapshot.json';
const LOG_NAME = /^log\.(0|[1-9]\d*)\.ndjson$/;
export const logName = (generation: number) => `log.${generation}.ndjson`;

/** What a data dir holds, read and checked. */
export interface JournalOnDisk {
  /** no snapshot and no log: a data dir never used */
  empty: boolean;
  /** every task, with all logs replayed */
  tasks: StoredTask[];
  /** the newest generation on disk: the next log is one past it */
  lastGeneration: number;
}

/**
 * Reads the snapshot and every log to replay, and checks all of it: the
 * snapshot's tasks, each log line, and that the generations fit the order
 * in which they are written. Writes nothing, so a journal that does not add
 * up (a JournalCorruptError naming the file and line) is left as it was.
 */
export async function readJournal(dir: string, warn: (message: string) => void): Promise<JournalOnDisk> {
  const snapshotPath = join(dir, SNAPSHOT);
  const data = await new DurableJSONFile<unknown>(snapshotPath).read();
  const logs = await logGenerations(dir);
  const lastGeneration = Math.max(0, ...logs);
  if (data === null) {
    await checkNothingLogged(dir, logs);
    return { empty: logs.length === 0, tasks: [], lastGeneration };
  }
  const snapshot = checkSnapshot(snapshotPath, data);
  const tasks = new Map(snapshot.tasks.map((task) => [task.id, task]));
  for (const generation of logsToReplay(dir, snapshot.generation, logs)) {
    const path = join(dir, logName(generation));
    replayLog(path, await readFile(path, 'utf8'), tasks, warn);
  }
  return { empty: false, tasks: [...tasks.values()].map(tidy), lastGeneration: Math.max(snapshot.generation, lastGeneration) };
}

/**
 * Without a snapshot there is nothing a log could apply to. Empty logs are
 * what a first start by an earlier version left when it stopped before its
 * first snapshot; a log with changes in it means the snapshot was lost.
 */
async function checkNothingLogged(dir: string, logs: number[]): Promise<void> {
  for (const generation of logs) {
    const text = await readFile(join(dir, logName(generation)), 'utf8');
    if (text.length > 0) {
      throw new JournalCorruptError(
        join(dir, SNAPSHOT),
        `missing, but ${logName(generation)} holds changes (${Buffer.byteLength(text)} bytes) that apply to it; put it back from a backup`,
      );
    }
  }
}

/** The snapshot's content, checked: its header and every task. */
export function checkSnapshot(path: string, data: unknown): Snapshot {
  if (!isObject(data)) throw new JournalCorruptError(path, `a snapshot must be an object, got ${shown(data)}`);
  if (data.format !== 1) throw new JournalCorruptError(path, `format must be 1, got ${shown(data.format)}`);
  if (!isCount(data.generation)) throw new JournalCorruptError(path, `generation must be an integer >= 0, got ${shown(data.generation)}`);
  if (!Array.isArray(data.tasks)) throw new JournalCorruptError(path, `tasks must be an array, got ${shown(data.tasks)}`);
  const ids = new Set<string>();
  data.tasks.forEach((task: unknown, index) => {
    const where = `${path}: tasks[${index}]`;
    const problem = storedTaskProblem(task);
    if (problem) throw new JournalCorruptError(isObject(task) && typeof task.id === 'string' ? `${where} (${shown(task.id)})` : where, problem);
    const { id } = task as StoredTask;
    if (ids.has(id)) throw new JournalCorruptError(`${where} (${shown(id)})`, 'a second task with this id');
    ids.add(id);
  });
  return data as unknown as Snapshot;
}

/**
 * The logs a snapshot of `generation` needs, from the order files are
 * written in: the log of a generation exists (its name synced) before any
 * snapshot names it, a new log is one past the newest, and a log is deleted
 * only once a later snapshot holds its changes. So logs from `generation` on
 * follow one another without a gap, starting at `generation` itself unless
 * that is 0 (the snapshot of a new data dir, written before any log).
 * Older logs are leftovers of a compaction that stopped before deleting them.
 */
export function logsToReplay(dir: string, generation: number, logs: number[]): number[] {
  const replay = logs.filter((log) => log >= generation);
  if (generation > 0 && replay[0] !== generation) {
    throw new JournalCorruptError(join(dir, SNAPSHOT), `generation ${generation} needs ${logName(generation)}, which is missing`);
  }
  replay.forEach((log, index) => {
    const expected = Math.max(generation, 1) + index;
    if (log !== expected) {
      throw new JournalCorruptError(join(dir, logName(log)), `${logName(expected)} is missing before it (the snapshot has generation ${generation})`);
    }
  });
  return replay;
}

/** Generations of the logs in `dir`, oldest first. */
export async function logGenerations(dir: string): Promise<number[]> {
  const names = await readdir(dir);
  return names
    .map((name) => LOG_NAME.exec(name)?.[1])
    .filter((generation): generation is string => generation !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}
