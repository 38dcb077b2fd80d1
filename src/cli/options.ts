import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_HOST, DEFAULT_PORT, EXIT, TokenFileError, readTokenFile } from '../protocol/index.js';

/** A problem with the command line or its input, found before any request: exits EXIT.usage. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Whether an error is the user's to fix on the command line (or in a file it names). */
export const isUsageError = (error: unknown): error is UsageError | TokenFileError =>
  error instanceof UsageError || error instanceof TokenFileError;

/** A commander argument parser for integers within a range. */
export function integerOption(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const number = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || number < min || number > max) {
      throw new InvalidArgumentError(`expected an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? '' : ` to ${max}`}.`);
    }
    return number;
  };
}

/**
 * Ends the process with `code` when the reader of stdout goes away (`| head -1`): the reader's
 * choice, told without a stack.
 */
export function exitWhenReaderGoes(code: number): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(code);
  });
}

/** `--allow-origin`, repeated or comma-separated; the daemon checks each (checkStartup). */
export function originsOption(value: string, previous: string[]): string[] {
  return [...previous, ...value.split(',').map((origin) => origin.trim()).filter((origin) => origin !== '')];
}

/** The options that say where the daemon is, as every client command takes them. */
export interface ConnectionFlags {
  host: string;
  port: number;
  tokenFile?: string;
}

/** `--host`, `--port` and `--token-file`, each also read from its environment variable. */
export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(new Option('--host <host>', 'address of the daemon').env('TASK_MANAGER_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'port of the daemon').env('TASK_MANAGER_PORT').default(DEFAULT_PORT).argParser(integerOption(1, 65535)))
    .addOption(new Option('--token-file <path>', 'file holding the token of a daemon started with --token-file').env('TASK_MANAGER_TOKEN_FILE'));
}

/** The token that `--token-file` names, if any. */
export const tokenOf = (flags: ConnectionFlags): string | undefined => (flags.tokenFile === undefined ? undefined : readTokenFile(flags.tokenFile));

/**
 * Bad usage (an unknown option, a bad value in a flag or an environment
 * variable, a missing argument) exits EXIT.usage after commander's one line
 * naming it; `--help` and `--version` exit 0.
 */
export const exitOnUsageError = (command: Command): Command =>
  command.exitOverride((error) => process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage));
