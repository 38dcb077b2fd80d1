import { spawn } from 'node:child_process';
import { OutputFile } from './output-file.js';
import { signalGroup } from './process-group.js';
import { processStartTime } from './process-info.js';
import type { Exit, Spawner } from './spawner.js';

/**
 * How often a running task's output files are cut back to the cap: a task
 * printing past it uses at most what it writes in this time of disk beyond it.
 */
const CAP_CHECK_MS = 100;

/**
 * Node's child_process.spawn: libuv forks (a cost that grows with this
 * process's memory), then execs. The task writes straight into its output
 * files, kept within the cap by cutting them back (output-file.ts).
 */
export const nodeSpawner: Spawner = {
  kind: 'node',
  start({ file, argv, env, cwd, stdinPipe, output, limit, sync }) {
    let stdout: OutputFile | undefined;
    let stderr: OutputFile;
    try {
      stdout = new OutputFile(output.stdout, limit);
      stderr = new OutputFile(output.stderr, limit);
    } catch (error) {
      stdout?.discard();
      return { ended: Promise.resolve({ error: new Error(`its output file could not be created: ${(error as Error).message}`) }) };
    }
    const child = spawn(file, argv, {
      cwd,
      env: { ...env.base, ...env.own },
      stdio: [stdinPipe ? 'pipe' : 'ignore', stdout.fd, stderr.fd],
      detached: true, // setsid: its own session and process group, so the whole group can be signalled
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException }>((resolve) => {
      child.once('error', (error) => child.pid === undefined && resolve({ error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    const files = [stdout, stderr] as const;
    const capTimer =
      child.pid === undefined
        ? undefined
        : setInterval(() => {
            for (const output of files) output.keepWithinLimit();
          }, CAP_CHECK_MS);
    const ended = exited.then(async (exit): Promise<Exit> => {
      clearInterval(capTimer);
      if ('error' in exit) {
        for (const output of files) output.discard();
        return exit;
      }
      // The output is on disk before the result that refers to it is reported.
      const [out, err] = await Promise.all(files.map((output) => output.finish(sync)));
      return { ...exit, stdout: { bytes: out!, truncated: stdout.truncated }, stderr: { bytes: err!, truncated: stderr.truncated } };
    });
    if (child.pid === undefined) return { ended };
    // 'close' waits for the stdin pipe too, which a process left in the group could hold open.
    child.once('exit', () => signalGroup(child.pid!, 'SIGKILL'));
    const startTime = processStartTime(child.pid);
    return { pid: child.pid, ended, ...(startTime ? { startTime } : {}), ...(child.stdin ? { stdin: child.stdin } : {}) };
  },
};
