import type { AttemptResult, ProcessSpec } from './run-attempt.js';

/** Where an attempt's stdout and stderr are written. */
export interface OutputPaths {
  stdout: string;
  stderr: string;
}

/** What the daemon tells its executor process (in arrays: see outbox.ts). */
export type ToExecutor =
  | { type: 'init'; baseEnv: Record<string, string>; scriptDir: string; dataDir: string; syncOutput: boolean; killWithDaemon: boolean }
  | { type: 'run'; attempt: number; spec: ProcessSpec; env: Record<string, string>; startId: string; output: OutputPaths }
  | { type: 'abort'; attempt: number }
  /**
   * In a cluster: the daemon's lease holds for `validMs` more. Without a new
   * one by then, the daemon may be frozen and its tasks about to run
   * elsewhere: every task is killed, and reported interrupted.
   */
  | { type: 'lease'; validMs: number }
  /** a clean stop: everything it ran is in the journal, no ledger is needed */
  | { type: 'close' };

/**
 * What the executor process reports back, per attempt (in arrays: see
 * outbox.ts); `started` is the process's start time, read by the spawner; a
 * null result: aborted before it started.
 */
export type FromExecutor =
  | { type: 'spawned'; attempt: number; pid: number; started?: string }
  | { type: 'result'; attempt: number; result: AttemptResult | null };
