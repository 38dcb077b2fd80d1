/**
 * The executor process: a small process whose only job is to start and watch
 * task processes. Forking costs the forking process time in proportion to
 * its memory, and blocks it until the child has exec'd; done here, neither
 * touches the daemon's event loop, which keeps serving clients meanwhile.
 */
import type { FromExecutor, ToExecutor } from './messages.js';
import { runAttempt, startFailure } from './run-attempt.js';

let settings: Extract<ToExecutor, { type: 'init' }> | undefined;
const running = new Map<number, AbortController>();

const report = (message: FromExecutor) => process.send!(message);

process.on('message', (message: ToExecutor) => {
  if (message.type === 'init') {
    settings = message;
  } else if (message.type === 'abort') {
    running.get(message.attempt)?.abort();
  } else {
    const abort = new AbortController();
    running.set(message.attempt, abort);
    const { baseEnv, scriptDir, killGraceMs } = settings!;
    void runAttempt(message.spec, {
      env: { ...baseEnv, ...message.env },
      scriptDir,
      killGraceMs,
      signal: abort.signal,
      onSpawn: (pid) => report({ type: 'spawned', attempt: message.attempt, pid }),
    })
      .catch((error: Error) => startFailure(`the attempt could not be run: ${error.message}`))
      .then((result) => {
        running.delete(message.attempt);
        report({ type: 'result', attempt: message.attempt, result });
      });
  }
});

// The daemon is gone (even by kill -9): its successor kills what is still running.
process.on('disconnect', () => process.exit(0));
