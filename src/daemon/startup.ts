import { isIP } from 'node:net';
import { ATTEMPT_VARIABLE, chooseSpawner, type Executor, type OutputPaths, OWNER_VARIABLE, TASK_VARIABLE } from '../executor/index.js';
import type { AttemptRunner } from '../scheduler/index.js';
import { ConfigError, type DaemonConfig } from './config.js';
import { originOf } from './http/guard.js';

export interface RunningDaemon {
  host: string;
  port: number;
  /** Stops accepting, lets running tasks finish within the grace period, flushes and closes. */
  stop(): Promise<void>;
  /** Ends the grace period of a stop at once: running tasks are killed now, to run again at the next start. */
  hurry(): void;
  /**
   * Settles if the daemon can no longer keep its promises (the journal cannot
   * be written: disk full, I/O error). By then it has killed its running
   * tasks (they run again at the next start) and stopped accepting; what is
   * left is for its host to end the process.
   */
  failed: Promise<Error>;
}

const isLoopback = (host: string) =>
  host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

/** What every daemon checks before it opens anything: a public address needs a token, the spawn path asked for must exist. */
export function checkStartup(config: DaemonConfig): void {
  if (!isLoopback(config.host) && config.token === undefined) {
    throw new ConfigError(
      `refusing to listen on ${config.host} without a token: anyone who can connect can run commands as this user. ` +
        'Give --token-file, or listen on 127.0.0.1 and reach it through an SSH tunnel.',
    );
  }
  config.allowOrigins = config.allowOrigins.map(originOf);
  if (config.allowOrigins.length > 0 && config.token === undefined) {
    config.log(`--allow-origin without --token-file: scripts of ${config.allowOrigins.join(', ')} can run commands as this user through their visitors' browsers`);
  }
  let fallback: string | undefined;
  try {
    ({ fallback } = chooseSpawner());
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  if (fallback) config.log(`tasks start with Node's child_process.spawn (${fallback}); see docs/performance.md`);
}

/** The daemon's own settings stay out of the tasks' environment (the token above all). */
export function taskEnvironment(): Record<string, string> {
  // fromEntries, not assignment: a variable named __proto__ would otherwise set the prototype and vanish.
  return Object.fromEntries(
    Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined && !entry[0].startsWith('TASK_MANAGER_')),
  );
}

/**
 * Runs attempts on the executor, each marked in its environment with its
 * task, attempt and owner (`ownerDir`), so that a later start can find its
 * processes; `paths` tells where an attempt's output goes.
 */
export function attemptRunner(executor: () => Executor, ownerDir: string, paths: (output: string) => OutputPaths): AttemptRunner {
  return ({ id, attempt, spec, startId, alone, output }, stop, onSpawn) => {
    // Set after the task's own env, which must not move the marks that recovery relies on.
    const env: Record<string, string> = { ...spec.env };
    env[TASK_VARIABLE] = id;
    env[ATTEMPT_VARIABLE] = String(attempt);
    env[OWNER_VARIABLE] = ownerDir;
    return executor().run(spec, { env, startId, alone, output: paths(output), stop, onSpawn });
  };
}
