/**
 * One spawner in a process of its own: BENCH_SPAWNS starts of `true` at
 * concurrency 10 through the executor's spawner (TASK_MANAGER_SPAWN picks
 * it), while this process holds `argv[2]` MB of touched memory, as an
 * executor process that has grown would. Prints the CPU this process spent
 * per start (the spawner's cost, without the children's own: its output
 * files included) and the rate.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseSpawner } from '../dist/executor/spawner.js';

const ballastMb = Number(process.argv[2] ?? 0);
const spawns = Number(process.env.BENCH_SPAWNS ?? 2000);
const concurrency = 10;
// Many small objects and one big buffer, all touched: page tables to copy at every fork.
const ballast = Buffer.alloc(ballastMb * 1024 * 1024, 1);
const { spawner } = chooseSpawner();
const outputDir = mkdtempSync(join(tmpdir(), 'tm-spawn-cost-'));
let started = 0;
const env = Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined));

const startOne = async () => {
  const name = join(outputDir, String(++started));
  const output = { stdout: `${name}.stdout`, stderr: `${name}.stderr` };
  const child = spawner.start({ file: 'true', argv: [], env: { base: env, own: {} }, cwd: undefined, stdinPipe: false, output, limit: 1 << 20, sync: false });
  await child.ended;
};
// warm up
for (let i = 0; i < 20; i++) await startOne();
const cpuBefore = process.cpuUsage();
const start = performance.now();
let next = 0;
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next++ < spawns) await startOne();
}));
const seconds = (performance.now() - start) / 1000;
const cpu = process.cpuUsage(cpuBefore);
rmSync(outputDir, { recursive: true, force: true });
console.log(JSON.stringify({ path: spawner.kind, ballastMb: ballast.length / 1024 / 1024, perSpawnMs: (cpu.user + cpu.system) / 1000 / spawns, rate: spawns / seconds }));
