import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { taskError, type TaskError, type TaskSpec } from '../protocol/index.js';
import type { OutputPaths } from './messages.js';
import { writeScript } from './script-file.js';
import type { Exit, SpawnRequest, Spawner } from './spawner.js';
import type { StopRequest } from './stop-request.js';

export interface AttemptOptions {
  /** the environment of the process: `own` laid over `base` (the same for every attempt of this process) */
  env: SpawnRequest['env'];
  /** where script payloads are written */
  scriptDir: string;
  /** requested before the process exists: it is not started */
  stop?: StopRequest;
  /** starts the process: vfork and exec through the addon, or Node's spawn */
  spawner: Spawner;
  /** called once the process exists, with its pid (= its process group id) and start time */
  onSpawn?: (pid: number, startTime: string | undefined) => void;
  /** the files the attempt's stdout and stderr are kept in (created on their first byte) */
  output: OutputPaths;
  /** output files are synced to disk before the result is reported */
  syncOutput: boolean;
}

export interface AttemptResult {
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  /** bytes kept in the output files */
  stdout_bytes: number;
  stderr_bytes: number;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  duration_ms: number;
  /** null when the attempt exited 0 */
  error: TaskError | null;
}

/** The fields of a task's spec that starting its process takes: all an executor process is sent. */
const PROCESS_FIELDS = ['cmd', 'args', 'script', 'cwd', 'stdin', 'max_output_bytes'] as const;
export type ProcessSpec = Pick<TaskSpec, (typeof PROCESS_FIELDS)[number]>;

/** The fields of `spec` that its process needs, those it has only. */
export function processSpec(spec: TaskSpec): ProcessSpec {
  const needed: Record<string, unknown> = {};
  for (const field of PROCESS_FIELDS) if (spec[field] !== undefined) needed[field] = spec[field];
  return needed as ProcessSpec;
}

type Program = { file: string; argv: string[]; remove?: () => Promise<void> };

async function program(spec: ProcessSpec, scriptDir: string): Promise<Program> {
  const args = spec.args ?? [];
  if (spec.script) {
    const written = await writeScript(spec.script, scriptDir);
    return { ...written, argv: [...written.argv, ...args] };
  }
  if (typeof spec.cmd === 'string') return { file: '/bin/sh', argv: ['-c', spec.cmd, 'sh', ...args] };
  const [file, ...argv] = spec.cmd!;
  return { file: file!, argv: [...argv, ...args] };
}

const SPAWN_RETRIES = 5; // a freshly written executable can be briefly busy (ETXTBSY) while another spawn forks

/**
 * Starts one attempt of a task in its own process group and collects what
 * it leaves: exit status, and output kept in files as it comes (beyond the
 * cap, discarded, and the cut marked).
 * The spawner is vfork and exec through the addon in native/ where it is
 * built, Node's own spawn otherwise (docs/performance.md). When the main process exits,
 * whatever it left running in its group is killed too, so nothing outlives
 * its task. Timeouts and kills are the daemon's business (executor.ts), so
 * they hold even when this process is stopped or gone.
 *
 * Resolves with null when a stop was requested before the process started.
 */
export async function runAttempt(spec: ProcessSpec, options: AttemptOptions): Promise<AttemptResult | null> {
  let prog: Program;
  try {
    prog = await program(spec, options.scriptDir);
  } catch (error) {
    return startFailure(`the script could not be written: ${(error as Error).message}`);
  }
  try {
    for (let tries = 1; ; tries++) {
      if (options.stop?.requested) return null;
      const result = await spawnOnce(prog, spec, options);
      if (result !== 'busy' || tries === SPAWN_RETRIES) return result === 'busy' ? startFailure('executable busy (ETXTBSY)') : result;
      await sleep(10 * tries);
    }
  } finally {
    await prog.remove?.();
  }
}

/** The result of an attempt whose program never started. */
export function startFailure(message: string): AttemptResult {
  return failedWithout(taskError.SPAWN_FAILED(message));
}

/** The result of an attempt whose process was lost with its executor: it runs again. */
export function interruption(message: string): AttemptResult {
  return failedWithout(taskError.INTERRUPTED(message));
}

/** An attempt the daemon ended at its timeout: what it reported, or nothing if it could not report. */
export function timedOut(result: AttemptResult | undefined, timeoutMs: number): AttemptResult {
  return {
    ...(result ?? failedWithout(null)),
    exit_code: -1,
    timed_out: true,
    error: taskError.TIMEOUT(timeoutMs),
  };
}

function failedWithout(error: TaskError | null): AttemptResult {
  return {
    exit_code: null, signal: null, timed_out: false, stdout_bytes: 0, stderr_bytes: 0,
    stdout_truncated: false, stderr_truncated: false, duration_ms: 0, error,
  };
}

async function spawnOnce(prog: Program, spec: ProcessSpec, options: AttemptOptions): Promise<AttemptResult | 'busy'> {
  const started = performance.now();
  const child = options.spawner.start({
    file: prog.file,
    argv: prog.argv,
    env: options.env,
    cwd: spec.cwd,
    stdinPipe: spec.stdin !== undefined,
    output: options.output,
    limit: spec.max_output_bytes,
    sync: options.syncOutput,
  });
  if (child.pid !== undefined) options.onSpawn?.(child.pid, child.startTime);
  if (child.stdin) {
    child.stdin.on('error', () => undefined); // the program may exit without reading its input
    child.stdin.end(spec.stdin);
  }

  const exit: Exit = await child.ended;
  child.stdin?.destroy();
  const duration = performance.now() - started;

  if ('error' in exit) {
    if (exit.error.code === 'ETXTBSY') return 'busy';
    const missingCwd = exit.error.code === 'ENOENT' && spec.cwd !== undefined && !existsSync(spec.cwd);
    return startFailure(missingCwd ? `cwd ${spec.cwd} does not exist` : exit.error.message);
  }
  let error: TaskError | null = null;
  if (exit.signal) error = taskError.KILLED({ signal: exit.signal });
  else if (exit.code !== 0) error = taskError.NONZERO_EXIT(exit.code!);
  return {
    exit_code: exit.code,
    signal: exit.signal,
    timed_out: false,
    stdout_bytes: exit.stdout.bytes,
    stderr_bytes: exit.stderr.bytes,
    stdout_truncated: exit.stdout.truncated,
    stderr_truncated: exit.stderr.truncated,
    duration_ms: Math.round(duration * 1000) / 1000,
    error,
  };
}
