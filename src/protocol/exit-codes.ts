/**
 * The exit codes of the commands, `task-manager` (its `serve` too) and
 * `scheduler`, as the README documents them.
 */
export const EXIT = {
  ok: 0,
  /** the daemon refused a request; scheduler: a task did not complete; serve: the journal failed while running */
  failed: 1,
  /** a bad command line, option, environment variable or input file (serve: the daemon could not start) */
  usage: 2,
  /** no daemon answers at the address */
  unreachable: 2,
  /** wait --timeout-ms ran out before the task finished (EX_TEMPFAIL: try again later) */
  waitedOut: 75,
  /** the task ran past its timeout_ms (as coreutils' timeout) */
  timedOut: 124,
  /** the task was canceled (or its dependency failed) */
  canceled: 125,
  /** the task's program could not be started (as a shell's "not found") */
  notStarted: 127,
  /** a task ended by a signal: 128 + its number (as a shell) */
  signalBase: 128,
  /** Ctrl-C: 128 + SIGINT */
  interrupted: 130,
} as const;
