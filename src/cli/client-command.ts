import { Command } from 'commander';
import { constants } from 'node:os';
import { ConnectionError, TaskManagerClient, TaskManagerError } from '../client/client.js';
import { EXIT, type TaskRecord } from '../protocol/index.js';
import { addConnectionOptions, exitOnUsageError, exitWhenReaderGoes, isUsageError, tokenOf, type ConnectionFlags } from './options.js';

/**
 * A finished task's exit code as the command's own, as a shell would give
 * it: its exit code; 124 when it timed out, 125 when it was canceled, 127
 * when its program could not start, 128 + N when signal N ended it.
 */
export function taskExitCode(task: TaskRecord): number {
  if (task.state === 'COMPLETED') return EXIT.ok;
  if (task.state === 'CANCELED') return EXIT.canceled;
  if (task.timed_out) return EXIT.timedOut;
  if (task.exit_code !== null && task.exit_code > 0) return task.exit_code;
  const signal = task.signal === null ? undefined : constants.signals[task.signal as NodeJS.Signals];
  if (signal !== undefined) return EXIT.signalBase + signal;
  return task.error?.code === 'SPAWN_FAILED' ? EXIT.notStarted : EXIT.failed;
}

/** How a task ended, when its exit code does not tell it: `task x CANCELED (canceled while running)`. */
export function describeEnd(task: TaskRecord): string | undefined {
  const error = task.error;
  if (!error || error.code === 'NONZERO_EXIT') return undefined;
  const why = error.code === task.state ? error.message : `${error.code}: ${error.message}`;
  return `task ${task.id} ${task.state} (${why})`;
}

/** The options every client subcommand has. */
export interface ClientFlags extends ConnectionFlags {
  json?: boolean;
}

export interface ClientContext<F> {
  flags: F & ClientFlags;
  command: Command;
  /**
   * Connects (and authenticates) on demand, so that a command can reject bad
   * arguments before it finds out whether a daemon is there.
   */
  connect(): Promise<TaskManagerClient>;
}

/** What a handler returns: the process's exit code (0 when nothing is returned). */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler that returns nothing (an async function without return) means 0
type Handler<F, A extends unknown[]> = (context: ClientContext<F>, ...args: A) => Promise<number | void>;

/** A subcommand with the connection options (`--host`, `--port`, `--token-file`) and `--json`. */
export function clientCommand(name: string, description: string): Command {
  return addConnectionOptions(exitOnUsageError(new Command(name).description(description)))
    .option('--json', 'print the daemon\'s answer as one line of JSON, for scripts');
}

/**
 * Wraps a subcommand's handler with the connection and the error handling
 * all client subcommands share: a missing daemon exits 2 with a hint, a
 * request the daemon refused prints `CODE: message` and exits 1, a bad
 * command line (or token file) exits 2 like commander's own errors.
 */
export function clientAction<F extends object = object, A extends unknown[] = []>(handler: Handler<F, A>) {
  return async (...params: unknown[]): Promise<void> => {
    // commander calls an action with the declared arguments, then the options and the command
    const command = params.at(-1) as Command;
    const args = params.slice(0, -2) as A;
    const flags = command.opts<F & ClientFlags>();
    exitWhenReaderGoes(EXIT.ok); // `task-manager list | head -1`: what was asked for is shown
    let connected = false;
    const connect = async () => {
      const client = await TaskManagerClient.connect({ host: flags.host, port: flags.port, token: tokenOf(flags) });
      connected = true;
      return client;
    };
    let code: number;
    try {
      code = (await handler({ flags, command, connect }, ...args)) ?? EXIT.ok;
    } catch (error) {
      if (isUsageError(error)) command.error(`error: ${error.message}`, { exitCode: EXIT.usage });
      code = report(error, `${flags.host}:${flags.port}`, connected, flags.tokenFile);
    }
    await exitWhenWritten(code);
  };
}

/** Prints what went wrong and returns the exit code for it. */
function report(error: unknown, address: string, connected: boolean, tokenFile: string | undefined): number {
  if (error instanceof TaskManagerError) {
    if (error.code === 'UNAUTHORIZED') {
      // The daemon's words are for nc users ("send auth"); here the fix is a flag.
      console.error(
        tokenFile === undefined
          ? `UNAUTHORIZED: the daemon at ${address} needs a token: give --token-file <path> (or set TASK_MANAGER_TOKEN_FILE)`
          : `${error.message} (the token of --token-file ${tokenFile})`,
      );
    } else {
      console.error(error.message); // already `CODE: message`
    }
    return EXIT.failed;
  }
  if (error instanceof ConnectionError) {
    console.error(connected
      ? `task-manager: lost the connection to the daemon at ${address} (${error.message})`
      : `cannot connect to the daemon at ${address} — start one with: npm start (or bin/task-manager serve)`);
    return EXIT.unreachable;
  }
  throw error;
}

/**
 * Exits once stdout and stderr have taken everything written to them. The
 * exit is explicit because a graceful close can wait forever: the daemon
 * keeps a subscription (watch) or an unanswered wait (an interrupted run) open.
 */
async function exitWhenWritten(code: number): Promise<never> {
  const flushed = (stream: NodeJS.WriteStream) => new Promise<void>((resolve) => stream.write('', () => resolve()));
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
}

/** Prints a payload the way `--json` promises: the daemon's answer without its envelope, on one line. */
export function printJson(payload: unknown): void {
  process.stdout.write(`${JSON.stringify(payload)}\n`);
}

/** Prints `--json` output or the human-readable text, as the flags ask. */
export function printResult(flags: ClientFlags, payload: unknown, human: () => string): void {
  if (flags.json) printJson(payload);
  else process.stdout.write(`${human()}\n`);
}
