import type { Durability } from '../journal/index.js';
import { DEFAULT_HOST, DEFAULT_PORT } from '../protocol/index.js';

export interface DaemonConfig {
  host: string;
  /** 0 picks a free port */
  port: number;
  concurrency: number;
  dataDir: string;
  durability: Durability;
  /** finished tasks kept before the oldest are dropped */
  keepFinished: number;
  /** output files of finished tasks kept (bytes on disk) before the oldest outputs are dropped */
  keepOutputBytes: number;
  /** tasks not yet finished that the daemon holds at once */
  maxQueue: number;
  /** what the specs of unfinished and retained tasks may hold together (the oldest finished are dropped first) */
  maxSpecBytes: number;
  maxLineBytes: number;
  maxConnections: number;
  /** on stop, how long running tasks get before their groups are killed */
  shutdownGraceMs: number;
  /** between SIGTERM and SIGKILL when a task times out or is canceled */
  killGraceMs: number;
  /** when set, a connection must `auth` with it first */
  token?: string;
  /** with a token: how long a connection may stay without authenticating */
  authTimeoutMs: number;
  /** origins (`scheme://host:port`) of other sites whose pages may call the HTTP API: CORS for them alone */
  allowOrigins: string[];
  /** the journal log is compacted once it is larger than this */
  compactAfterBytes: number;
  /** a PostgreSQL URL: the daemon joins the cluster of daemons sharing it, instead of keeping an embedded journal */
  store?: string;
  /** its name in the cluster (default `<hostname>:<port>`) */
  node?: string;
  /** in a cluster: how long a daemon that stops renewing its lease keeps its running tasks */
  leaseMs: number;
  log: (line: string) => void;
}

export const DEFAULT_CONFIG: DaemonConfig = {
  host: DEFAULT_HOST,
  port: DEFAULT_PORT,
  concurrency: 10,
  dataDir: '.task-manager',
  durability: 'fsync',
  keepFinished: 10_000,
  keepOutputBytes: 1024 * 1024 * 1024,
  maxQueue: 100_000,
  // Specs live in memory and in every snapshot: this keeps a restart within seconds and the
  // daemon's memory within a few hundred MB, and still holds 128 specs as large as a default request line.
  maxSpecBytes: 128 * 1024 * 1024,
  maxLineBytes: 1024 * 1024,
  maxConnections: 1024,
  shutdownGraceMs: 10_000,
  killGraceMs: 2_000,
  authTimeoutMs: 10_000,
  allowOrigins: [],
  compactAfterBytes: 64 * 1024 * 1024,
  leaseMs: 30_000,
  log: (line) => console.error(line),
};

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}
