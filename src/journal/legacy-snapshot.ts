import { readFile } from 'node:fs/promises';
import type { StoredTask } from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';
import { addSnapshotTask, type SnapshotRead } from './snapshot-format.js';
import { isCount, isObject, shown } from '../scheduler/index.js';

/**
 * The snapshot of earlier versions (format 1): one JSON document holding
 * every task. Still read, so that their data dirs start; the first start
 * writes the streamed format and removes this file once that is durable.
 */
export const LEGACY_SNAPSHOT = 'snapshot.json';
/** where earlier versions wrote it before renaming it into place */
export const LEGACY_SNAPSHOT_TEMP = '.snapshot.json.tmp';

/** The snapshot at `path`, read and checked, or null when there is none. */
export async function readLegacySnapshot(path: string): Promise<SnapshotRead | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new JournalCorruptError(path, `not valid JSON (${(error as Error).message})`);
  }
  const { generation, tasks } = checkLegacySnapshot(path, data);
  return { path, generation, tasks, groups: new Map(), bytes: Buffer.byteLength(text) };
}

/** A format 1 snapshot's content, checked: its header fields and every task. */
export function checkLegacySnapshot(path: string, data: unknown): { generation: number; tasks: Map<string, StoredTask> } {
  if (!isObject(data)) throw new JournalCorruptError(path, `a snapshot must be an object, got ${shown(data)}`);
  if (data.format !== 1) throw new JournalCorruptError(path, `format must be 1, got ${shown(data.format)}`);
  if (!isCount(data.generation)) throw new JournalCorruptError(path, `generation must be an integer >= 0, got ${shown(data.generation)}`);
  if (!Array.isArray(data.tasks)) throw new JournalCorruptError(path, `tasks must be an array, got ${shown(data.tasks)}`);
  const tasks = new Map<string, StoredTask>();
  data.tasks.forEach((task: unknown, index) => {
    addSnapshotTask(tasks, `${path}: tasks[${index}]`, task);
  });
  return { generation: data.generation, tasks };
}
