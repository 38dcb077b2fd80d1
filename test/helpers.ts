import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TaskManagerClient, type TaskRecord, type TaskState } from '../src/index.js';
import type { StoredTask } from '../src/scheduler/index.js';
import { TEST_ROOT_VARIABLE } from './temp-root.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CMD = join(ROOT, 'bin/cmd');

/** Shell text that waits until `path` exists: a task held until the test opens its gate. */
export const untilExists = (path: string) => `while [ ! -e '${path}' ]; do sleep 0.02; done`;
export const TASK_MANAGER = join(ROOT, 'bin/task-manager');

/** A new directory, in the run's own temp dir (removed when the run ends) or the system's. */
export function tempDir(prefix = 'tm-test-'): string {
  return mkdtempSync(join(process.env[TEST_ROOT_VARIABLE] ?? tmpdir(), prefix));
}

export interface TestDaemon {
  port: number;
  dataDir: string;
  process: ChildProcess;
  /** everything the daemon wrote to stderr */
  stderr: () => string;
  client(): Promise<TaskManagerClient>;
  raw(): Promise<RawConnection>;
  /** SIGTERM and wait for exit; resolves with the exit code */
  stop(): Promise<number | null>;
  /** SIGKILL, no cleanup: a crash */
  kill(): Promise<void>;
  /** resolves with the exit code once the daemon has exited */
  exited: Promise<number | null>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface ServeOptions {
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  /** a command that runs the daemon, e.g. nsenter into another mount namespace (it must exec it) */
  prefix?: string[];
  /** its own process group, as a shell gives a foreground job: signals can go to the whole group */
  detached?: boolean;
}

/** The launcher's `#!` line finds `node` on PATH: the one running the tests comes first. */
const withThisNode = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...env, PATH: `${dirname(process.execPath)}:${env.PATH ?? ''}` });

/** Spawns `bin/task-manager serve` on an ephemeral port, through the launcher's own `#!` line, as an operator starts it. */
function spawnServe(dataDir: string, args: string[], options: ServeOptions): ChildProcess {
  const command = [...(options.prefix ?? []), TASK_MANAGER, 'serve', '--port', '0', '--data-dir', dataDir, ...args];
  return spawn(command[0]!, command.slice(1), {
    env: withThisNode({ ...process.env, ...options.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.detached ?? false,
  });
}

/** Starts `bin/task-manager serve` as a real process on an ephemeral port. */
export async function startDaemon(args: string[] = [], options: ServeOptions = {}): Promise<TestDaemon> {
  const dataDir = options.dataDir ?? tempDir('tm-data-');
  const child = spawnServe(dataDir, args, options);
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    running.delete(child);
    resolve(code);
  }));
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const match = / on [^ ]+:(\d+) /.exec(line);
      if (match) resolve(Number(match[1]));
    });
    void exited.then((code) => reject(new Error(`daemon exited (${code}) before listening: ${stderr}`)));
  });
  return {
    port,
    dataDir,
    process: child,
    stderr: () => stderr,
    client: () => TaskManagerClient.connect({ port }),
    raw: () => RawConnection.open(port),
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      // The crash is over once its executor processes have noticed and left their start ledger.
      const executors = childrenOf(child.pid!);
      child.kill('SIGKILL');
      await exited;
      await eventually(() => executors.every(isGone));
    },
    exited,
  };
}

/**
 * Starts `serve` on a data dir where it is expected to refuse to start, and
 * resolves with how it exited. A daemon that starts listening after all is
 * killed and reported as `started`.
 */
export function serveExpectingRefusal(
  dataDir: string,
  args: string[] = [],
  options: ServeOptions = {},
): Promise<{ code: number | null; started: boolean; stderr: string }> {
  const child = spawnServe(dataDir, args, options);
  let stderr = '';
  let started = false;
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout!.on('data', (chunk: Buffer) => {
    if (!started && chunk.toString().includes(' listening on ')) {
      started = true;
      child.kill('SIGKILL');
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, started, stderr });
    }),
  );
}

/** A plain socket speaking lines, for tests of the wire format itself. */
export class RawConnection {
  private buffer = '';
  private readonly queue: unknown[] = [];
  private readonly waiters: ((message: unknown) => void)[] = [];
  closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let newline = this.buffer.indexOf('\n'); newline >= 0; newline = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, newline);
        this.buffer = this.buffer.slice(newline + 1);
        const message: unknown = JSON.parse(line);
        const waiter = this.waiters.shift();
        if (waiter) waiter(message);
        else this.queue.push(message);
      }
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host: '127.0.0.1' }, () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** The next message from the daemon. */
  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  next(): Promise<any> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** The next n messages, in arrival order. */
  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  async take(n: number): Promise<any[]> {
    const messages = [];
    for (let i = 0; i < n; i++) messages.push(await this.next());
    return messages;
  }

  close(): void {
    this.socket.destroy();
  }
}

const LOG_NAME = /^log\.(\d+)\.ndjson$/;

/** Generations of the logs in a data dir, oldest first. */
export const logGenerations = (dataDir: string): number[] =>
  readdirSync(dataDir)
    .flatMap((name) => LOG_NAME.exec(name)?.[1] ?? [])
    .map(Number)
    .sort((a, b) => a - b);

/** The snapshot of a data dir: its header's generation, and its tasks. */
export function snapshotOf(dataDir: string): { generation: number; tasks: StoredTask[] } {
  const [header, ...tasks] = readFileSync(join(dataDir, 'snapshot.ndjson'), 'utf8').trimEnd().split('\n').map((text) => JSON.parse(text));
  return { generation: header.generation, tasks };
}

/**
 * Waits until the snapshot that a start writes in the background is in
 * place, and the files it holds are gone: one log, the one it names.
 */
export async function snapshotSettled(dataDir: string, timeoutMs?: number): Promise<void> {
  await eventually(() => {
    const logs = logGenerations(dataDir);
    const names = readdirSync(dataDir);
    return logs.length === 1 && names.includes('snapshot.ndjson') && !names.includes('snapshot.json') && snapshotOf(dataDir).generation === logs[0];
  }, timeoutMs);
}

export function removeDir(dir: string): void {
  // Retried: an executor process of a daemon just killed may still be leaving its start ledger there.
  rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
}

/**
 * Polls `check` until it returns (or resolves with) a value other than
 * undefined/false: for effects outside any event, like a process dying, or
 * a state only a query tells.
 */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The pids whose parent is `pid`. */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync('/proc')) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(name));
    } catch {
      // not a process, or gone
    }
  }
  return children;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Dead, or a zombie nobody has reaped yet (it runs no more code either). */
export function isGone(pid: number): boolean {
  if (!isAlive(pid)) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

export const readPid = (file: string): number | undefined => {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8'));
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
};

/** Every `task` event of a subscription, with a way to wait for one that matches. */
export class EventLog {
  readonly events: TaskRecord[] = [];
  private waiters: { match: (task: TaskRecord) => boolean; resolve: (task: TaskRecord) => void }[] = [];

  private constructor(readonly client: TaskManagerClient) {
    client.on('task', (task) => {
      this.events.push(task);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.match(task)) return true;
        waiter.resolve(task);
        return false;
      });
    });
  }

  static async open(daemon: TestDaemon, ids?: string[]): Promise<EventLog> {
    const client = await daemon.client();
    const log = new EventLog(client);
    await client.subscribe(ids);
    return log;
  }

  /** The first event (already seen or still to come) that matches. */
  next(match: (task: TaskRecord) => boolean, what: string, timeoutMs = 20_000): Promise<TaskRecord> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no event ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (task) => {
          clearTimeout(timer);
          resolve(task);
        },
      });
    });
  }

  state(id: string, state: TaskState): Promise<TaskRecord> {
    return this.next((task) => task.id === id && task.state === state, `${id} ${state}`);
  }

  statesOf(id: string): TaskState[] {
    return this.events.filter((task) => task.id === id).map((task) => task.state);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/**
 * The daemon's tasks as JSON text, listed once a run of this client's own has finished, so that
 * anything another connection sent before has been registered by then. Closes the client.
 */
export async function tasksAfterARun(client: TaskManagerClient): Promise<string> {
  await client.run({ cmd: [CMD, '--stdout', 'later'] });
  const { tasks } = await client.list({ limit: 10_000 });
  await client.close();
  return JSON.stringify(tasks);
}

/** Rejects when the promise does not settle in time, so a missing answer fails one test instead of hanging the file. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
