/**
 * `npm run bench`: the daemon against the limits of spawning processes and
 * against the tools people would otherwise use. Contenders run interleaved,
 * round after round, so that drift of a noisy machine hits all alike; the
 * table shows medians (the throughput case's after a round of warm-up).
 * Settings: BENCH_TASKS (2000), BENCH_ROUNDS (5),
 * BENCH_RETAINED (50000), BENCH_DELAYED (100000), BENCH_QUEUED (100000), and
 * BENCH_ONLY (a comma-separated choice of the cases: throughput, latency,
 * delayed, list, output, cluster; all by default). bench/output.ts and
 * bench/cluster.ts have the settings of their cases.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { TaskManagerClient, type TaskSpecInput, type TaskState } from '../dist/index.js';
import {
  CONCURRENCY, ROOT, cpuMs, cpuPerTask, daemonCpu, has, median, percentile, seconds, startDaemon, type CaseReport, type Daemon, type TaskCpu,
} from './daemon.js';
import { clusterCase } from './cluster.js';
import { outputCase } from './output.js';

const TASKS = Number(process.env.BENCH_TASKS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const RETAINED = Number(process.env.BENCH_RETAINED ?? 50_000);
const DELAYED = Number(process.env.BENCH_DELAYED ?? 100_000);
const QUEUED = Number(process.env.BENCH_QUEUED ?? 100_000);
const CASES = ['throughput', 'spawn', 'latency', 'delayed', 'list', 'output', 'cluster'];
const SPAWN_BALLAST_MB = Number(process.env.BENCH_SPAWN_BALLAST_MB ?? 150);
const ONLY = new Set(process.env.BENCH_ONLY ? process.env.BENCH_ONLY.split(',') : CASES);
const LATENCY_SAMPLES = 300;

/** One sample of a contender: tasks per second, and CPU per task (ms) where it can be read. */
interface Sample {
  rate: number;
  cpu?: TaskCpu;
  /** CPU per task of the runner and its tasks together, when they cannot be told apart */
  totalCpu?: number;
}

/** Tasks per second through the daemon, the requests spread over `connections` connections, all sent at once. */
async function daemonThroughput(port: number, connections: number, pid?: number): Promise<Sample> {
  const clients = await Promise.all(Array.from({ length: connections }, () => TaskManagerClient.connect({ port })));
  const cpuBefore = pid === undefined ? undefined : daemonCpu(pid);
  const start = performance.now();
  const share = (c: number) => Math.floor(TASKS / connections) + (c < TASKS % connections ? 1 : 0);
  await Promise.all(clients.map((client, c) => Promise.all(Array.from({ length: share(c) }, () => client.run({ cmd: ['true'] })))));
  const rate = TASKS / seconds(start);
  const cpu = cpuBefore && pid !== undefined ? cpuPerTask(cpuBefore, daemonCpu(pid), TASKS) : undefined;
  await Promise.all(clients.map((client) => client.close()));
  return cpu ? { rate, cpu } : { rate };
}

const spawnTrue = () =>
  new Promise<void>((resolve) => {
    const child = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout!.resume();
    child.stderr!.resume();
    child.once('close', () => resolve());
  });

/** CPU this process used (its own, and its reaped children's), for runners it starts and waits for. */
const benchCpu = () => cpuMs(process.pid);

/** The Node limit: a plain spawn loop at the same concurrency, reading output as the daemon does. */
async function spawnLoopThroughput(): Promise<Sample> {
  let next = 0;
  const before = benchCpu();
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next++ < TASKS) await spawnTrue();
  }));
  const rate = TASKS / seconds(start);
  const after = benchCpu();
  return { rate, cpu: { daemon: 0, spawner: (after.self - before.self) / TASKS, children: (after.children - before.children) / TASKS } };
}

function shellThroughput(script: string, env: NodeJS.ProcessEnv = {}): Sample {
  const before = benchCpu();
  const start = performance.now();
  const result = spawnSync('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  if (result.status !== 0) throw new Error(`${script}: ${result.stderr}`);
  const rate = TASKS / seconds(start);
  return { rate, totalCpu: (benchCpu().children - before.children) / TASKS };
}

/**
 * task-spooler: one client process per job, as people use it; timed until the
 * queue is empty. Its server outlives the shell, so only the clients' and the
 * shell's CPU is counted (not the server's, nor the tasks').
 */
function taskSpoolerThroughput(): Sample {
  // Its socket and each job's output file (ts-out.*, in TMPDIR) in a dir of its own, removed after:
  // left in /tmp, they were ten thousand files a run.
  const dir = mkdtempSync(join(tmpdir(), 'tm-bench-tsp-'));
  const env = { TS_SOCKET: join(dir, 'socket'), TS_MAXFINISHED: String(TASKS + 10), TMPDIR: dir };
  try {
    spawnSync('tsp', ['-S', String(CONCURRENCY)], { env: { ...process.env, ...env } });
    const { rate } = shellThroughput(`for i in $(seq ${TASKS}); do tsp true >/dev/null; done; while tsp -l | grep -qE 'running|queued'; do sleep 0.01; done`, env);
    spawnSync('tsp', ['-K'], { env: { ...process.env, ...env } });
    return { rate };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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

/** Submits `count` tasks, at most `window` unanswered at once. */
async function submitMany(client: TaskManagerClient, count: number, spec: (i: number) => TaskSpecInput): Promise<void> {
  const window = 5000;
  for (let sent = 0; sent < count; sent += window) {
    await Promise.all(Array.from({ length: Math.min(window, count - sent) }, (_, i) => client.submit(spec(sent + i))));
  }
}

/** The median answer time of `samples` requests sent one after another, in ms. */
async function medianAnswerMs(request: () => Promise<unknown>, samples = 200): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const start = performance.now();
    await request();
    times.push(performance.now() - start);
  }
  return median(times);
}

/** The longest time a client of the daemon at `port` waited for an answer to `health` while `work` ran. */
async function longestWaitMs(port: number, work: () => Promise<unknown>): Promise<number> {
  const probe = new Worker(new URL('./health-probe.js', import.meta.url), { workerData: { port } });
  await new Promise((resolve) => probe.once('message', resolve));
  await work();
  const report = new Promise<{ longestMs: number }>((resolve) => probe.once('message', resolve));
  probe.postMessage('stop');
  const { longestMs } = await report;
  await probe.terminate();
  return longestMs;
}

async function throughputCase(): Promise<CaseReport> {
  const optional = { parallel: has('parallel'), tsp: has('tsp') };
  for (const [tool, present] of Object.entries(optional)) if (!present) console.error(`note: ${tool} is not installed; skipped`);
  const native = { TASK_MANAGER_SPAWN: 'native' };
  const fsync = await startDaemon([], undefined, native);
  const nodeSpawn = await startDaemon([], undefined, { TASK_MANAGER_SPAWN: 'node' });
  const none = await startDaemon(['--durability', 'none'], undefined, native);
  const retained = await startDaemon(['--keep-finished', String(RETAINED + 10 * TASKS * (ROUNDS + 1))], retainedDataDir(RETAINED), native);
  const DAEMON = 'daemon (native spawn), 1 connection';
  const FALLBACK = "daemon (Node's spawn), 1 connection";
  const NONE = 'daemon (native spawn), durability none';
  const RETAINED_NAME = `daemon (native spawn), ${RETAINED} retained`;
  const XARGS = `xargs -P${CONCURRENCY}`;
  const TSP = `task-spooler -S${CONCURRENCY}`;
  const PARALLEL = `GNU parallel -j${CONCURRENCY}`;
  const contenders: Record<string, () => Promise<Sample> | Sample> = {
    'node spawn loop': spawnLoopThroughput,
    [XARGS]: () => shellThroughput(`seq ${TASKS} | xargs -P${CONCURRENCY} -n1 true`),
    [DAEMON]: () => daemonThroughput(fsync.port, 1, fsync.pid),
    [FALLBACK]: () => daemonThroughput(nodeSpawn.port, 1, nodeSpawn.pid),
    'daemon (native spawn), 10 connections': () => daemonThroughput(fsync.port, 10, fsync.pid),
    [NONE]: () => daemonThroughput(none.port, 1, none.pid),
    [RETAINED_NAME]: () => daemonThroughput(retained.port, 1, retained.pid),
  };
  if (optional.parallel) contenders[PARALLEL] = () => shellThroughput(`seq ${TASKS} | parallel --will-cite -j${CONCURRENCY} true`);
  if (optional.tsp) contenders[TSP] = taskSpoolerThroughput;

  const samples: Record<string, Sample[]> = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
  // Round 0 warms up and is not counted: a daemon's first burst pays its start once (compiling
  // its code, growing its heap, starting its executor processes), about 1.6 x its later rounds.
  for (let round = 0; round <= ROUNDS; round++) {
    for (const [name, run] of Object.entries(contenders)) {
      const sample = await run();
      if (round > 0) samples[name]!.push(sample);
      console.error(`round ${round}${round === 0 ? ' (warm-up)' : ''}: ${name}: ${sample.rate.toFixed(0)}/s`);
    }
  }
  await Promise.all([fsync.stop(), nodeSpawn.stop(), none.stop(), retained.stop()]);

  const medianOf = (values: (number | undefined)[]) => {
    const known = values.filter((value): value is number => value !== undefined);
    return known.length > 0 ? median(known) : undefined;
  };
  const summary = Object.fromEntries(
    Object.entries(samples).map(([name, list]) => [
      name,
      {
        rate: median(list.map((sample) => sample.rate)),
        daemon_cpu_ms: medianOf(list.map((sample) => sample.cpu?.daemon)),
        spawner_cpu_ms: medianOf(list.map((sample) => sample.cpu?.spawner)),
        children_cpu_ms: medianOf(list.map((sample) => sample.cpu?.children)),
        total_cpu_ms: medianOf(list.map((sample) => sample.totalCpu ?? (sample.cpu ? sample.cpu.daemon + sample.cpu.spawner + sample.cpu.children : undefined))),
      },
    ]),
  );
  const throughput = Object.fromEntries(Object.entries(summary).map(([name, { rate }]) => [name, rate]));
  const xargs = throughput[XARGS]!;
  const daemon = summary[DAEMON]!;
  const ms = (value: number | undefined) => (value === undefined ? '' : value.toFixed(2));
  const lines = [
    `| contender | tasks/s (median) | x ${XARGS} | CPU ms per task: daemon | spawner | tasks' processes | all |`,
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [name, row] of Object.entries(summary)) {
    lines.push(`| ${name} | ${row.rate.toFixed(0)} | ${(row.rate / xargs).toFixed(2)} | ${ms(row.daemon_cpu_ms)} | ${ms(row.spawner_cpu_ms)} | ${ms(row.children_cpu_ms)} | ${ms(row.total_cpu_ms)} |`);
  }
  lines.push('(the node spawn loop\'s own CPU is under "spawner"; for xargs and GNU parallel only the total is known; for task-spooler none: its server outlives the run)');
  return {
    lines,
    targets: {
      [`throughput (fsync) >= 0.75 x ${XARGS}`]: daemon.rate / xargs >= 0.75,
      ...(optional.tsp ? { [`throughput (fsync) > ${TSP}`]: daemon.rate > throughput[TSP]! } : {}),
      'daemon CPU per task <= 0.4 ms': daemon.daemon_cpu_ms! <= 0.4,
      'spawner CPU per task <= 0.3 ms': daemon.spawner_cpu_ms! <= 0.3,
      'throughput >= 0.9 x node spawn loop': daemon.rate / throughput['node spawn loop']! >= 0.9,
      ...(optional.parallel ? { 'throughput >= 2 x GNU parallel': daemon.rate / throughput[PARALLEL]! >= 2 } : {}),
      'fsync costs <= 10 %': daemon.rate / throughput[NONE]! >= 0.9,
      [`${RETAINED} retained cost <= 10 %`]: throughput[RETAINED_NAME]! / daemon.rate >= 0.9,
    },
    results: { throughput, cpu_per_task: summary, samples },
  };
}

/**
 * The spawner alone, in a process holding 0 and BENCH_SPAWN_BALLAST_MB of
 * memory, each path in turn, round after round: CPU per start, which a fork
 * makes grow with the memory and vfork (the native spawn) does not.
 */
async function spawnCase(): Promise<CaseReport> {
  const script = join(ROOT, 'dist-bench/spawn-cost.js');
  const runs = ['native', 'node'].flatMap((path) => [0, SPAWN_BALLAST_MB].map((mb) => ({ path, mb, name: `${path === 'native' ? 'native spawn' : "Node's spawn"}, ${mb} MB held` })));
  const samples: Record<string, { perSpawnMs: number; rate: number }[]> = Object.fromEntries(runs.map((run) => [run.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const run of runs) {
      const result = spawnSync(process.execPath, [script, String(run.mb)], { env: { ...process.env, TASK_MANAGER_SPAWN: run.path, BENCH_SPAWNS: String(TASKS) }, encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`spawn-cost ${run.name}: ${result.stderr}`);
      samples[run.name]!.push(JSON.parse(result.stdout) as { perSpawnMs: number; rate: number });
      console.error(`round ${round}: ${run.name}: ${samples[run.name]!.at(-1)!.perSpawnMs.toFixed(3)} ms per start`);
    }
  }
  const spawnCost = Object.fromEntries(
    Object.entries(samples).map(([name, list]) => [name, { cpu_ms_per_start: median(list.map((s) => s.perSpawnMs)), starts_per_s: median(list.map((s) => s.rate)) }]),
  );
  const lines = ['| spawner | CPU ms per start (median) | starts/s |', '|---|---:|---:|'];
  for (const [name, row] of Object.entries(spawnCost)) lines.push(`| ${name} | ${row.cpu_ms_per_start.toFixed(3)} | ${row.starts_per_s.toFixed(0)} |`);
  const small = spawnCost['native spawn, 0 MB held']!.cpu_ms_per_start;
  const large = spawnCost[`native spawn, ${SPAWN_BALLAST_MB} MB held`]!.cpu_ms_per_start;
  return {
    lines,
    targets: { [`native spawn cost flat with ${SPAWN_BALLAST_MB} MB held (<= 1.2 x)`]: large <= small * 1.2 },
    results: { spawn_cost: spawnCost },
  };
}

async function latencyCase(): Promise<CaseReport> {
  const fsync = await startDaemon([]);
  const none = await startDaemon(['--durability', 'none']);
  const lat = await latency(fsync.port);
  const latNone = await latency(none.port);
  await Promise.all([fsync.stop(), none.stop()]);
  const latencyMs = {
    daemon_p50: percentile(lat.daemon, 0.5), daemon_p99: percentile(lat.daemon, 0.99),
    spawn_p50: percentile(lat.spawn, 0.5), spawn_p99: percentile(lat.spawn, 0.99),
    daemon_none_p50: percentile(latNone.daemon, 0.5), daemon_none_p99: percentile(latNone.daemon, 0.99),
    spawn_during_none_p50: percentile(latNone.spawn, 0.5),
  };
  return {
    lines: [
      `sequential run of 'true': p50 ${latencyMs.daemon_p50.toFixed(2)} ms, p99 ${latencyMs.daemon_p99.toFixed(2)} ms; direct spawn p50 ${latencyMs.spawn_p50.toFixed(2)} ms, p99 ${latencyMs.spawn_p99.toFixed(2)} ms; overhead p50 ${(latencyMs.daemon_p50 - latencyMs.spawn_p50).toFixed(2)} ms`,
      `the same with --durability none: p50 ${latencyMs.daemon_none_p50.toFixed(2)} ms, p99 ${latencyMs.daemon_none_p99.toFixed(2)} ms; overhead p50 ${(latencyMs.daemon_none_p50 - latencyMs.spawn_during_none_p50).toFixed(2)} ms`,
    ],
    targets: {
      'run p50 overhead <= 1 ms (fsync)': latencyMs.daemon_p50 - latencyMs.spawn_p50 <= 1,
      'run p50 overhead <= 0.5 ms (durability none)': latencyMs.daemon_none_p50 - latencyMs.spawn_during_none_p50 <= 0.5,
    },
    results: { latency_ms: latencyMs },
  };
}

async function delayedCase(): Promise<CaseReport> {
  const daemon = await startDaemon(['--max-queue', String(DELAYED)]);
  const client = await TaskManagerClient.connect({ port: daemon.port });
  const start = performance.now();
  await submitMany(client, DELAYED, (i) => ({ id: `d${i}`, cmd: ['true'], delay_ms: 3_600_000 }));
  const submitRate = DELAYED / seconds(start);
  const statusMs = await medianAnswerMs(() => client.status(`d${Math.floor(Math.random() * DELAYED)}`));
  const countMs = await medianAnswerMs(() => client.count());
  const rssMb = (await client.stats()).memory.daemon_rss_bytes / 1e6;
  await client.close();
  // The submits are all in the log: the first restart replays it, the second reads the snapshot the first wrote.
  const fromLog = await restart(daemon);
  const duringSnapshot = await statusUntilOneLog(fromLog.daemon);
  const fromSnapshot = await restart(fromLog.daemon);
  await fromSnapshot.daemon.stop();
  const delayed = {
    submit_per_s: submitRate,
    status_ms: statusMs,
    count_ms: countMs,
    rss_mb: rssMb,
    stop_ms: fromLog.stopMs,
    restart_from_log_ms: fromLog.startMs,
    restart_from_log_cpu_ms: fromLog.startCpuMs,
    restart_from_snapshot_ms: fromSnapshot.startMs,
    restart_from_snapshot_cpu_ms: fromSnapshot.startCpuMs,
    status_during_snapshot_p50_ms: percentile(duringSnapshot, 0.5),
    status_during_snapshot_p99_ms: percentile(duringSnapshot, 0.99),
    status_during_snapshot_max_ms: Math.max(...duringSnapshot),
  };
  return {
    lines: [
      `${DELAYED} delayed tasks: submitted at ${submitRate.toFixed(0)}/s; status ${statusMs.toFixed(2)} ms, count ${countMs.toFixed(2)} ms; daemon RSS ${rssMb.toFixed(0)} MB`,
      `${DELAYED} queued tasks: restart (stop, start, first answered health): stop ${delayed.stop_ms.toFixed(0)} ms; start ${delayed.restart_from_log_ms.toFixed(0)} ms replaying the log (daemon CPU ${delayed.restart_from_log_cpu_ms} ms), ${delayed.restart_from_snapshot_ms.toFixed(0)} ms reading the snapshot (daemon CPU ${delayed.restart_from_snapshot_cpu_ms} ms)`,
      `status while the snapshot of the start is written: p50 ${delayed.status_during_snapshot_p50_ms.toFixed(2)} ms, p99 ${delayed.status_during_snapshot_p99_ms.toFixed(2)} ms, max ${delayed.status_during_snapshot_max_ms.toFixed(2)} ms`,
    ],
    targets: {
      [`${DELAYED} delayed: submit >= 20000/s`]: submitRate >= 20_000,
      [`${DELAYED} delayed: status, count < 5 ms`]: statusMs < 5 && countMs < 5,
      [`${DELAYED} delayed: RSS <= 300 MB`]: rssMb <= 300,
      [`${DELAYED} queued: restart answers within 1.5 s`]: Math.max(delayed.restart_from_log_ms, delayed.restart_from_snapshot_ms) < 1500,
    },
    results: { delayed },
  };
}

/**
 * Stops the daemon, then starts it again on its data dir. `startMs` lasts
 * until its first `health` is answered, and `startCpuMs` is the CPU time
 * the new daemon used until then (which other work on the machine does not
 * stretch).
 */
async function restart(daemon: Daemon): Promise<{ daemon: Daemon; stopMs: number; startMs: number; startCpuMs: number }> {
  let start = performance.now();
  await daemon.stop(true);
  const stopMs = performance.now() - start;
  start = performance.now();
  const again = await startDaemon(['--max-queue', String(DELAYED)], daemon.dataDir);
  const client = await TaskManagerClient.connect({ port: again.port });
  await client.health();
  const startMs = performance.now() - start;
  const startCpuMs = cpuMs(again.pid).self;
  await client.close();
  return { daemon: again, stopMs, startMs, startCpuMs };
}

/**
 * Answer times of `status`, one request after another, until the snapshot a
 * start writes while serving has replaced the logs it read (one at least).
 */
async function statusUntilOneLog(daemon: Daemon): Promise<number[]> {
  const client = await TaskManagerClient.connect({ port: daemon.port });
  const samples: number[] = [];
  do {
    const start = performance.now();
    await client.status(`d${Math.floor(Math.random() * DELAYED)}`);
    samples.push(performance.now() - start);
  } while (readdirSync(daemon.dataDir).filter((name) => name.startsWith('log.')).length > 1);
  await client.close();
  return samples;
}

/**
 * `list` over BENCH_QUEUED tasks QUEUED behind one long task at concurrency 1:
 * paging through all of them, single pages at the start and near the end, and
 * how long another client waits while pages of 10,000 are answered.
 */
async function listCase(): Promise<CaseReport> {
  const daemon = await startDaemon(['--concurrency', '1', '--max-queue', String(QUEUED + 1), '--shutdown-grace-ms', '0']);
  const client = await TaskManagerClient.connect({ port: daemon.port });
  await client.submit({ id: 'blocker', cmd: ['sleep', '1000'] });
  await submitMany(client, QUEUED, (i) => ({ id: `q${i}`, cmd: ['true'] }));

  /** Seconds to read every task of `state` (all with none), 100 a page, each page after the last id of the one before. */
  const pageThrough = async (expected: number, state?: TaskState) => {
    const start = performance.now();
    let listed = 0;
    let after: string | undefined;
    for (;;) {
      const { tasks } = await client.list({ state, limit: 100, after });
      listed += tasks.length;
      if (tasks.length < 100) break;
      after = tasks.at(-1)!.id;
    }
    const elapsed = seconds(start);
    if (listed !== expected) throw new Error(`paging ${state ?? 'all'} listed ${listed} tasks, not ${expected}`);
    return elapsed;
  };
  /** The median answer time of a page of 100 QUEUED tasks after `after`, which `expected` follow. */
  const pageMs = async (expected: number, after?: string) => {
    const { total } = await client.list({ state: 'QUEUED', limit: 100, after });
    if (total !== expected) throw new Error(`list state=QUEUED after=${after} counted ${total} tasks, not ${expected}`);
    return medianAnswerMs(() => client.list({ state: 'QUEUED', limit: 100, after }));
  };
  const pagesOf10000 = async () => {
    for (let i = 0; i < 20; i++) await client.list({ state: 'QUEUED', limit: 10_000 });
  };
  const list = {
    page_all_s: await pageThrough(QUEUED + 1),
    page_queued_s: await pageThrough(QUEUED, 'QUEUED'),
    first_page_ms: await pageMs(QUEUED),
    last_page_ms: await pageMs(199, `q${QUEUED - 200}`),
    idle_wait_ms: await longestWaitMs(daemon.port, () => new Promise((resolve) => setTimeout(resolve, 2000))),
    wait_during_pages_of_10000_ms: await longestWaitMs(daemon.port, pagesOf10000),
  };
  await client.close();
  await daemon.stop();
  return {
    lines: [
      `${QUEUED} queued tasks: paged through 100 at a time in ${list.page_all_s.toFixed(2)} s (all), ${list.page_queued_s.toFixed(2)} s (state QUEUED); ` +
        `a page of 100 QUEUED in ${list.first_page_ms.toFixed(2)} ms (first), ${list.last_page_ms.toFixed(2)} ms (after an id near the end); ` +
        `another client waited at most ${list.wait_during_pages_of_10000_ms.toFixed(1)} ms for an answer while 20 pages of 10000 were answered ` +
        `(${list.idle_wait_ms.toFixed(1)} ms with nothing else to do)`,
    ],
    targets: {
      [`${QUEUED} queued: paging through all < 1 s`]: list.page_all_s < 1 && list.page_queued_s < 1,
      [`${QUEUED} queued: a page of 100 QUEUED < 2 ms`]: list.first_page_ms < 2 && list.last_page_ms < 2,
    },
    results: { list },
  };
}

async function main(): Promise<void> {
  const unknown = [...ONLY].filter((name) => !CASES.includes(name));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY names no case "${unknown.join(', ')}"; the cases are ${CASES.join(', ')}`);
  console.error(`task-manager bench (${[...ONLY].join(', ')}): ${TASKS} tasks of 'true' at concurrency ${CONCURRENCY}, ${ROUNDS} rounds`);
  const cases: Record<string, () => Promise<CaseReport>> = {
    throughput: throughputCase,
    spawn: spawnCase,
    latency: latencyCase,
    delayed: delayedCase,
    list: listCase,
    output: () => outputCase(ROUNDS, async (port) => (await daemonThroughput(port, 1)).rate),
    cluster: () => clusterCase(ROUNDS),
  };
  const reports: CaseReport[] = [];
  for (const [name, run] of Object.entries(cases)) if (ONLY.has(name)) reports.push(await run());

  const targets = Object.assign({}, ...reports.map((report) => report.targets)) as Record<string, boolean>;
  const lines = reports.flatMap((report) => ['', ...report.lines]);
  lines.push('', ...Object.entries(targets).map(([target, met]) => `${met ? 'met    ' : 'NOT met'}  ${target}`));
  console.log(lines.join('\n'));

  const at = new Date().toISOString();
  const results = { at, tasks: TASKS, rounds: ROUNDS, concurrency: CONCURRENCY, ...Object.assign({}, ...reports.map((report) => report.results)), targets };
  const file = join(ROOT, 'bench/results', `${at.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwritten to ${file}`);
}

await main();
