import { open, readFile, unlink } from 'node:fs/promises';
import { isSameProcessAlive, processStartTime } from '../executor/index.js';

export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
}

export interface DataDirLock {
  /** a lock left by a daemon that did not stop cleanly was taken over */
  tookOverStale: boolean;
  release: () => Promise<void>;
}

/**
 * Makes this process the only daemon on a data dir. The lock file names the
 * holder by pid and process start time, so a lock left by a crashed daemon
 * (or one whose pid now belongs to another process) is taken over.
 */
export async function lockDataDir(path: string): Promise<DataDirLock> {
  const me = `${process.pid} ${processStartTime(process.pid) ?? ''}\n`;
  let tookOverStale = false;
  for (;;) {
    try {
      const file = await open(path, 'wx', 0o600);
      await file.writeFile(me);
      await file.close();
      return { tookOverStale, release: () => unlink(path).catch(() => undefined) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const [pid, started] = (await readFile(path, 'utf8').catch(() => '')).trim().split(' ');
    if (pid && Number(pid) !== process.pid && isSameProcessAlive(Number(pid), started)) {
      throw new DataDirLockedError(`another daemon (pid ${pid}) is using this data dir (${path}); stop it or choose another --data-dir`);
    }
    await unlink(path).catch(() => undefined); // stale: its daemon is gone
    tookOverStale = true;
  }
}
