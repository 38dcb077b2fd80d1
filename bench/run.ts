/**
 * `npm run bench`: the daemon against the limits of spawning processes and
 * against the tools people would otherwise use. Contenders run interleaved,
 * round after round, so that drift of a noisy machine hits all alike; the
 * table shows medians. Settings: BENCH_TASKS (2000), BENCH_ROUNDS (5),
 * BENCH_RETAINED (50000), BENCH_DELAYED (100000).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskManagerClient } from '../dist/index.js';
import { CONCURRENCY, ROOT, has, median, percentile, seconds, startDaemon } from './daemon.js';
import { outputCases } from './output.js';

const TASKS = Number(process.env.BENCH_TASKS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const RETAINED = Number(process.env.BENCH_RETAINED ?? 50_000);
const DELAYED = Number(process.env.BENCH_DELAYED ?? 100_000);
const LATENCY_SAMPLES = 300;

/** Tasks per second through the daemon, the requests spread over `connections` connections, all sent at once. */
async function daemonThroughput(port: number, connections: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: connections }, () => TaskManagerClient.connect({ port })));
  const start = performance.now();
  const share = (c: number) => Math.floor(TASKS / connections) + (c < TASKS % connections ? 1 : 0);
  await Promise.all(clients.map((client, c) => Promise.all(Array.from({ length: share(c) }, () => client.run({ cmd: ['true'] })))));
  const rate = TASKS / seconds(start);
  await Promise.all(clients.map((client) => client.close()));
  return rate;
}

const spawnTrue = () =>
  new Promise<void>((resolve) => {
    const child = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout!.resume();
    child.stderr!.resume();
    child.once('close', () => resolve());
  });

/** The Node limit: a plain spawn loop at the same concurrency, reading output as the daemon does. */
async function spawnLoopThroughput(): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next++ < TASKS) await spawnTrue();
  }));
  return TASKS / seconds(start);
}

function shellThroughput(script: string, env: NodeJS.ProcessEnv = {}): number {
  const start = performance.now();
  const result = spawnSync('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  if (result.status !== 0) throw new Error(`${script}: ${result.stderr}`);
  return TASKS / seconds(start);
}

/** task-spooler: one client process per job, as people use it; timed until the queue is empty. */
function taskSpoolerThroughput(): number {
  const socket = join(mkdtempSync(join(tmpdir(), 'tm-bench-tsp-')), 'socket');
  const env = { TS_SOCKET: socket, TS_MAXFINISHED: String(TASKS + 10) };
  spawnSync('tsp', ['-S', String(CONCURRENCY)], { env: { ...process.env, ...env } });
  const rate = shellThroughput(`for i in $(seq ${TASKS}); do tsp true >/dev/null; done; while tsp -l | grep -qE 'running|queued'; do sleep 0.01; done`, env);
  spawnSync('tsp', ['-K'], { env: { ...process.env, ...env } });
  return rate;
}

async function latency(port: number): Promise<{ daemon: number[]; spawn: number[] }> {
  const client = await TaskManagerClient.connect({ port });
  const daemon: number[] = [];
  const direct: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    let start = performance.now();
    await client.run({ cmd: ['true'] });
    daemon.push(performance.now() - start);
    start = performance.now();
    await spawnTrue();
    direct.push(performance.now() - start);
  }
  await client.close();
  return { daemon, spawn: direct };
}

/** A data dir whose snapshot already holds `count` finished tasks. */
function retainedDataDir(count: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'tm-bench-retained-'));
  const at = new Date().toISOString();
  const tasks = Array.from({ length: count }, (_, i) => ({
    id: `old-${i}`, state: 'COMPLETED', cmd: ['true'], exit_code: 0, signal: null, timed_out: false, stdout: '', stderr: '',
    stdout_truncated: false, stderr_truncated: false, duration_ms: 1.2, attempts: 1, max_attempts: 1, priority: 0,
    created_at: at, started_at: at, finished_at: at, depends_on: [], error: null, seq: i + 1,
    spec: { cmd: ['true'], depends_on: [], retries: 0, retry_delay_ms: 1000, priority: 0, max_output_bytes: 1048576 },
  }));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'snapshot.json'), JSON.stringify({ format: 1, generation: 0, tasks }));
  return dir;
}

async function delayedLoad(): Promise<Record<string, number>> {
  const daemon = await startDaemon(['--max-queue', String(DELAYED)]);
  const client = await TaskManagerClient.connect({ port: daemon.port });
  const window = 5000;
  const start = performance.now();
  for (let sent = 0; sent < DELAYED; sent += window) {
    const batch = Math.min(window, DELAYED - sent);
    await Promise.all(Array.from({ length: batch }, (_, i) => client.submit({ id: `d${sent + i}`, cmd: ['true'], delay_ms: 3_600_000 })));
  }
  const submitRate = DELAYED / seconds(start);
  const timed = async (request: () => Promise<unknown>) => {
    const samples: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await request();
      samples.push(performance.now() - t);
    }
    return median(samples);
  };
  const statusMs = await timed(() => client.status(`d${Math.floor(Math.random() * DELAYED)}`));
  const countMs = await timed(() => client.count());
  const rssMb = (await client.stats()).memory.daemon_rss_bytes / 1e6;
  await client.close();
  await daemon.stop();
  return { submit_per_s: submitRate, status_ms: statusMs, count_ms: countMs, rss_mb: rssMb };
}

async function main(): Promise<void> {
  const optional = { parallel: has('parallel'), tsp: has('tsp') };
  console.error(`task-manager bench: ${TASKS} tasks of 'true' at concurrency ${CONCURRENCY}, ${ROUNDS} rounds`);
  for (const [tool, present] of Object.entries(optional)) if (!present) console.error(`note: ${tool} is not installed; skipped`);

  const fsync = await startDaemon([]);
  const none = await startDaemon(['--durability', 'none']);
  const retained = await startDaemon(['--keep-finished', String(RETAINED + 10 * TASKS * ROUNDS)], retainedDataDir(RETAINED));
  const contenders: Record<string, () => Promise<number> | number> = {
    'node spawn loop': spawnLoopThroughput,
    'xargs -P10': () => shellThroughput(`seq ${TASKS} | xargs -P${CONCURRENCY} -n1 true`),
    'daemon, 1 connection': () => daemonThroughput(fsync.port, 1),
    'daemon, 10 connections': () => daemonThroughput(fsync.port, 10),
    'daemon, durability none': () => daemonThroughput(none.port, 1),
    [`daemon, ${RETAINED} retained`]: () => daemonThroughput(retained.port, 1),
  };
  if (optional.parallel) contenders['GNU parallel -j10'] = () => shellThroughput(`seq ${TASKS} | parallel --will-cite -j${CONCURRENCY} true`);
  if (optional.tsp) contenders['task-spooler -S10'] = taskSpoolerThroughput;

  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, run] of Object.entries(contenders)) {
      samples[name]!.push(await run());
      console.error(`round ${round}: ${name}: ${samples[name]!.at(-1)!.toFixed(0)}/s`);
    }
  }
  const lat = await latency(fsync.port);
  const latNone = await latency(none.port);
  await Promise.all([fsync.stop(), none.stop(), retained.stop()]);
  const delayed = await delayedLoad();
  const output = await outputCases(ROUNDS, (port) => daemonThroughput(port, 1));

  const throughput = Object.fromEntries(Object.entries(samples).map(([name, values]) => [name, median(values)]));
  const limit = throughput['node spawn loop']!;
  const daemon = throughput['daemon, 1 connection']!;
  const latencyMs = {
    daemon_p50: percentile(lat.daemon, 0.5), daemon_p99: percentile(lat.daemon, 0.99),
    spawn_p50: percentile(lat.spawn, 0.5), spawn_p99: percentile(lat.spawn, 0.99),
    daemon_none_p50: percentile(latNone.daemon, 0.5), daemon_none_p99: percentile(latNone.daemon, 0.99),
    spawn_during_none_p50: percentile(latNone.spawn, 0.5),
  };
  const targets = {
    'throughput >= 0.9 x node spawn loop': daemon / limit >= 0.9,
    ...(optional.parallel ? { 'throughput >= 2 x GNU parallel': daemon / throughput['GNU parallel -j10']! >= 2 } : {}),
    'run p50 overhead <= 1 ms (fsync)': latencyMs.daemon_p50 - latencyMs.spawn_p50 <= 1,
    'run p50 overhead <= 1 ms (durability none)': latencyMs.daemon_none_p50 - latencyMs.spawn_during_none_p50 <= 1,
    'fsync costs <= 10 %': daemon / throughput['daemon, durability none']! >= 0.9,
    [`${RETAINED} retained cost <= 10 %`]: throughput[`daemon, ${RETAINED} retained`]! / daemon >= 0.9,
    [`${DELAYED} delayed: submit >= 20000/s`]: delayed.submit_per_s! >= 20_000,
    [`${DELAYED} delayed: status, count < 5 ms`]: delayed.status_ms! < 5 && delayed.count_ms! < 5,
    [`${DELAYED} delayed: RSS <= 300 MB`]: delayed.rss_mb! <= 300,
    '1 MiB outputs >= 0.5 x xargs -P10 through a pipe': output.output_1mib_per_s.daemon / output.output_1mib_per_s.xargs >= 0.5,
    'non-reading clients: RSS < 300 MB': output.non_readers.peak_rss_mb < 300,
    'retained outputs: RSS < 300 MB': output.retained_outputs.rss_mb < 300,
    'retained outputs: restart < 2 s': output.retained_outputs.restart_s < 2,
    'true after an output burst >= 0.95 x before': output.true_per_s.after_burst / output.true_per_s.before_burst >= 0.95,
  };

  const lines = ['', '| contender | tasks/s (median) | x node spawn loop |', '|---|---:|---:|'];
  for (const [name, rate] of Object.entries(throughput)) lines.push(`| ${name} | ${rate.toFixed(0)} | ${(rate / limit).toFixed(2)} |`);
  lines.push('', `sequential run of 'true': p50 ${latencyMs.daemon_p50.toFixed(2)} ms, p99 ${latencyMs.daemon_p99.toFixed(2)} ms; direct spawn p50 ${latencyMs.spawn_p50.toFixed(2)} ms, p99 ${latencyMs.spawn_p99.toFixed(2)} ms; overhead p50 ${(latencyMs.daemon_p50 - latencyMs.spawn_p50).toFixed(2)} ms`);
  lines.push(`the same with --durability none: p50 ${latencyMs.daemon_none_p50.toFixed(2)} ms, p99 ${latencyMs.daemon_none_p99.toFixed(2)} ms; overhead p50 ${(latencyMs.daemon_none_p50 - latencyMs.spawn_during_none_p50).toFixed(2)} ms`);
  lines.push(`${DELAYED} delayed tasks: submitted at ${delayed.submit_per_s!.toFixed(0)}/s; status ${delayed.status_ms!.toFixed(2)} ms, count ${delayed.count_ms!.toFixed(2)} ms; daemon RSS ${delayed.rss_mb!.toFixed(0)} MB`);
  const { output_1mib_per_s: big, true_per_s: plain, non_readers: nonReaders, retained_outputs: retainedOut } = output;
  lines.push(`tasks printing 1 MiB: daemon ${big.daemon.toFixed(0)}/s (${(big.daemon / big.xargs).toFixed(2)} x), with the output in each answer ${big.daemon_output_in_answers.toFixed(0)}/s (${(big.daemon_output_in_answers / big.xargs).toFixed(2)} x); xargs -P${CONCURRENCY} through a pipe ${big.xargs.toFixed(0)}/s`);
  lines.push(`'true' before an output burst ${plain.before_burst.toFixed(0)}/s, after ${plain.after_burst.toFixed(0)}/s (${(plain.after_burst / plain.before_burst).toFixed(2)} x)`);
  lines.push(`clients that never read, each running 100 tasks printing 1 MiB: peak daemon RSS ${nonReaders.peak_rss_mb.toFixed(0)} MB`);
  lines.push(`retained outputs of 20 KB: daemon RSS ${retainedOut.rss_mb.toFixed(0)} MB; restart ${retainedOut.restart_s.toFixed(2)} s, RSS after it ${retainedOut.rss_after_restart_mb.toFixed(0)} MB`);
  lines.push('', ...Object.entries(targets).map(([target, met]) => `${met ? 'met    ' : 'NOT met'}  ${target}`));
  console.log(lines.join('\n'));

  const results = { at: new Date().toISOString(), tasks: TASKS, rounds: ROUNDS, concurrency: CONCURRENCY, throughput, samples, latency_ms: latencyMs, delayed, output, targets };
  const file = join(ROOT, 'bench/results', `${results.at.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwritten to ${file}`);
}

await main();
