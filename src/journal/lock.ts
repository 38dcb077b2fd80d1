import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { isSameProcessAlive, processStartTime } from '../executor/index.js';

export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
}

export interface DataDirLock {
  /** a lock left by a daemon that did not stop cleanly was taken over */
  tookOverStale: boolean;
  /** removes the lock: the daemon stops */
  release: () => Promise<void>;
  /**
   * The daemon did not start after all: puts back the stale lock it took
   * over (which tells the next start that a daemon crashed), or removes the lock.
   */
  abandon: () => Promise<void>;
}

const code = (error: unknown) => (error as NodeJS.ErrnoException).code;

/**
 * Makes this process the only daemon on a data dir. The lock file names the
 * holder by pid and process start time, so a lock left by a crashed daemon
 * (or one whose pid now belongs to another process) is taken over. The lock
 * appears with its content at once (a hard link of a file already written),
 * and a stale one is moved aside before it is replaced, so two daemons
 * starting together cannot both hold it.
 */
export async function lockDataDir(path: string): Promise<DataDirLock> {
  const mine = `${path}.${process.pid}`;
  const aside = `${path}.stale.${process.pid}`;
  let stale: string | undefined; // the content of the stale lock taken over
  try {
    // Inside the try: a write that fails (disk full) must not leave the file behind.
    await writeFile(mine, `${process.pid} ${processStartTime(process.pid) ?? ''}\n`, { mode: 0o600 });
    for (;;) {
      try {
        await link(mine, path);
        const release = () => unlink(path).catch(() => undefined);
        const abandon = () => (stale === undefined ? release() : putBack(path, mine, stale).catch(release));
        return { tookOverStale: stale !== undefined, release, abandon };
      } catch (error) {
        if (code(error) !== 'EEXIST') throw error;
      }
      const seen = await readFile(path, 'utf8').catch(() => undefined);
      if (seen === undefined) continue; // removed meanwhile
      const [pid, started] = seen.trim().split(' ');
      if (isSameProcessAlive(Number(pid), started)) {
        throw new DataDirLockedError(`another daemon (pid ${pid}) is using this data dir (${path}); stop it or choose another --data-dir`);
      }
      try {
        await rename(path, aside);
      } catch (error) {
        if (code(error) === 'ENOENT') continue; // another daemon moved it first
        throw error;
      }
      const moved = await readFile(aside, 'utf8').catch(() => undefined);
      // What was moved may be a live lock another daemon linked after our read: put it back.
      if (moved !== seen) await link(aside, path).catch(() => undefined);
      else stale = seen;
      await unlink(aside).catch(() => undefined);
    }
  } finally {
    await unlink(mine).catch(() => undefined);
  }
}

/** Replaces the lock at `path` with the stale one it replaced, through a temp file so that it is never absent. */
async function putBack(path: string, temp: string, stale: string): Promise<void> {
  try {
    await writeFile(temp, stale, { mode: 0o600 });
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}
