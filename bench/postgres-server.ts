import { execFile, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { appendFile, chown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgresClient from 'pg';

const run = promisify(execFile);

export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:PORT/postgres`: user postgres, trusted, no password */
  url: string;
  port: number;
  /** the temp dir holding the cluster (`data/`), its log and its unix socket */
  dir: string;
  /** makes an empty database; its URL */
  createDatabase(name: string): Promise<string>;
  /** a fast shutdown, then the temp dir is removed; also after kill() */
  stop(): Promise<void>;
  /** a fast shutdown and a start on the same port and data; after kill() it only starts */
  restart(): Promise<void>;
  /** an immediate shutdown, as a crash: the data stays, restart() recovers it */
  kill(): Promise<void>;
}

const PG_ROOT = '/usr/lib/postgresql';
const NEEDED = ['initdb', 'pg_ctl', 'postgres'];

/** The bin dir of the newest Debian PostgreSQL server that has all of NEEDED. */
async function serverBinDir(): Promise<string> {
  const versions = existsSync(PG_ROOT) ? await readdir(PG_ROOT) : [];
  const complete = versions
    .filter((version) => NEEDED.every((name) => existsSync(join(PG_ROOT, version, 'bin', name))))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  if (complete[0] === undefined) {
    throw new Error(`no PostgreSQL server: no ${PG_ROOT}/*/bin with ${NEEDED.join(', ')} (Debian: apt-get install postgresql)`);
  }
  return join(PG_ROOT, complete[0], 'bin');
}

/** A port free now: the kernel picks it for a listener on port 0, closed at once for the server to take. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** uid and gid of a system user, or undefined if there is none. */
async function systemUser(name: string): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const { stdout } = await run('getent', ['passwd', name]);
    const [, , uid, gid] = stdout.split(':');
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

/** Servers not yet stopped: ended if the test process exits without stopping them, not to outlive it. */
const live = new Set<() => void>();
process.on('exit', () => {
  for (const end of live) end();
});

/**
 * Starts a fresh PostgreSQL cluster in a temp dir, on 127.0.0.1 and an
 * ephemeral port, from Debian's server binaries. For the tests, durable
 * except for fsync (commits wait for WAL as usual; nothing waits for the
 * disk), for speed; `durable` for the bench, which compares it with the
 * embedded journal's fsync.
 */
export async function startPostgres(options: { durable?: boolean } = {}): Promise<PostgresServer> {
  const bin = await serverBinDir();
  // PostgreSQL refuses to run as root: as root (tests here and in CI), its programs run as the postgres user, who owns the dir.
  let owner: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    owner = (await systemUser('postgres')) ?? (await systemUser('nobody'));
    if (!owner) throw new Error('running as root, and neither a postgres nor a nobody user to run PostgreSQL as');
  }
  const dir = await mkdtemp(join(tmpdir(), 'tm-pg-'));
  if (owner) await chown(dir, owner.uid, owner.gid);
  const data = join(dir, 'data');
  const log = join(dir, 'postgres.log');
  const pg = async (program: string, args: string[]): Promise<void> => {
    try {
      // cwd: the dir, which that user can read, unlike perhaps the test's own
      await run(join(bin, program), args, { cwd: dir, ...owner });
    } catch (error) {
      const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
      const logTail = (await readFile(log, 'utf8').catch(() => '')).trimEnd().split('\n').slice(-20).join('\n');
      throw new Error(`${program} ${args.join(' ')} failed: ${`${stdout}${stderr}`.trim()}\n--- ${log} (tail):\n${logTail}`);
    }
  };
  const pgCtl = (...args: string[]): Promise<void> => pg('pg_ctl', ['-D', data, '-t', '60', ...args]);

  // Synchronous, for the exit handler too: an immediate stop if it runs, and the dir removed.
  const endNow = (): void => {
    spawnSync(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop'], { cwd: dir, stdio: 'ignore', ...owner });
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(endNow);
  // -l for start and restart alike: else the server's output holds pg_ctl's pipe open, and the call never returns.
  const start = (): Promise<void> => pgCtl('-w', '-l', log, 'start');
  let port: number;
  try {
    await pg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C']);
    port = await freePort();
    // In the config rather than pg_ctl -o: a restart, even after kill(), comes back with the same settings and port.
    await appendFile(
      join(data, 'postgresql.conf'),
      [
        "listen_addresses = '127.0.0.1'",
        `port = ${port}`,
        `unix_socket_directories = '${dir}'`,
        ...(options.durable ? [] : ['fsync = off', 'full_page_writes = off']),
        'max_connections = 200',
        '',
      ].join('\n'),
    );
    await start();
  } catch (error) {
    live.delete(endNow);
    endNow();
    throw error;
  }
  let running = true;

  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    dir,
    createDatabase: async (name) => {
      const client = new postgresClient.Client({ connectionString: url });
      client.on('error', () => undefined); // the query's rejection reports it
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name}"`);
      } finally {
        await client.end();
      }
      return url.replace(/\/postgres$/, `/${name}`);
    },
    stop: async () => {
      if (running) await pgCtl('-w', '-m', 'fast', 'stop');
      running = false;
      live.delete(endNow);
      await rm(dir, { recursive: true, force: true });
    },
    restart: async () => {
      await (running ? pgCtl('-w', '-m', 'fast', '-l', log, 'restart') : start());
      running = true;
    },
    kill: async () => {
      await pgCtl('-w', '-m', 'immediate', 'stop');
      running = false;
    },
  };
}
