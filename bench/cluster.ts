/**
 * The cluster on PostgreSQL against the embedded journal: `true` tasks
 * through one daemon of each, and through three daemons sharing one
 * PostgreSQL. On this machine all of them share its 2 cores, so beside
 * tasks per second the case reads CPU per task of each part (daemons, their
 * executor processes, the PostgreSQL server): what one more host adds, and
 * where the shared store caps the cluster, follows from those. Also the
 * latency of an acknowledged submit. PostgreSQL runs with fsync on, as the
 * embedded journal does. Settings: BENCH_CLUSTER_TASKS (1000).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TaskManagerClient } from '../dist/index.js';
import { type CaseReport, childPids, cpuMs, type Daemon, daemonCpu, median, percentile, seconds, startDaemon } from './daemon.js';
import { type PostgresServer, startPostgres } from './postgres-server.js';

const TASKS = Number(process.env.BENCH_CLUSTER_TASKS ?? 1000);
const LATENCY_SAMPLES = 300;

interface Sample {
  rate: number;
  /** CPU ms per task */
  daemons: number;
  spawners: number;
  postgres: number;
}

/** CPU used so far by the PostgreSQL server: the postmaster, the backends it reaped, and those alive now (by pid). */
function postgresCpu(server: PostgresServer): { total: number; live: Map<number, number> } {
  const postmaster = Number(readFileSync(join(server.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const own = cpuMs(postmaster);
  const live = new Map(childPids(postmaster).map((pid) => [pid, cpuMs(pid).self]));
  return { total: own.self + own.children, live };
}

/** What the server used between two readings (a backend alive at both counts its difference; one born since, all of it). */
function postgresCpuBetween(before: ReturnType<typeof postgresCpu>, after: ReturnType<typeof postgresCpu>): number {
  let live = 0;
  for (const [pid, cpu] of after.live) live += cpu - (before.live.get(pid) ?? 0);
  return after.total - before.total + live;
}

/** TASKS runs of `true`, spread over the daemons (one connection to each), all sent at once. */
async function throughput(daemons: Daemon[], server: PostgresServer | undefined): Promise<Sample> {
  const clients = await Promise.all(daemons.map((daemon) => TaskManagerClient.connect({ port: daemon.port })));
  const before = daemons.map((daemon) => daemonCpu(daemon.pid));
  const pgBefore = server && postgresCpu(server);
  const start = performance.now();
  const share = (c: number) => Math.floor(TASKS / clients.length) + (c < TASKS % clients.length ? 1 : 0);
  await Promise.all(clients.map((client, c) => Promise.all(Array.from({ length: share(c) }, () => client.run({ cmd: ['true'] })))));
  const rate = TASKS / seconds(start);
  const after = daemons.map((daemon) => daemonCpu(daemon.pid));
  const sum = (part: 'daemon' | 'spawner') => after.reduce((total, cpu, i) => total + cpu[part] - before[i]![part], 0) / TASKS;
  const postgres = server && pgBefore ? postgresCpuBetween(pgBefore, postgresCpu(server)) / TASKS : 0;
  await Promise.all(clients.map((client) => client.close()));
  return { rate, daemons: sum('daemon'), spawners: sum('spawner'), postgres };
}

/** Milliseconds from sending a submit to its acknowledgement, one at a time. */
async function submitLatency(daemon: Daemon): Promise<number[]> {
  const client = await TaskManagerClient.connect({ port: daemon.port });
  const samples: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    const start = performance.now();
    await client.submit({ cmd: ['true'] });
    samples.push(performance.now() - start);
  }
  await client.close();
  return samples;
}

export async function clusterCase(rounds: number): Promise<CaseReport> {
  const server = await startPostgres({ durable: true });
  const storeOfOne = await server.createDatabase('one');
  const storeOfThree = await server.createDatabase('three');
  const EMBEDDED = 'embedded journal (fsync), 1 daemon';
  const ONE = 'PostgreSQL (fsync), 1 daemon';
  const THREE = 'PostgreSQL (fsync), 3 daemons';
  const embedded = await startDaemon([]);
  const one = await startDaemon(['--store', storeOfOne]);
  const three = [await startDaemon(['--store', storeOfThree]), await startDaemon(['--store', storeOfThree]), await startDaemon(['--store', storeOfThree])];
  try {
    const contenders: Record<string, () => Promise<Sample>> = {
      [EMBEDDED]: () => throughput([embedded], undefined),
      [ONE]: () => throughput([one], server),
      [THREE]: () => throughput(three, server),
    };
    const samples: Record<string, Sample[]> = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
    // Round 0 warms up and is not counted, as in the throughput case: a daemon's first burst pays
    // for compiling its code and starting its executor processes, and PostgreSQL's for its caches.
    for (let round = 0; round <= rounds; round++) {
      for (const [name, run] of Object.entries(contenders)) {
        const sample = await run();
        if (round > 0) samples[name]!.push(sample);
        console.error(`cluster round ${round}${round === 0 ? ' (warm-up)' : ''}: ${name}: ${sample.rate.toFixed(0)}/s`);
      }
    }
    const latency = { [EMBEDDED]: await submitLatency(embedded), [ONE]: await submitLatency(one) };
    const summary = Object.fromEntries(
      Object.entries(samples).map(([name, list]) => {
        const of = (part: keyof Sample) => median(list.map((sample) => sample[part]));
        return [name, { rate: of('rate'), daemons: of('daemons'), spawners: of('spawners'), postgres: of('postgres') }];
      }),
    );
    const lines = [
      `| ${TASKS} runs of true, concurrency 10 per daemon | tasks/s (median) | x embedded | CPU ms per task: daemons | executors | PostgreSQL | all |`,
      '|---|---:|---:|---:|---:|---:|---:|',
      ...Object.entries(summary).map(
        ([name, row]) =>
          `| ${name} | ${row.rate.toFixed(0)} | ${(row.rate / summary[EMBEDDED]!.rate).toFixed(2)} | ${row.daemons.toFixed(2)} | ${row.spawners.toFixed(2)} | ${row.postgres.toFixed(2)} | ${(row.daemons + row.spawners + row.postgres).toFixed(2)} |`,
      ),
      '',
      '| submit, acknowledged (ms) | p50 | p99 |',
      '|---|---:|---:|',
      ...Object.entries(latency).map(([name, values]) => `| ${name} | ${percentile(values, 0.5).toFixed(2)} | ${percentile(values, 0.99).toFixed(2)} |`),
    ];
    return { lines, targets: {}, results: { cluster: { throughput: summary, samples, submit_latency_ms: latency } } };
  } finally {
    await Promise.all([embedded, one, ...three].map((daemon) => daemon.stop()));
    await server.stop();
  }
}
