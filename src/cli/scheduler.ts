import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { ConnectionError, newBatchId, runTasks, TaskManagerError, type TaskOutcome } from '../client/index.js';
import { EXIT, MAX_ID_LENGTH, type TaskSpecInput } from '../protocol/index.js';
import { plural } from './format.js';
import { UsageError, addConnectionOptions, exitOnUsageError, exitWhenReaderGoes, integerOption, isUsageError, tokenOf, type ConnectionFlags } from './options.js';

/** 128 + SIGPIPE: the exit status of a program whose reader went away. */
const EXIT_READER_GONE = 141;

const DEFAULT_INPUT = fileURLToPath(new URL('../../input.json', import.meta.url));

/** Go-style single-dash long options (`-input`, `-concurrent`) are read as their `--` spelling. */
const LONG_NAMES = /^-(input|concurrent|keep-ids|host|port|token-file|reconnect-ms)(=.*)?$/;
const normalizeArgv = (argv: string[]) => argv.map((arg) => arg.replace(LONG_NAMES, '--$1$2'));

/** Reads a JSON array of task specs, or NDJSON (one spec per line); a line that is not JSON is named by its number. */
function readSpecs(path: string): TaskSpecInput[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw new UsageError(`--input ${path}: ${code === 'ENOENT' ? 'no such file' : message}`);
  }
  if (text.trimStart().startsWith('[')) {
    const parsed = parseJson(text, path);
    if (!Array.isArray(parsed)) throw new UsageError(`${path}: expected a JSON array of task specs`);
    return parsed.map((spec, index) => specAt(spec, `${path}: item ${index + 1}`));
  }
  const specs: TaskSpecInput[] = [];
  text.split('\n').forEach((line, index) => {
    if (line.trim() === '') return;
    specs.push(specAt(parseJson(line, `${path}:${index + 1}`), `${path}:${index + 1}`));
  });
  return specs;
}

/** A task spec of the file: a JSON object (what is in it is the daemon's to check). */
function specAt(value: unknown, where: string): TaskSpecInput {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UsageError(`${where}: expected a task spec, a JSON object such as {"cmd":"echo hi"}, got ${String(JSON.stringify(value)).slice(0, 40)}`);
  }
  return value as TaskSpecInput;
}

/** JSON.parse, its error told as the place in the file and what was found there. */
function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${where}: not valid JSON (${(error as Error).message})`);
  }
}

/**
 * Orders tasks so that each comes after the tasks of this file it depends on (stable otherwise).
 * Depth first with a stack of its own: a chain of any length, not as deep as the call stack allows.
 */
function dependenciesFirst(specs: TaskSpecInput[]): TaskSpecInput[] {
  const byId = new Map(specs.filter((s) => s.id !== undefined).map((s) => [s.id!, s]));
  const ordered: TaskSpecInput[] = [];
  const state = new Map<TaskSpecInput, 'visiting' | 'done'>();
  const dependenciesOf = (spec: TaskSpecInput) =>
    (Array.isArray(spec.depends_on) ? spec.depends_on : []).map((id) => byId.get(id)).filter((dep) => dep !== undefined);
  for (const root of specs) {
    if (state.has(root)) continue;
    state.set(root, 'visiting');
    // Each frame: a task being visited, and its dependencies not yet looked at.
    const stack = [{ spec: root, next: dependenciesOf(root) }];
    while (stack.length > 0) {
      const frame = stack.at(-1)!;
      const dep = frame.next.shift();
      if (dep === undefined) {
        state.set(frame.spec, 'done');
        ordered.push(frame.spec);
        stack.pop();
      } else if (state.get(dep) === 'visiting') {
        const from = stack.findIndex((f) => f.spec === dep);
        throw new UsageError(`dependency cycle: ${[...stack.slice(from).map((f) => f.spec.id), dep.id].join(' -> ')}`);
      } else if (!state.has(dep)) {
        state.set(dep, 'visiting');
        stack.push({ spec: dep, next: dependenciesOf(dep) });
      }
    }
  }
  return ordered;
}

/**
 * Each run of a file is a new batch: the file's ids name tasks within it, and
 * reach the daemon as "BATCH:id" (depends_on on ids of the file likewise), so
 * running the same file again runs its tasks again. --keep-ids sends them as
 * written, making a repeated run idempotent instead.
 */
function scopeIds(specs: TaskSpecInput[], batch: string): TaskSpecInput[] {
  const local = new Set(specs.map((s) => s.id).filter((id) => id !== undefined));
  const scoped = (id: string) => (local.has(id) ? `${batch}:${id}` : id);
  for (const id of local) {
    if (typeof id === 'string' && scoped(id).length > MAX_ID_LENGTH) {
      throw new UsageError(`the id "${id.slice(0, 24)}…" has ${id.length} characters: with this run's prefix "${batch}:" it passes ${MAX_ID_LENGTH}; give --keep-ids, or shorter ids`);
    }
  }
  return specs.map((spec, i) => ({
    ...spec,
    // An id that is not a string goes as it is, for the daemon to refuse, as with --keep-ids.
    id: spec.id === undefined ? `${batch}:${i + 1}` : typeof spec.id === 'string' ? scoped(spec.id) : spec.id,
    ...(Array.isArray(spec.depends_on) ? { depends_on: spec.depends_on.map((id) => (typeof id === 'string' ? scoped(id) : id)) } : {}),
  }));
}

function summary(outcomes: TaskOutcome[], wallMs: number): string {
  const tally = { COMPLETED: 0, FAILED: 0, CANCELED: 0, rejected: 0 };
  for (const outcome of outcomes) {
    if (!outcome.ok) tally.rejected++;
    else if (outcome.task.state in tally) tally[outcome.task.state as 'COMPLETED']++;
  }
  const parts = [`${tally.COMPLETED} completed`, `${tally.FAILED} failed`];
  if (tally.CANCELED) parts.push(`${tally.CANCELED} canceled`);
  if (tally.rejected) parts.push(`${tally.rejected} rejected`);
  return `${plural(outcomes.length, 'task')}: ${parts.join(', ')} in ${(wallMs / 1000).toFixed(2)} s`;
}

const program = addConnectionOptions(exitOnUsageError(new Command('scheduler')))
  .description('Runs the tasks of a file through the task-manager daemon and prints one JSON result line per task.')
  .option('--input <file>', 'a JSON array of task specs, or NDJSON (also -input)', DEFAULT_INPUT)
  .option('--concurrent', 'send every task at once on one connection (also -concurrent); default: one after another')
  .option('--keep-ids', 'send the ids of the file as they are (a repeated run is then idempotent) instead of scoping them to this run')
  .option('--reconnect-ms <ms>', 'after a lost connection, how long to keep reconnecting', integerOption(0), 60_000)
  .addHelpText('after', '\nstdout: one JSON line per task (its record, or {"id","ok":false,"error"}); stderr: a summary.\nExit status: 0 all completed, 1 any did not, 2 bad usage or no daemon, 141 the reader of stdout went away.');

interface SchedulerFlags extends ConnectionFlags {
  input: string;
  concurrent?: boolean;
  keepIds?: boolean;
  reconnectMs: number;
}

async function main(): Promise<number> {
  // Not 0 when the reader goes: the tasks' outcome is not known.
  exitWhenReaderGoes(EXIT_READER_GONE);
  program.parse(normalizeArgv(process.argv));
  const opts = program.opts<SchedulerFlags>();
  const token = tokenOf(opts);
  const ordered = dependenciesFirst(readSpecs(opts.input));
  const specs = opts.keepIds ? ordered : scopeIds(ordered, newBatchId());
  const progress = process.stderr.isTTY;
  const started = performance.now();
  let done = 0;
  const outcomes = await runTasks(specs, {
    host: opts.host,
    port: opts.port,
    ...(token === undefined ? {} : { token }),
    concurrent: opts.concurrent ?? false,
    reconnectForMs: opts.reconnectMs,
    onOutcome: (outcome) => {
      // A daemon that wants a token refuses every task the same way: once is enough to say so.
      if (!outcome.ok && outcome.error.code === 'UNAUTHORIZED') {
        console.error(`scheduler: UNAUTHORIZED: ${outcome.error.message} (give the daemon's token with -token-file)`);
        process.exit(EXIT.usage);
      }
      process.stdout.write(`${JSON.stringify(outcome.ok ? outcome.task : outcome)}\n`);
      done++;
      if (progress) process.stderr.write(`\r\x1b[K${done}/${specs.length} done, ${specs.length - done} outstanding`);
    },
    onReconnect: (error) => process.stderr.write(`${progress ? '\n' : ''}connection lost (${error.message}); reconnecting\n`),
  });
  if (progress) process.stderr.write('\r\x1b[K');
  console.error(summary(outcomes, performance.now() - started));
  return outcomes.every((o) => o.ok && o.task.state === 'COMPLETED') ? EXIT.ok : EXIT.failed;
}

main().then(
  (code) => (process.exitCode = code),
  (error: Error) => {
    if (error instanceof TaskManagerError && error.code === 'UNAUTHORIZED') {
      console.error(`scheduler: ${error.message} (give the daemon's token with -token-file)`);
      process.exitCode = EXIT.usage;
    } else if (error instanceof ConnectionError) {
      console.error(`scheduler: ${error.message}\nStart a daemon first: npm start (or bin/task-manager serve), or point -host/-port at one.`);
      process.exitCode = EXIT.unreachable;
    } else if (isUsageError(error) || error instanceof SyntaxError || (error as NodeJS.ErrnoException).code === 'ENOENT') {
      console.error(`scheduler: ${error.message}`);
      process.exitCode = EXIT.usage;
    } else {
      throw error;
    }
  },
);
