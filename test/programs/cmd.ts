import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/**
 * `bin/cmd`: a program with predictable behaviour for tests and demos. Its
 * steps run in the order of the help text. It loads nothing but Node's own
 * modules: the suite starts it hundreds of times, and a library would add
 * half again to its start-up.
 */
const OPTIONS = {
  record: ['<file>', 'append a JSON line {event:"start"|"end", pid, task, attempt, at} at start and at end'],
  'pid-file': ['<file>', "write this process's pid to the file"],
  exclusive: ['<file>', 'hold the file while running; if another live process holds it, record {event:"overlap"} (with --record)'],
  'fail-until': ['<n>', 'with --counter: exit 1 until this is the n-th run'],
  counter: ['<file>', 'a file counting the runs (for --fail-until)'],
  'echo-stdin': ['', 'copy standard input to standard output'],
  'print-env': ['<name>', 'print the value of an environment variable and a newline'],
  stdout: ['<text>', 'print the text to standard output'],
  stderr: ['<text>', 'print the text to standard error'],
  'stdout-bytes': ['<n>', 'print n bytes ("x") to standard output'],
  'stderr-bytes': ['<n>', 'print n bytes ("y") to standard error'],
  'ignore-term': ['', 'ignore SIGTERM (only SIGKILL ends it)'],
  grandchild: ['<pid-file>', 'start a child (in the same process group) that sleeps 60 s, writing its pid to the file'],
  sleep: ['<ms>', 'sleep this long'],
  exit: ['<code>', 'exit with this code (0..255)'],
  help: ['', 'show this help'],
} as const;

const usage = [
  'Usage: cmd [options]',
  '',
  'A test program: each option is one step, run in the order listed here.',
  '',
  ...Object.entries(OPTIONS).map(([name, [value, text]]) => `  --${`${name} ${value}`.trim().padEnd(26)} ${text}`),
  '',
  'Example: bin/cmd --stdout hello --sleep 200 --exit 3',
].join('\n');

function usageError(message: string): never {
  process.stderr.write(`cmd: ${message}\n(see cmd --help)\n`);
  process.exit(2);
}

let parsed: ReturnType<typeof parseOptions>;
function parseOptions() {
  const options = Object.fromEntries(Object.entries(OPTIONS).map(([name, [value]]) => [name, { type: value ? 'string' : 'boolean' }])) as {
    [Name in keyof typeof OPTIONS]: { type: (typeof OPTIONS)[Name][0] extends '' ? 'boolean' : 'string' };
  };
  return parseArgs({ options, strict: true, allowPositionals: false }).values;
}
try {
  parsed = parseOptions();
} catch (error) {
  usageError((error as Error).message);
}
if (parsed.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

/** An integer option within its bounds, or a usage error naming it. */
function integer(name: keyof typeof OPTIONS, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const text = parsed[name];
  if (typeof text !== 'string') return undefined;
  const value = Number(text);
  if (!/^-?\d+$/.test(text) || value < min || value > max) usageError(`--${name} must be an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? '' : ` to ${max}`}, got "${text}"`);
  return value;
}

const opts = {
  record: parsed.record,
  pidFile: parsed['pid-file'],
  exclusive: parsed.exclusive,
  failUntil: integer('fail-until', 1),
  counter: parsed.counter,
  echoStdin: parsed['echo-stdin'],
  printEnv: parsed['print-env'],
  stdout: parsed.stdout,
  stderr: parsed.stderr,
  stdoutBytes: integer('stdout-bytes', 0),
  stderrBytes: integer('stderr-bytes', 0),
  ignoreTerm: parsed['ignore-term'],
  grandchild: parsed.grandchild,
  sleep: integer('sleep', 0),
  exit: integer('exit', 0, 255),
};

const record = (event: 'start' | 'end' | 'overlap', details: object = {}) => {
  if (!opts.record) return;
  const line = { event, pid: process.pid, task: process.env.TASK_MANAGER_TASK_ID, attempt: process.env.TASK_MANAGER_ATTEMPT, at: Date.now(), ...details };
  appendFileSync(opts.record, `${JSON.stringify(line)}\n`);
};

/** Alive and not a zombie (a killed process whose parent has not reaped it yet is already dead). */
const isRunning = (pid: number) => {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

record('start');
if (opts.exclusive) {
  let holder = NaN;
  try {
    holder = Number(readFileSync(opts.exclusive, 'utf8'));
  } catch {
    // nobody holds it
  }
  if (holder && holder !== process.pid && isRunning(holder)) record('overlap', { other: holder });
  writeFileSync(opts.exclusive, String(process.pid));
}
if (opts.pidFile) writeFileSync(opts.pidFile, String(process.pid));
let exitCode = opts.exit ?? 0;
if (opts.counter) {
  let runs = 0;
  try {
    runs = Number(readFileSync(opts.counter, 'utf8')) || 0;
  } catch {
    // first run
  }
  writeFileSync(opts.counter, String(++runs));
  if (opts.failUntil !== undefined && runs < opts.failUntil) {
    console.error(`run ${runs} of ${opts.failUntil}: failing on purpose`);
    exitCode = 1;
  }
}
if (opts.echoStdin) process.stdout.write(readFileSync(0));
if (opts.printEnv) process.stdout.write(`${process.env[opts.printEnv] ?? ''}\n`);
if (opts.stdout !== undefined) process.stdout.write(opts.stdout);
if (opts.stderr !== undefined) process.stderr.write(opts.stderr);
if (opts.stdoutBytes) process.stdout.write(Buffer.alloc(opts.stdoutBytes, 'x'));
if (opts.stderrBytes) process.stderr.write(Buffer.alloc(opts.stderrBytes, 'y'));
if (opts.ignoreTerm) process.on('SIGTERM', () => undefined);
if (opts.grandchild) {
  const self = fileURLToPath(import.meta.url);
  spawn(process.execPath, [self, '--pid-file', opts.grandchild, '--sleep', '60000'], { stdio: 'inherit' });
}
if (opts.sleep) await sleep(opts.sleep);
record('end');
if (opts.exclusive) rmSync(opts.exclusive, { force: true });
process.exitCode = exitCode;
if (opts.grandchild) process.exit(); // do not wait for the grandchild
