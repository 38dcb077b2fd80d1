import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { withoutClearedFields, type StoredTask } from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';
import { replayLog, type Groups } from './replay.js';
import { SNAPSHOT } from './snapshot-format.js';
import { readSnapshot } from './snapshot-reader.js';

const LOG_NAME = /^log\.(0|[1-9]\d*)\.ndjson$/;
export const logName = (generation: number) => `log.${generation}.ndjson`;

/** What a data dir holds, read and checked. */
export interface JournalOnDisk {
  /** no snapshot and no log: a data dir never used */
  empty: boolean;
  /** every task, with all logs replayed, in submission order */
  tasks: StoredTask[];
  /** the settings of groups, with all logs replayed */
  groups: Groups;
  /** the newest generation on disk: the next log is one past it */
  lastGeneration: number;
  /** size of the snapshot read */
  snapshotBytes: number;
}

/**
 * Reads the snapshot and every log to replay, and checks all of it: the
 * snapshot's tasks, each log line, and that the generations fit the order
 * in which they are written. Writes nothing, so a journal that does not add
 * up (a JournalCorruptError naming the file and line) is left as it was.
 */
export async function readJournal(dir: string, warn: (message: string) => void): Promise<JournalOnDisk> {
  const snapshot = await readSnapshot(dir);
  const logs = await logGenerations(dir);
  const lastGeneration = Math.max(0, ...logs);
  if (snapshot === null) {
    await checkNothingLogged(dir, logs);
    return { empty: logs.length === 0, tasks: [], groups: new Map(), lastGeneration, snapshotBytes: 0 };
  }
  for (const generation of logsToReplay(snapshot.path, snapshot.generation, logs)) {
    await replayLog(join(dir, logName(generation)), snapshot.tasks, warn, snapshot.groups);
  }
  return {
    empty: false,
    tasks: Array.from(snapshot.tasks.values(), withoutClearedFields),
    groups: snapshot.groups,
    lastGeneration: Math.max(snapshot.generation, lastGeneration),
    snapshotBytes: snapshot.bytes,
  };
}

/**
 * Without a snapshot there is nothing a log could apply to. Empty logs are
 * what a first start by an earlier version left when it stopped before its
 * first snapshot; a log with changes in it means the snapshot was lost.
 */
async function checkNothingLogged(dir: string, logs: number[]): Promise<void> {
  for (const generation of logs) {
    const { size } = await stat(join(dir, logName(generation)));
    if (size > 0) {
      throw new JournalCorruptError(join(dir, SNAPSHOT), `missing, but ${logName(generation)} holds changes (${size} bytes) that apply to it; put it back from a backup`);
    }
  }
}

/**
 * The logs the snapshot at `snapshotPath`, of `generation`, needs, from the
 * order files are written in: the log of a generation exists (its name
 * synced) before any snapshot names it, a new log is one past the newest,
 * and a log is deleted only once a later snapshot holds its changes. So
 * logs from `generation` on follow one another without a gap, starting at
 * `generation` itself unless that is 0 (the snapshot of a new data dir,
 * written before any log). Older logs are leftovers of a compaction that
 * stopped before deleting them.
 */
export function logsToReplay(snapshotPath: string, generation: number, logs: number[]): number[] {
  const replay = logs.filter((log) => log >= generation);
  if (generation > 0 && replay[0] !== generation) {
    throw new JournalCorruptError(snapshotPath, `generation ${generation} needs ${logName(generation)}, which is missing`);
  }
  replay.forEach((log, index) => {
    const expected = Math.max(generation, 1) + index;
    if (log !== expected) {
      const dir = dirname(snapshotPath);
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
