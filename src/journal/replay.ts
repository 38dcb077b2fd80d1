import { readFile } from 'node:fs/promises';
import type { StoredTask } from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';

/** One line of the log: a shallow patch of a task's stored state, or its removal. */
export type LogEntry = { id: string; set: Partial<StoredTask> } | { id: string; drop: true };

export const encodeEntry = (entry: LogEntry): string => `${JSON.stringify(entry)}\n`;

/** Fields that a patch clears by setting them to null. */
const CLEARABLE = ['ready_at', 'pgid', 'pgid_started'] as const;

/**
 * Applies one log file to `tasks`. A last line cut off mid-write (the daemon
 * died while appending) is skipped and reported through `warn`; any other
 * unreadable line throws, naming the file and line.
 */
export async function replayLog(path: string, tasks: Map<string, StoredTask>, warn: (message: string) => void): Promise<void> {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  const last = lines.length - 1; // text after the final newline: empty unless the write was torn
  lines.forEach((line, index) => {
    if (line === '') return;
    let entry: LogEntry;
    try {
      entry = JSON.parse(line) as LogEntry;
      if (typeof entry.id !== 'string') throw new Error('no task id');
    } catch (error) {
      if (index === last) {
        warn(`${path}: ignoring a last line cut off mid-write (${line.length} bytes)`);
        return;
      }
      throw new JournalCorruptError(`${path}:${index + 1}: unreadable journal line (${(error as Error).message}); the file was left as it is`);
    }
    applyEntry(tasks, entry);
  });
}

function applyEntry(tasks: Map<string, StoredTask>, entry: LogEntry): void {
  if ('drop' in entry) {
    tasks.delete(entry.id);
    return;
  }
  const task = tasks.get(entry.id);
  if (task) Object.assign(task, entry.set);
  else tasks.set(entry.id, { ...entry.set } as StoredTask);
}

/** Removes the fields that patches cleared with null. */
export function tidy(task: StoredTask): StoredTask {
  for (const field of CLEARABLE) if (task[field] === null) delete task[field];
  return task;
}
