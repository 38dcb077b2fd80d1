import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import type { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { signalGroup } from './process-group.js';
import { processStartTime } from './process-info.js';

/** How a task's process ended, or why it never started. */
export type Exit = { code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException };

export interface SpawnRequest {
  file: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string | undefined;
  /** a pipe for its stdin; otherwise /dev/null */
  stdinPipe: boolean;
  stdout: number;
  stderr: number;
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
 * Starts a task's process: its own session and process group, stdout and
 * stderr the given files, stdin a pipe or /dev/null.
 */
export interface Spawner {
  readonly kind: SpawnPath;
  start(request: SpawnRequest): Spawned;
}

export type SpawnPath = 'native' | 'node';

/** Node's child_process.spawn: libuv forks (a cost that grows with this process's memory), then execs. */
const nodeSpawner: Spawner = {
  kind: 'node',
  start({ file, argv, env, cwd, stdinPipe, stdout, stderr }) {
    const child = spawn(file, argv, {
      cwd,
      env,
      stdio: [stdinPipe ? 'pipe' : 'ignore', stdout, stderr],
      detached: true, // setsid: its own session and process group, so the whole group can be signalled
    });
    const ended = new Promise<Exit>((resolve) => {
      child.once('error', (error) => child.pid === undefined && resolve({ error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    if (child.pid === undefined) return { ended };
    // 'close' waits for the stdin pipe too, which a process left in the group could hold open.
    child.once('exit', () => signalGroup(child.pid!, 'SIGKILL'));
    const startTime = processStartTime(child.pid);
    return { pid: child.pid, ended, ...(startTime ? { startTime } : {}), ...(child.stdin ? { stdin: child.stdin } : {}) };
  },
};

interface Addon {
  spawn(
    file: string,
    argv: string[],
    env: string[],
    cwd: string | null,
    stdin: number,
    stdout: number,
    stderr: number,
    onExit: (code: number | null, signal: number | null) => void,
  ): [pid: number, stdinFd: number, startTime: string];
}

const STDIN_NULL = -1;
const STDIN_PIPE = -2;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]));

/** posix_spawn through the addon in native/ (clone with CLONE_VM | CLONE_VFORK: no copy of this process's memory). */
function nativeSpawner(addon: Addon): Spawner {
  return {
    kind: 'native',
    start({ file, argv, env, cwd, stdinPipe, stdout, stderr }) {
      const environment = Object.entries(env).map(([name, value]) => `${name}=${value}`);
      let resolveEnded: (exit: Exit) => void = () => undefined;
      const ended = new Promise<Exit>((resolve) => (resolveEnded = resolve));
      let started: [number, number, string];
      try {
        started = addon.spawn(file, [file, ...argv], environment, cwd ?? null, stdinPipe ? STDIN_PIPE : STDIN_NULL, stdout, stderr, (code, signal) =>
          resolveEnded({ code, signal: signal === null ? null : (SIGNAL_NAMES.get(signal) ?? null) }),
        );
      } catch (error) {
        return { ended: Promise.resolve({ error: error as NodeJS.ErrnoException }) };
      }
      const [pid, stdinFd, startTime] = started;
      const stdin = stdinFd >= 0 ? new Socket({ fd: stdinFd, readable: false, writable: true }) : undefined;
      return { pid, ended, ...(startTime ? { startTime } : {}), ...(stdin ? { stdin } : {}) };
    },
  };
}

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
  chosen ??= choose(process.env[SPAWN_VARIABLE]);
  return chosen;
}

function choose(wanted: string | undefined): SpawnerChoice {
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
