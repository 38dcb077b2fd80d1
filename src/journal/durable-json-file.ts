import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Adapter } from 'lowdb';
import { JournalCorruptError } from './errors.js';

/**
 * A lowdb adapter whose write survives power loss: temp file, fsync, rename
 * over the old file, fsync of the directory. lowdb's own JSONFile renames
 * but never fsyncs, so a crash could leave an empty snapshot behind.
 */
export class DurableJSONFile<T> implements Adapter<T> {
  /** size of the file as last written */
  bytes = 0;
  /** how many writes have replaced the file: a failed write that did not is one that changed nothing */
  replaced = 0;

  constructor(private readonly path: string) {}

  /** The parsed content, unchecked (null when there is no file). */
  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new JournalCorruptError(this.path, `not valid JSON (${(error as Error).message})`);
    }
  }

  async write(data: T): Promise<void> {
    // Serialized before the first await, so the snapshot is of this instant.
    const text = JSON.stringify(data);
    const temp = join(dirname(this.path), `.${basename(this.path)}.tmp`);
    try {
      await writeSynced(temp, text);
    } catch (error) {
      // A half-written temp file (disk full) would only hold space the next write needs.
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    await rename(temp, this.path);
    this.replaced++;
    this.bytes = Buffer.byteLength(text);
    await syncDirectory(dirname(this.path));
  }
}

async function writeSynced(path: string, text: string): Promise<void> {
  const file = await open(path, 'w', 0o600);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
