import { InvalidArgumentError, type Command } from 'commander';
import { parseRequest, RequestError, type TaskSpecInput, withFieldsNamed } from '../protocol/index.js';
import { UsageError, integerOption } from './options.js';

/**
 * The options of `submit` and `run`, one per task spec field. Commander checks
 * the shape of each value; the protocol's own rules, before anything is sent,
 * check the rest (checkAsFlags).
 */
export interface TaskSpecFlags {
  shell?: string;
  id?: string;
  timeoutMs?: number;
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  dependsOn?: string[];
  delayMs?: number;
  startAt?: string;
  retries?: number;
  retryDelayMs?: number;
  priority?: number;
  maxOutputBytes?: number;
  group?: string;
}

const anyInteger = integerOption(Number.MIN_SAFE_INTEGER);

function collectEnv(pair: string, previous: Record<string, string> | undefined): Record<string, string> {
  const equals = pair.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError('expected KEY=VALUE.');
  return { ...previous, [pair.slice(0, equals)]: pair.slice(equals + 1) };
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** Adds the task spec options and the trailing command to `submit` or `run`. */
export function addTaskSpecOptions(command: Command): Command {
  return command
    .argument('[command...]', 'the program and its arguments, run directly without a shell (put -- before it)')
    .option('--shell <command>', 'a command line for /bin/sh -c instead (pipes, redirections, globs)')
    .option('--id <id>', 'the task\'s id (1..128 of A-Za-z0-9._:-); resubmitting the same spec with it runs nothing twice')
    .option('--timeout-ms <ms>', 'kill the task after this long', anyInteger)
    .option('--cwd <dir>', 'working directory')
    .option('--env <KEY=VALUE>', 'an environment variable added to the daemon\'s (repeatable)', collectEnv)
    .option('--stdin <text>', 'text fed to the task\'s standard input')
    .option('--depends-on <id>', 'start only after this task has completed (repeatable)', collect)
    .option('--delay-ms <ms>', 'start no earlier than this long after submission', anyInteger)
    .option('--start-at <time>', 'start no earlier than this ISO-8601 time or epoch milliseconds')
    .option('--retries <n>', 'extra attempts after a failed one', anyInteger)
    .option('--retry-delay-ms <ms>', 'wait before the first retry, doubling each time', anyInteger)
    .option('--priority <n>', 'higher starts first', anyInteger)
    .option('--max-output-bytes <n>', 'stdout/stderr kept per stream', anyInteger)
    .option('--group <name>', 'count against this group\'s concurrency (made with set-group; default: "default")')
    // options after the program's name belong to the program: `run ls -l`
    .passThroughOptions();
}

/** The task spec that the flags and trailing words describe. */
export function taskSpecFrom(flags: TaskSpecFlags, words: string[]): TaskSpecInput {
  if (flags.shell !== undefined && words.length > 0) {
    throw new UsageError(`give the command either with --shell or after --, not both (got --shell and: ${words.join(' ')})`);
  }
  if (flags.startAt !== undefined && flags.delayMs !== undefined) throw new UsageError('give --start-at or --delay-ms, not both');
  if (flags.shell === undefined && words.length === 0) {
    throw new UsageError('no command given: add it after -- (task-manager run -- echo hi) or use --shell \'echo hi | wc -c\'');
  }
  const spec: TaskSpecInput = { cmd: flags.shell ?? words };
  if (flags.id !== undefined) spec.id = flags.id;
  if (flags.timeoutMs !== undefined) spec.timeout_ms = flags.timeoutMs;
  if (flags.cwd !== undefined) spec.cwd = flags.cwd;
  if (flags.env !== undefined) spec.env = flags.env;
  if (flags.stdin !== undefined) spec.stdin = flags.stdin;
  if (flags.dependsOn !== undefined) spec.depends_on = flags.dependsOn;
  if (flags.delayMs !== undefined) spec.delay_ms = flags.delayMs;
  if (flags.startAt !== undefined) spec.start_at = /^\d+$/.test(flags.startAt) ? Number(flags.startAt) : flags.startAt;
  if (flags.retries !== undefined) spec.retries = flags.retries;
  if (flags.retryDelayMs !== undefined) spec.retry_delay_ms = flags.retryDelayMs;
  if (flags.priority !== undefined) spec.priority = flags.priority;
  if (flags.maxOutputBytes !== undefined) spec.max_output_bytes = flags.maxOutputBytes;
  if (flags.group !== undefined) spec.group = flags.group;
  checkAsFlags({ op: 'submit', ...spec });
  return spec;
}

/** The flag of each task spec field, as the options above name it. */
const FLAG_OF: Record<string, string> = {
  cmd: 'the command',
  ...Object.fromEntries(
    ['id', 'timeout_ms', 'cwd', 'env', 'stdin', 'depends_on', 'delay_ms', 'start_at', 'retries', 'retry_delay_ms', 'priority', 'max_output_bytes', 'group'].map(
      (field) => [field, `--${field.replaceAll('_', '-')}`],
    ),
  ),
};

/**
 * Checks a request by the protocol's rules before it is sent: a value out of
 * range is the command line's to fix (a UsageError, exit 2), and the message
 * names the flag rather than the field (or what `named` calls it: an argument, say).
 */
export function checkAsFlags(request: Record<string, unknown>, named: Record<string, string> = {}): void {
  try {
    withFieldsNamed(() => parseRequest(request), { ...FLAG_OF, ...named });
  } catch (error) {
    if (!(error instanceof RequestError) || error.code !== 'BAD_REQUEST') throw error;
    throw new UsageError(error.message);
  }
}
