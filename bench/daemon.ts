import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { statFields } from '../dist/executor/process-info.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CONCURRENCY = 10;

export interface Daemon {
  port: number;
  pid: number;
  dataDir: string;
  /** SIGTERM, wait for the exit; the data dir is removed unless `keep` */
  stop(keep?: boolean): Promise<void>;
}

/** `env` adds to the bench's environment (TASK_MANAGER_SPAWN=node|native, say). */
export async function startDaemon(flags: string[], dataDir = mkdtempSync(join(tmpdir(), 'tm-bench-')), env: NodeJS.ProcessEnv = {}): Promise<Daemon> {
  const child = spawn(join(ROOT, 'bin/task-manager'), ['serve', '--port', '0', '--data-dir', dataDir, '--concurrency', String(CONCURRENCY), ...flags], {
    stdio: ['ignore', 'pipe', 'ignore'],
    // The launcher's #! line finds node on PATH: the one running the bench comes first.
    env: { ...process.env, ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
  });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = / on [^ ]+:(\d+) /.exec(line);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`daemon exited with ${code}`)));
  });
  return {
    port,
    pid: child.pid!,
    dataDir,
    stop: async (keep = false) => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      if (!keep) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const seconds = (start: number) => (performance.now() - start) / 1000;
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
export const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;
/** Resident memory of a process, in MB. */
export function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match![1]) / 1024;
}

const TICK_MS = 10; // getconf CLK_TCK is 100 on Linux

/**
 * CPU time of a process, in ms: its own (user + system), and that of the
 * children it has reaped (with theirs), which is where its tasks' processes
 * count.
 */
export function cpuMs(pid: number): { self: number; children: number } {
  const fields = statFields(pid);
  if (!fields) return { self: 0, children: 0 };
  return { self: (Number(fields[11]) + Number(fields[12])) * TICK_MS, children: (Number(fields[13]) + Number(fields[14])) * TICK_MS };
}

/** The pids of a process's children (the daemon's executor processes). */
export function childPids(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((child) => statFields(child)?.[1] === String(pid));
}

/** CPU per task, in ms, of the daemon, its executor processes (the spawners) and the tasks' own processes. */
export interface TaskCpu {
  daemon: number;
  spawner: number;
  children: number;
}

/** CPU used by a daemon and its executor processes so far; the difference of two readings over `tasks` is per task. */
export function daemonCpu(pid: number): TaskCpu {
  const executors = childPids(pid).map(cpuMs);
  return {
    daemon: cpuMs(pid).self,
    spawner: executors.reduce((sum, cpu) => sum + cpu.self, 0),
    children: executors.reduce((sum, cpu) => sum + cpu.children, 0),
  };
}

export const cpuPerTask = (before: TaskCpu, after: TaskCpu, tasks: number): TaskCpu => ({
  daemon: (after.daemon - before.daemon) / tasks,
  spawner: (after.spawner - before.spawner) / tasks,
  children: (after.children - before.children) / tasks,
});

export const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;


/** What one case adds to the printed report and to the JSON result. */
export interface CaseReport {
  lines: string[];
  targets: Record<string, boolean>;
  results: Record<string, unknown>;
}
