import { Socket } from 'node:net';
import { constants } from 'node:os';
import type { Exit, Spawner } from './spawner.js';

/** native/spawn.c: posix_spawn, output pipes spliced into files, exit from a pidfd. */
export interface Addon {
  spawn(
    file: string,
    argv: string[],
    env: string[],
    cwd: string | null,
    stdin: number,
    stdoutPath: string,
    stderrPath: string,
    limit: number,
    sync: boolean,
    onExit: (code: number | null, signal: number | null, stdoutBytes: number, stdoutTruncated: boolean, stderrBytes: number, stderrTruncated: boolean) => void,
  ): [pid: number, stdinFd: number, startTime: string];
}

const STDIN_NULL = -1;
const STDIN_PIPE = -2;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]));

/**
 * posix_spawn through the addon in native/ (clone with CLONE_VM |
 * CLONE_VFORK: no copy of this process's memory). The addon keeps the
 * output too, so a task costs this process no JavaScript between its start
 * and its end.
 */
export function nativeSpawner(addon: Addon): Spawner {
  return {
    kind: 'native',
    start({ file, argv, env, cwd, stdinPipe, output, limit, sync }) {
      const environment = Object.entries(env).map(([name, value]) => `${name}=${value}`);
      let resolveEnded: (exit: Exit) => void = () => undefined;
      const ended = new Promise<Exit>((resolve) => (resolveEnded = resolve));
      let started: [number, number, string];
      try {
        started = addon.spawn(
          file,
          [file, ...argv],
          environment,
          cwd ?? null,
          stdinPipe ? STDIN_PIPE : STDIN_NULL,
          output.stdout,
          output.stderr,
          limit,
          sync,
          (code, signal, stdoutBytes, stdoutTruncated, stderrBytes, stderrTruncated) =>
            resolveEnded({
              code,
              signal: signal === null ? null : (SIGNAL_NAMES.get(signal) ?? null),
              stdout: { bytes: stdoutBytes, truncated: stdoutTruncated },
              stderr: { bytes: stderrBytes, truncated: stderrTruncated },
            }),
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
