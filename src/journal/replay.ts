import {
  applyPatch,
  groupProblem,
  isObject,
  patchProblem,
  shown,
  storedTaskProblem,
  withoutClearedFields,
  type StoredGroup,
  type StoredTask,
  type TaskPatch,
} from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';
import { forEachLine, parseLine } from './lines.js';

/**
 * One line of the log: a shallow patch of a task's stored state, or its
 * removal, or a patch of a group's settings (which makes the group). A
 * patch sets each of its fields to an absolute value (never "one more"), so
 * applying it again over a later state changes nothing that a later line
 * does not set again: compaction relies on that.
 */
export type LogEntry = { id: string; set: TaskPatch } | { id: string; drop: true } | { group: string; set: StoredGroup };

/** What the journal holds: tasks by id, in submission order, and the settings of groups by name. */
export type Groups = Map<string, StoredGroup>;

export const encodeEntry = (entry: LogEntry): string => `${JSON.stringify(entry)}\n`;

/**
 * Applies the log file at `path` to `tasks`, line by line, checking every
 * line. A last line cut off mid-write (the daemon died while appending it,
 * so it was never acknowledged) is skipped and reported through `warn`. Any
 * other line that cannot be read or does not fit the tasks throws, naming
 * the file and line; `tasks` is then of no use, and nothing has been written.
 */
export async function replayLog(path: string, tasks: Map<string, StoredTask>, warn: (message: string) => void, groups: Groups = new Map()): Promise<void> {
  const apply = (where: string, entry: unknown) => {
    const problem = applyEntry(tasks, entry, groups);
    if (problem) throw new JournalCorruptError(where, problem);
  };
  const { lines, rest } = await forEachLine(path, (line, number) => {
    if (line === '') return;
    const where = `${path}:${number}`;
    apply(where, parseLine(where, line, 'journal line'));
  });
  if (rest === '') return;
  // Text after the last newline: a line cut off mid-write, unless it is whole but for its newline.
  let entry: unknown;
  try {
    entry = JSON.parse(rest);
  } catch {
    warn(`${path}: ignoring a last line cut off mid-write (${rest.length} bytes)`);
    return;
  }
  apply(`${path}:${lines + 1}`, entry);
}

/** Applies one parsed line; returns what is wrong with it instead, leaving `tasks` as it was. */
export function applyEntry(tasks: Map<string, StoredTask>, entry: unknown, groups: Groups = new Map()): string | undefined {
  if (!isObject(entry)) return `a journal line must be an object, got ${shown(entry)}`;
  if (entry.group !== undefined) return applyGroupEntry(groups, entry);
  const { id, set, drop } = entry;
  if (typeof id !== 'string') return `id must be a string, got ${shown(id)}`;
  for (const field in entry) {
    if (field !== 'id' && field !== 'set' && field !== 'drop') return `unexpected field ${shown(field)}`;
  }
  const task = tasks.get(id);
  const unknown = `task ${shown(id)} is not in the snapshot and no earlier line created it`;
  if (drop !== undefined) {
    if (drop !== true || set !== undefined) return 'a line either sets fields ("set": {...}) or drops the task ("drop": true)';
    if (!task) return `${unknown}, so it cannot be dropped`;
    tasks.delete(id);
    return undefined;
  }
  if (!isObject(set)) return `set must be an object, got ${shown(set)}`;
  if (set.id !== undefined && set.id !== id) return `set.id ${shown(set.id)} differs from the line's id ${shown(id)}`;
  if (task) {
    const problem = patchProblem(set);
    if (problem) return `task ${shown(id)}: ${problem}`;
    applyPatch(task, set as TaskPatch);
  } else {
    // A new task is logged whole: a patch of a task nobody created means a lost or foreign line.
    const problem = storedTaskProblem(set);
    if (problem) return `${unknown}, and this line is not a complete task (${problem})`;
    tasks.set(id, withoutClearedFields(set as unknown as StoredTask)); // parsed for this line alone: no copy needed
  }
  return undefined;
}

/** Applies a line of a group's settings: `{"group": name, "set": {...}}`. */
function applyGroupEntry(groups: Groups, entry: Record<string, unknown>): string | undefined {
  const { group, set } = entry;
  if (typeof group !== 'string') return `group must be a string, got ${shown(group)}`;
  for (const field in entry) {
    if (field !== 'group' && field !== 'set') return `unexpected field ${shown(field)} in a group's line`;
  }
  const problem = groupProblem(set);
  if (problem) return `group ${shown(group)}: ${problem}`;
  groups.set(group, { ...groups.get(group), ...(set as StoredGroup) });
  return undefined;
}
