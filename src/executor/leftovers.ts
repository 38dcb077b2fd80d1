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

/** The variables that name the task and attempt a process belongs to. */
export const TASK_VARIABLE = 'TASK_MANAGER_TASK_ID';
export const ATTEMPT_VARIABLE = 'TASK_MANAGER_ATTEMPT';

/** The environment entries ("NAME=value") that only one attempt's processes carry, read from its environment: found by them when their pid never arrived. */
export const marksOf = (env: Record<string, string | undefined>): string[] =>
  [TASK_VARIABLE, ATTEMPT_VARIABLE, OWNER_VARIABLE].map((name) => `${name}=${env[name]}`);

/** "task attempt": how an attempt is named in the evidence of starts. */
export const attemptKey = (task: string, attempt: string | number) => `${task} ${attempt}`;

/**
 * Kills what a crashed daemon left running: each recorded process group that
 * is still the same process, and any process carrying the owner mark of this
 * data dir (which covers an attempt that started just before the crash, before
 * its pid reached the journal). Returns once they are gone, with how many
 * there were and which attempts (attemptKey) they belonged to.
 */
export async function killLeftovers(owner: string, groups: RecordedGroup[]): Promise<{ killed: number; attempts: Set<string> }> {
  const doomed = new Set<number>();
  for (const { pgid, pgid_started } of groups) {
    if (pgid !== undefined && isSameProcessAlive(pgid, pgid_started)) doomed.add(pgid);
  }
  const attempts = new Set<string>();
  for (const { pid, environ } of await markedProcesses([`${OWNER_VARIABLE}=${owner}`])) {
    doomed.add(pid);
    const value = (name: string) => environ.find((entry) => entry.startsWith(`${name}=`))?.slice(name.length + 1);
    attempts.add(attemptKey(value(TASK_VARIABLE) ?? '', value(ATTEMPT_VARIABLE) ?? ''));
  }
  await killGroups(doomed);
  return { killed: doomed.size, attempts };
}

/** Processes whose environment holds every one of `entries` ("NAME=value"), with their environment. */
export async function markedProcesses(entries: string[]): Promise<{ pid: number; environ: string[] }[]> {
  const found: { pid: number; environ: string[] }[] = [];
  for (const name of await readdir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const environ = (await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '')).split('\0');
    if (entries.every((entry) => environ.includes(entry))) found.push({ pid, environ });
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
