import type { StoredTask } from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';
import { groupProblem, isCount, isObject, shown, storedTaskProblem, type StoredGroup } from '../scheduler/index.js';

/**
 * The snapshot: a header line, then one stored task per line. Streamed to
 * and from disk, so its size is bounded by the disk, not by the longest
 * string a JavaScript engine can hold.
 */
export const SNAPSHOT = 'snapshot.ndjson';
export const SNAPSHOT_FORMAT = 2;

/** The snapshot's first line. */
export interface SnapshotHeader {
  format: typeof SNAPSHOT_FORMAT;
  /** the first log generation not contained in this snapshot */
  generation: number;
  /** how many task lines follow: a file cut short is refused, even at a line's end */
  tasks: number;
  /** the settings of the groups that have any, by name (absent when none has) */
  groups?: Record<string, StoredGroup>;
}

/** A snapshot read and checked, in either format. */
export interface SnapshotRead {
  path: string;
  generation: number;
  /** by id, in the order of the file (submission order) */
  tasks: Map<string, StoredTask>;
  groups: Map<string, StoredGroup>;
  bytes: number;
}

export function checkHeader(where: string, value: unknown): SnapshotHeader {
  if (!isObject(value)) throw new JournalCorruptError(where, `the first line must be the snapshot's header, an object, got ${shown(value)}`);
  if (value.format !== SNAPSHOT_FORMAT) throw new JournalCorruptError(where, `format must be ${SNAPSHOT_FORMAT}, got ${shown(value.format)}`);
  if (!isCount(value.generation)) throw new JournalCorruptError(where, `generation must be an integer >= 0, got ${shown(value.generation)}`);
  if (!isCount(value.tasks)) throw new JournalCorruptError(where, `tasks must be an integer >= 0, got ${shown(value.tasks)}`);
  if (value.groups !== undefined) {
    if (!isObject(value.groups)) throw new JournalCorruptError(where, `groups must be an object, got ${shown(value.groups)}`);
    for (const [name, group] of Object.entries(value.groups)) {
      const problem = groupProblem(group);
      if (problem) throw new JournalCorruptError(where, `group ${shown(name)}: ${problem}`);
    }
  }
  return value as unknown as SnapshotHeader;
}

/** Adds one task of a snapshot to `tasks`, or throws naming `where` (and the task's id when it has one). */
export function addSnapshotTask(tasks: Map<string, StoredTask>, where: string, value: unknown): void {
  const problem = storedTaskProblem(value);
  if (problem) throw new JournalCorruptError(isObject(value) && typeof value.id === 'string' ? `${where} (${shown(value.id)})` : where, problem);
  const task = value as StoredTask;
  const before = tasks.size;
  tasks.set(task.id, task); // one lookup, not two: the map is of no use once this throws
  if (tasks.size === before) throw new JournalCorruptError(`${where} (${shown(task.id)})`, 'a second task with this id');
}
