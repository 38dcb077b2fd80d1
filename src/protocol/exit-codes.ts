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
  /** Ctrl-C: 128 + SIGINT */
  interrupted: 130,
} as const;
