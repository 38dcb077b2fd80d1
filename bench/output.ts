/**
 * Output-heavy work: tasks that print 1 MiB, against `xargs -P10` whose
 * output is read through a pipe; the daemon's memory with clients that never
 * read their answers and with many outputs retained; the restart of such a
 * data dir; and `true` throughput before and after a burst of output.
 * Settings: BENCH_OUTPUT_TASKS (100), BENCH_NON_READERS (20),
 * BENCH_RETAINED_OUTPUTS (10000).
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskManagerClient } from '../dist/index.js';
import { CONCURRENCY, median, rssMb, seconds, startDaemon, type CaseReport, type Daemon } from './daemon.js';

const MiB = 1024 * 1024;
const OUTPUT_TASKS = Number(process.env.BENCH_OUTPUT_TASKS ?? 100);
const NON_READERS = Number(process.env.BENCH_NON_READERS ?? 20);
const RUNS_PER_NON_READER = 100;
const RETAINED_OUTPUTS = Number(process.env.BENCH_RETAINED_OUTPUTS ?? 10_000);
const RETAINED_OUTPUT_BYTES = 20 * 1024;

/** A file of `bytes` of printable text, for `cat` to print. */
function textFile(bytes: number): string {
  const file = join(mkdtempSync(join(tmpdir(), 'tm-bench-text-')), 'text');
  const line = `${'x'.repeat(99)}\n`;
  writeFileSync(file, line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes));
  return file;
}

/**
 * Tasks per second: OUTPUT_TASKS `cat`s of the file through the daemon, the
 * output kept in its files; the client learns of each task's end from a
 * subscription (records without output), as a service that reads outputs
 * later, or never, would.
 */
async function daemonKeptOutputRate(port: number, file: string): Promise<number> {
  const client = await TaskManagerClient.connect({ port });
  // On a connection of its own: a connection with many answers waiting skips events (`dropped`).
  const events = await TaskManagerClient.connect({ port });
  const completed = new Set<string>();
  let allDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (allDone = resolve));
  events.on('task', (task) => {
    if (task.state === 'COMPLETED' && completed.add(task.id).size === OUTPUT_TASKS) allDone();
  });
  await events.subscribe();
  const start = performance.now();
  await Promise.all(Array.from({ length: OUTPUT_TASKS }, () => client.submit({ cmd: ['cat', file] })));
  await done;
  const rate = OUTPUT_TASKS / seconds(start);
  await Promise.all([client.close(), events.close()]);
  return rate;
}

/** Tasks per second: the same with `run`, every answer carrying its 1 MiB of output as JSON, read by the client. */
async function daemonOutputRate(port: number, file: string, bytes: number): Promise<number> {
  const client = await TaskManagerClient.connect({ port });
  const start = performance.now();
  await Promise.all(
    Array.from({ length: OUTPUT_TASKS }, async () => {
      const { task } = await client.run({ cmd: ['cat', file], max_output_bytes: bytes });
      if (task.stdout!.length !== bytes) throw new Error(`a task's output came back with ${task.stdout!.length} bytes`);
    }),
  );
  const rate = OUTPUT_TASKS / seconds(start);
  await client.close();
  return rate;
}

/** The same with xargs, the output read through a pipe by wc. */
function xargsOutputRate(file: string, bytes: number): number {
  const start = performance.now();
  const result = spawnSync('sh', ['-c', `seq ${OUTPUT_TASKS} | xargs -P${CONCURRENCY} -I{} cat ${file} | wc -c`], { encoding: 'utf8' });
  const rate = OUTPUT_TASKS / seconds(start);
  if (Number(result.stdout.trim()) !== OUTPUT_TASKS * bytes) throw new Error(`xargs printed ${result.stdout.trim()} bytes`);
  return rate;
}

/** Samples a process's resident memory every 50 ms; `peak` is the highest seen. */
function rssSampler(pid: number) {
  const sampler = { peak: rssMb(pid), stop: () => clearInterval(timer) };
  const timer = setInterval(() => {
    sampler.peak = Math.max(sampler.peak, rssMb(pid));
  }, 50);
  return sampler;
}

/** Waits until `done` tasks have completed in the daemon. */
async function completed(client: TaskManagerClient, done: number): Promise<void> {
  while ((await client.count()).counts.COMPLETED < done) await new Promise((resolve) => setTimeout(resolve, 100));
}

/** Peak daemon RSS while NON_READERS clients each send 100 runs printing 1 MiB and never read a byte of the answers. */
async function nonReadingClients(file: string): Promise<{ peak_rss_mb: number; seconds: number }> {
  const daemon = await startDaemon([]);
  const observer = await TaskManagerClient.connect({ port: daemon.port });
  const sampler = rssSampler(daemon.pid);
  const start = performance.now();
  const sockets: Socket[] = [];
  for (let c = 0; c < NON_READERS; c++) {
    const socket = connect({ port: daemon.port, host: '127.0.0.1' });
    await once(socket, 'connect');
    socket.pause(); // never reads
    const runs = Array.from({ length: RUNS_PER_NON_READER }, (_, i) => JSON.stringify({ op: 'run', ref: i, cmd: ['cat', file] }));
    socket.write(`${runs.join('\n')}\n`);
    sockets.push(socket);
  }
  await completed(observer, NON_READERS * RUNS_PER_NON_READER);
  const took = seconds(start);
  sampler.stop();
  for (const socket of sockets) socket.destroy();
  await observer.close();
  await daemon.stop();
  return { peak_rss_mb: sampler.peak, seconds: took };
}

/** RSS with RETAINED_OUTPUTS finished tasks of 20 KB output each, and the time to restart on that data dir until it answers. */
async function retainedOutputs(): Promise<{ rss_mb: number; restart_s: number; rss_after_restart_mb: number }> {
  const file = textFile(RETAINED_OUTPUT_BYTES);
  const flags = ['--keep-finished', String(2 * RETAINED_OUTPUTS), '--keep-output-bytes', String(2 * RETAINED_OUTPUTS * RETAINED_OUTPUT_BYTES)];
  const first = await startDaemon(flags);
  const client = await TaskManagerClient.connect({ port: first.port });
  const window = 1000;
  for (let sent = 0; sent < RETAINED_OUTPUTS; sent += window) {
    await Promise.all(Array.from({ length: Math.min(window, RETAINED_OUTPUTS - sent) }, () => client.submit({ cmd: ['cat', file] })));
  }
  await completed(client, RETAINED_OUTPUTS);
  await client.close();
  const rss = rssMb(first.pid);
  await first.stop(true);
  const start = performance.now();
  const second: Daemon = await startDaemon(flags, first.dataDir);
  const again = await TaskManagerClient.connect({ port: second.port });
  await again.health();
  const restart = seconds(start);
  const rssAfter = rssMb(second.pid);
  await again.close();
  await second.stop();
  return { rss_mb: rss, restart_s: restart, rss_after_restart_mb: rssAfter };
}

/**
 * The output-heavy cases, `rounds` rounds interleaved with xargs; `trueRate`
 * measures `true` throughput on a daemon, taken before and after a burst.
 */
export async function outputCase(rounds: number, trueRate: (port: number) => Promise<number>): Promise<CaseReport> {
  const file = textFile(MiB);
  const daemon = await startDaemon([]);
  const unsynced = await startDaemon(['--durability', 'none']);
  const before: number[] = [];
  for (let i = 0; i < 3; i++) before.push(await trueRate(daemon.port));
  const samples = { kept: [] as number[], unsynced: [] as number[], answered: [] as number[], xargs: [] as number[] };
  for (let round = 1; round <= rounds; round++) {
    samples.kept.push(await daemonKeptOutputRate(daemon.port, file));
    samples.unsynced.push(await daemonKeptOutputRate(unsynced.port, file));
    samples.answered.push(await daemonOutputRate(daemon.port, file, MiB));
    samples.xargs.push(xargsOutputRate(file, MiB));
    const [kept, none, answered, xargs] = Object.values(samples).map((values) => values.at(-1)!.toFixed(0));
    console.error(`round ${round}: ${OUTPUT_TASKS} x 1 MiB: daemon ${kept}/s (--durability none ${none}/s, output in the answers ${answered}/s), xargs -P${CONCURRENCY} ${xargs}/s`);
  }
  const after: number[] = [];
  for (let i = 0; i < 3; i++) after.push(await trueRate(daemon.port));
  await Promise.all([daemon.stop(), unsynced.stop()]);
  const nonReaders = await nonReadingClients(file);
  const retained = await retainedOutputs();
  const big = { kept: median(samples.kept), unsynced: median(samples.unsynced), answered: median(samples.answered), xargs: median(samples.xargs) };
  const plain = { before_burst: median(before), after_burst: median(after) };
  return {
    lines: [
      `${OUTPUT_TASKS} tasks printing 1 MiB: daemon ${big.kept.toFixed(0)}/s (${(big.kept / big.xargs).toFixed(2)} x), ` +
        `--durability none ${big.unsynced.toFixed(0)}/s (${(big.unsynced / big.xargs).toFixed(2)} x), ` +
        `with the output in each answer ${big.answered.toFixed(0)}/s (${(big.answered / big.xargs).toFixed(2)} x); xargs -P${CONCURRENCY} through a pipe ${big.xargs.toFixed(0)}/s`,
      `'true' before an output burst ${plain.before_burst.toFixed(0)}/s, after ${plain.after_burst.toFixed(0)}/s (${(plain.after_burst / plain.before_burst).toFixed(2)} x)`,
      `${NON_READERS} clients that never read, each running ${RUNS_PER_NON_READER} tasks printing 1 MiB: peak daemon RSS ${nonReaders.peak_rss_mb.toFixed(0)} MB`,
      `${RETAINED_OUTPUTS} retained outputs of 20 KB: daemon RSS ${retained.rss_mb.toFixed(0)} MB; restart ${retained.restart_s.toFixed(2)} s, RSS after it ${retained.rss_after_restart_mb.toFixed(0)} MB`,
    ],
    targets: {
      '1 MiB outputs >= 0.5 x xargs -P10 through a pipe': big.kept / big.xargs >= 0.5,
      'non-reading clients: RSS < 300 MB': nonReaders.peak_rss_mb < 300,
      'retained outputs: RSS < 300 MB': retained.rss_mb < 300,
      'retained outputs: restart < 2 s': retained.restart_s < 2,
      'true after an output burst >= 0.95 x before': plain.after_burst / plain.before_burst >= 0.95,
    },
    results: { output: { output_1mib_per_s: big, output_samples: samples, true_per_s: plain, non_readers: nonReaders, retained_outputs: retained } },
  };
}
