import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { OutputPaths } from './messages.js';
import { type Addon, nativeSpawner } from './native-spawner.js';
import { nodeSpawner } from './node-spawner.js';

/** What is kept of one output stream of a process. */
export interface StreamOutcome {
  /** bytes in its file (no file when 0) */
  bytes: number;
  /** more was written than was kept: past the cap, or the file could not take it */
  truncated: boolean;
}

/** How a task's process ended and what it left in its files, or why it never started. */
export type Exit =
  | { code: number | null; signal: NodeJS.Signals | null; stdout: StreamOutcome; stderr: StreamOutcome }
  | { error: NodeJS.ErrnoException };

export interface SpawnRequest {
  file: string;
  argv: string[];
  /** its environment: `own` laid over `base`, which is the same object for every start of this process */
  env: { base: Record<string, string>; own: Record<string, string> };
  cwd: string | undefined;
  /** a pipe for its stdin; otherwise /dev/null */
  stdinPipe: boolean;
  /** the files its stdout and stderr are kept in, each created on its first byte */
  output: OutputPaths;
  /** the bytes kept of each stream; the rest is discarded */
  limit: number;
  /** the files are synced to disk before `ended` resolves */
  sync: boolean;
}

/**
 * A process that started (pid set) or did not (`ended` resolves with its
 * error). Once it has ended, what is left of its process group is killed.
 */
export interface Spawned {
  pid?: number;
  /** its start time (field 22 of /proc/PID/stat), read by the spawner */
  startTime?: string;
  stdin?: Writable;
  ended: Promise<Exit>;
}

/**
 * Starts a task's process: its own session and process group, stdin a pipe
 * or /dev/null, stdout and stderr kept in files under a cap.
 */
export interface Spawner {
  readonly kind: SpawnPath;
  start(request: SpawnRequest): Spawned;
}

export type SpawnPath = 'native' | 'node';

/** The addon as node-gyp builds it, relative to dist/executor/ (and src/executor/). */
const ADDON = fileURLToPath(new URL('../../build/Release/task_manager_spawn.node', import.meta.url));

/** Selects the spawn path: TASK_MANAGER_SPAWN=node or native forces one; by default native where it loads. */
export const SPAWN_VARIABLE = 'TASK_MANAGER_SPAWN';

export interface SpawnerChoice {
  spawner: Spawner;
  /** why the native path is not used; undefined when it is */
  fallback?: string;
}

let chosen: SpawnerChoice | undefined;

/**
 * The spawner this process uses, chosen once. Throws when TASK_MANAGER_SPAWN
 * asks for the native path and the addon cannot be loaded, or names no path.
 */
export function chooseSpawner(): SpawnerChoice {
  chosen ??= selectSpawner(process.env[SPAWN_VARIABLE]);
  return chosen;
}

/** The spawner that `wanted` (a value of TASK_MANAGER_SPAWN) selects; throws as chooseSpawner does. */
export function selectSpawner(wanted: string | undefined): SpawnerChoice {
  if (wanted !== undefined && wanted !== '' && wanted !== 'native' && wanted !== 'node') {
    throw new Error(`${SPAWN_VARIABLE} is "${wanted}"; it can be native or node`);
  }
  if (wanted === 'node') return { spawner: nodeSpawner, fallback: `${SPAWN_VARIABLE}=node` };
  let reason: string;
  if (!existsSync(ADDON)) {
    reason = `the native addon was not built (${ADDON} is missing; npm install builds it with node-gyp and a C compiler)`;
  } else {
    try {
      return { spawner: nativeSpawner(createRequire(import.meta.url)(ADDON) as Addon) };
    } catch (error) {
      reason = `the native addon could not be loaded: ${(error as Error).message}`;
    }
  }
  if (wanted === 'native') throw new Error(`${SPAWN_VARIABLE}=native, but ${reason}`);
  return { spawner: nodeSpawner, fallback: reason };
}
