/**
 * The executor process: a small process whose only job is to start and watch
 * task processes. Forking costs the forking process time in proportion to
 * its memory, and blocks it until the child has exec'd; done here, neither
 * touches the daemon's event loop, which keeps serving clients meanwhile.
 */
import type { FromExecutor, ToExecutor } from './messages.js';
import { runAttempt, startFailure } from './run-attempt.js';
import { StartLedger } from './start-evidence.js';

let settings: Extract<ToExecutor, { type: 'init' }> | undefined;
const running = new Map<number, AbortController>();
const ledger = new StartLedger();

// The daemon alone decides when tasks stop. A signal meant for it (Ctrl-C reaches the whole
// foreground process group; systemd signals the whole control group) must not end this process
// and its attempts with it: the daemon's graceful stop takes care of them.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => undefined);

/** Sends a report unless the daemon is gone (its successor cleans up; the report has no reader). */
const report = (message: FromExecutor) => {
  if (process.connected) process.send!(message, undefined, undefined, () => undefined);
};

process.on('message', (message: ToExecutor) => {
  if (message.type === 'init') {
    settings = message;
  } else if (message.type === 'close') {
    process.exit(0);
  } else if (message.type === 'abort') {
    running.get(message.attempt)?.abort();
  } else {
    const abort = new AbortController();
    running.set(message.attempt, abort);
    const { baseEnv, scriptDir, syncOutput } = settings!;
    void runAttempt(message.spec, {
      env: { ...baseEnv, ...message.env },
      scriptDir,
      output: message.output,
      syncOutput,
      signal: abort.signal,
      onSpawn: (pid) => {
        ledger.started(message.attempt, message.startId);
        report({ type: 'spawned', attempt: message.attempt, pid });
      },
    })
      .catch((error: Error) => startFailure(`the attempt could not be run: ${error.message}`))
      .then((result) => {
        running.delete(message.attempt);
        ledger.finished(message.attempt);
        report({ type: 'result', attempt: message.attempt, result });
      });
  }
});

// The daemon is gone (even by kill -9): its successor kills what is still running, and learns
// from the ledger which attempts had started.
process.on('disconnect', () => {
  try {
    if (settings) ledger.leave(settings.dataDir);
  } finally {
    process.exit(0);
  }
});
