/**
 * Sends a signal to a whole process group. A group that is already gone, or
 * one this user may not signal (a setuid program in it), is not an error:
 * the answer is whether the signal was delivered.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}
