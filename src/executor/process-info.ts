import { readFileSync } from 'node:fs';

/**
 * The start time of a process (field 22 of /proc/PID/stat, in clock ticks
 * since boot). With the pid it names one process for good: a pid reused by a
 * later process has another start time. Undefined when the process is gone.
 */
export const processStartTime = (pid: number): string | undefined => statFields(pid)?.[19];

/** The one-letter state of a process (R, S, D, Z, ...), undefined when there is none. */
export const processState = (pid: number): string | undefined => statFields(pid)?.[0];

/** The fields of /proc/PID/stat from field 3 (state) on; undefined when the process is gone. */
export function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * Whether the process that had this pid and start time is still running. A
 * zombie is not: it has died, only its parent has not collected it yet (in a
 * container whose init does not reap orphans, that may be never).
 */
export function isSameProcessAlive(pid: number, startTime: string | undefined): boolean {
  const fields = statFields(pid);
  return startTime !== undefined && fields !== undefined && fields[0] !== 'Z' && fields[19] === startTime;
}
