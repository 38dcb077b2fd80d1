import { join } from 'node:path';
import type { StoredTask } from '../scheduler/index.js';
import { JournalCorruptError } from './errors.js';
import { LEGACY_SNAPSHOT, readLegacySnapshot } from './legacy-snapshot.js';
import { forEachLine, parseLine } from './lines.js';
import { SNAPSHOT, addSnapshotTask, checkHeader, type SnapshotHeader, type SnapshotRead } from './snapshot-format.js';

/**
 * The snapshot of `dir`, read and checked, or null when there is none. A
 * snapshot of earlier versions (snapshot.json) is read when there is no
 * streamed one; beside a streamed one it is a leftover of the first start
 * that wrote it, and ignored.
 */
export async function readSnapshot(dir: string): Promise<SnapshotRead | null> {
  try {
    return await readStreamedSnapshot(join(dir, SNAPSHOT));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  return readLegacySnapshot(join(dir, LEGACY_SNAPSHOT));
}

/**
 * Reads the header line, then each task line, checking each as it comes. A
 * snapshot is renamed into place only once complete and synced, so, unlike
 * a log, it has no torn last line to forgive: a file cut short anywhere is
 * damaged, and refused.
 */
async function readStreamedSnapshot(path: string): Promise<SnapshotRead> {
  let header: SnapshotHeader | undefined;
  const tasks = new Map<string, StoredTask>();
  const read = await forEachLine(path, (line, number) => {
    const where = `${path}:${number}`;
    const value = parseLine(where, line, 'snapshot line');
    if (header) addSnapshotTask(tasks, where, value);
    else header = checkHeader(where, value);
  });
  if (read.rest !== '') {
    throw new JournalCorruptError(`${path}:${read.lines + 1}`, 'cut off mid-line, but a snapshot is put in place only once complete: it was damaged since');
  }
  if (!header) throw new JournalCorruptError(path, 'empty, without even its header line');
  if (tasks.size !== header.tasks) {
    throw new JournalCorruptError(path, `the header announces ${header.tasks} tasks, but the file holds ${tasks.size}: it was damaged since it was written`);
  }
  return { path, generation: header.generation, tasks, groups: new Map(Object.entries(header.groups ?? {})), bytes: read.bytes };
}
