import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { exitOnUsageError, integerOption } from '../../src/cli/options.js';

/**
 * `bin/cmd`: a program with predictable behaviour for tests and demos. Its
 * steps run in the order of the help text.
 */
const program = exitOnUsageError(new Command('cmd'))
  .description('A test program: each option is one step, run in the order listed here.')
  .option('--record <file>', 'append a JSON line {event:"start"|"end", pid, task, attempt, at} at start and at end')
  .option('--pid-file <file>', 'write this process\'s pid to the file')
  .option('--exclusive <file>', 'hold the file while running; if another live process holds it, record {event:"overlap"} (with --record)')
  .option('--fail-until <n>', 'with --counter: exit 1 until this is the n-th run', integerOption(1))
  .option('--counter <file>', 'a file counting the runs (for --fail-until)')
  .option('--echo-stdin', 'copy standard input to standard output')
  .option('--print-env <name>', 'print the value of an environment variable and a newline')
  .option('--stdout <text>', 'print the text to standard output')
  .option('--stderr <text>', 'print the text to standard error')
  .option('--stdout-bytes <n>', 'print n bytes ("x") to standard output', integerOption(0))
  .option('--stderr-bytes <n>', 'print n bytes ("y") to standard error', integerOption(0))
  .option('--ignore-term', 'ignore SIGTERM (only SIGKILL ends it)')
  .option('--grandchild <pid-file>', 'start a child (in the same process group) that sleeps 60 s, writing its pid to the file')
  .option('--sleep <ms>', 'sleep this long', integerOption(0))
  .option('--exit <code>', 'exit with this code', integerOption(0, 255))
  .addHelpText('after', '\nExample: bin/cmd --stdout hello --sleep 200 --exit 3')
  .parse();

const opts = program.opts<{
  record?: string; pidFile?: string; exclusive?: string; failUntil?: number; counter?: string; echoStdin?: boolean; printEnv?: string;
  stdout?: string; stderr?: string; stdoutBytes?: number; stderrBytes?: number; ignoreTerm?: boolean;
  grandchild?: string; sleep?: number; exit?: number;
}>();

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
