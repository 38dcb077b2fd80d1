import { Socket } from 'node:net';
import { constants } from 'node:os';
import type { Exit, Spawned, Spawner } from './spawner.js';

/** native/spawn.c: vfork and exec, output pipes spliced into files, exit from a pidfd. */
export interface Addon {
  /** the environment every later start begins from */
  setBaseEnvironment(env: string[]): void;
  spawn(
    file: string,
    argv: string[],
    /** laid over the base environment, a name here replacing the same name there */
    env: string[],
    cwd: string | null,
    stdin: number,
    stdoutPath: string,
    stderrPath: string,
    limit: number,
    sync: boolean,
    onExit: (code: number | null, signal: number | null, stdoutBytes: number, stdoutTruncated: boolean, stderrBytes: number, stderrTruncated: boolean) => void,
  ): [pid: number, stdinFd: number, startTime: string];
  /** how many start times so far were read from /proc, the rest coming from the clock around the vfork */
  procStartReads(): number;
}

const entries = (env: Record<string, string>): string[] => {
  const list: string[] = [];
  for (const name in env) list.push(`${name}=${env[name]}`);
  return list;
};

const STDIN_NULL = -1;
const STDIN_PIPE = -2;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]));

/**
 * vfork and exec through the addon in native/ (the child shares this
 * process's memory until it execs: nothing is copied). The addon keeps the
 * output too, so a task costs this process no JavaScript between its start
 * and its end.
 */
export function nativeSpawner(addon: Addon): Spawner {
  // Handed to the addon once, not with every start: it held most of the strings a start converted.
  let base: Record<string, string> | undefined;
  return {
    kind: 'native',
    start({ file, argv, env, cwd, stdinPipe, output, limit, sync }) {
      if (env.base !== base) {
        addon.setBaseEnvironment(entries(env.base));
        base = env.base;
      }
      let resolveEnded: (exit: Exit) => void = () => undefined;
      const ended = new Promise<Exit>((resolve) => (resolveEnded = resolve));
      let started: [number, number, string];
      try {
        started = addon.spawn(
          file,
          [file, ...argv],
          entries(env.own),
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
      const spawned: Spawned = { pid, ended };
      if (startTime) spawned.startTime = startTime;
      if (stdinFd >= 0) spawned.stdin = new Socket({ fd: stdinFd, readable: false, writable: true });
      return spawned;
    },
  };
}
