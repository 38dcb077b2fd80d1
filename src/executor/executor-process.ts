/**
 * The executor process: a small process whose only job is to start and watch
 * task processes. Forking costs the forking process time in proportion to
 * its memory, and blocks it until the child has exec'd; done here, neither
 * touches the daemon's event loop, which keeps serving clients meanwhile.
 */
import type { FromExecutor, ToExecutor } from './messages.js';
import { Outbox } from './outbox.js';
import { signalGroup } from './process-group.js';
import { interruption, runAttempt, startFailure } from './run-attempt.js';
import { chooseSpawner } from './spawner.js';
import { StartLedger } from './start-evidence.js';
import { StopRequest } from './stop-request.js';

let settings: Extract<ToExecutor, { type: 'init' }> | undefined;
const running = new Map<number, StopRequest>();
/** the process group of each attempt whose process started */
const groups = new Map<number, number>();
/** attempts killed because the daemon's lease was not renewed in time */
const outlived = new Set<number>();
let leaseTimer: NodeJS.Timeout | undefined;
/** when (performance.now()) the daemon's lease stops holding, as last heard; nothing starts past it */
let leaseEnds = Number.POSITIVE_INFINITY;

/** Kills every task: the daemon is gone, or its lease may be. */
function killAll(): void {
  for (const pid of groups.values()) signalGroup(pid, 'SIGKILL');
}
const ledger = new StartLedger();
// The daemon checked at its start that the path it asks for is there (TASK_MANAGER_SPAWN).
const { spawner } = chooseSpawner();

// The daemon alone decides when tasks stop. A signal meant for it (Ctrl-C reaches the whole
// foreground process group; systemd signals the whole control group) must not end this process
// and its attempts with it: the daemon's graceful stop takes care of them.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => undefined);

/** Sends reports unless the daemon is gone (its successor cleans up; the reports have no reader). */
const reports = new Outbox<FromExecutor>((batch) => {
  if (process.connected) process.send!(batch, undefined, undefined, () => undefined);
});
const report = (message: FromExecutor) => reports.push(message);

process.on('message', (batch: ToExecutor[]) => {
  for (const message of batch) receive(message);
});

function receive(message: ToExecutor): void {
  if (message.type === 'init') {
    settings = message;
  } else if (message.type === 'close') {
    if (settings?.killWithDaemon) killAll(); // nothing of a cluster daemon's may outlive it
    process.exit(0);
  } else if (message.type === 'abort') {
    running.get(message.attempt)?.request();
  } else if (message.type === 'lease') {
    clearTimeout(leaseTimer);
    leaseEnds = performance.now() + message.validMs;
    leaseTimer = setTimeout(() => {
      for (const attempt of groups.keys()) outlived.add(attempt);
      killAll();
    }, message.validMs);
    leaseTimer.unref();
  } else if (performance.now() > leaseEnds) {
    report({ type: 'result', attempt: message.attempt, result: interruption("the daemon's lease was not renewed in time") });
  } else {
    const stop = new StopRequest();
    running.set(message.attempt, stop);
    const { baseEnv, scriptDir, syncOutput } = settings!;
    void runAttempt(message.spec, {
      env: { base: baseEnv, own: message.env },
      scriptDir,
      output: message.output,
      syncOutput,
      spawner,
      stop,
      onSpawn: (pid, started) => {
        groups.set(message.attempt, pid);
        // Started past the lease's end (the run waited for its script, or the host stalled): killed at once.
        if (performance.now() > leaseEnds) {
          outlived.add(message.attempt);
          signalGroup(pid, 'SIGKILL');
        }
        ledger.started(message.attempt, message.startId);
        report({ type: 'spawned', attempt: message.attempt, pid, ...(started ? { started } : {}) });
      },
    })
      .catch((error: Error) => startFailure(`the attempt could not be run: ${error.message}`))
      .then((result) => {
        running.delete(message.attempt);
        ledger.finished(message.attempt);
        groups.delete(message.attempt);
        const killedForLease = outlived.delete(message.attempt);
        report({ type: 'result', attempt: message.attempt, result: killedForLease ? interruption("the daemon's lease was not renewed in time") : result });
      });
  }
}

// The daemon is gone (even by kill -9). Alone, its successor kills what is still running, and
// learns from the ledger which attempts had started. In a cluster, its tasks are to run elsewhere
// once its lease runs out: none may still run by then, so they are killed now.
process.on('disconnect', () => {
  try {
    if (settings?.killWithDaemon) killAll();
    if (settings) ledger.leave(settings.dataDir);
  } finally {
    process.exit(0);
  }
});
