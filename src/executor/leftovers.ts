import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { signalGroup } from './process-group.js';
import { isSameProcessAlive, processState } from './process-info.js';

/** The environment variable that marks every process a daemon starts, with the daemon's data dir. */
export const OWNER_VARIABLE = 'TASK_MANAGER_JOURNAL';

export interface RecordedGroup {
  pgid?: number;
  pgid_started?: string;
}

/**
 * Kills what a crashed daemon left running: each recorded process group that
 * is still the same process, and any process carrying the owner mark of this
 * data dir (which covers an attempt that started just before the crash, before
 * its pid reached the journal). Returns once they are gone.
 */
export async function killLeftovers(owner: string, groups: RecordedGroup[]): Promise<number> {
  const doomed = new Set<number>();
  for (const { pgid, pgid_started } of groups) {
    if (pgid !== undefined && isSameProcessAlive(pgid, pgid_started)) doomed.add(pgid);
  }
  for (const pid of await markedProcesses([`${OWNER_VARIABLE}=${owner}`])) doomed.add(pid);
  await killGroups(doomed);
  return doomed.size;
}

/** Processes whose environment holds every one of `entries` ("NAME=value"). */
export async function markedProcesses(entries: string[]): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const environ = (await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '')).split('\0');
    if (entries.every((entry) => environ.includes(entry))) found.push(pid);
  }
  return found;
}

/** SIGKILLs each process and its group, and resolves once they are gone (5 s at most). */
export async function killGroups(pids: Iterable<number>): Promise<void> {
  const doomed = [...pids];
  for (const pid of doomed) {
    signalGroup(pid, 'SIGKILL');
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (let waited = 0; waited < 5000 && doomed.some(isAlive); waited += 20) await sleep(20);
}

/** Alive and not a zombie (a zombie has died already; only its parent's wait is missing). */
function isAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== 'Z';
}
