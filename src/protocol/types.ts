import type { RequestErrorCode, TaskErrorCode } from './errors.js';
import type { Op } from './schema.js';

export const TASK_STATES = ['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'] as const;
export type TaskState = (typeof TASK_STATES)[number];

const TERMINAL: ReadonlySet<TaskState> = new Set(['COMPLETED', 'FAILED', 'CANCELED']);
export const isTerminal = (state: TaskState): boolean => TERMINAL.has(state);

export const SCRIPT_LANGS = ['sh', 'bash', 'python', 'node', 'bin'] as const;
export type ScriptLang = (typeof SCRIPT_LANGS)[number];

export type Script = { lang: ScriptLang; source: string } | { lang: ScriptLang; source_b64: string };

export interface TaskError {
  code: TaskErrorCode;
  message: string;
}

/** The `task` payload. Output fields are left out of `list` and `subscribe`. */
export interface TaskRecord {
  id: string;
  state: TaskState;
  cmd: string | string[] | null;
  script?: { lang: ScriptLang };
  args?: string[];
  /** the group whose concurrency limit it counts against */
  group: string;
  priority: number;
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  stdout?: string;
  stderr?: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  duration_ms: number | null;
  attempts: number;
  max_attempts: number;
  created_at: string;
  /** when a PENDING task becomes ready by time (start_at, delay_ms or a retry back-off) */
  run_at?: string;
  started_at?: string;
  finished_at?: string;
  /** in a cluster: the daemon that runs it, or ran its last attempt */
  node?: string;
  depends_on: string[];
  /** how often it was restarted (`restart`) */
  restarts: number;
  /** attempts cut short by a daemon stop or crash (they do not use up retries) */
  interrupted?: number;
  /** the output was dropped to keep retained output within --keep-output-bytes */
  output_dropped?: true;
  error: TaskError | null;
}

export type Ref = string | number;

export type Counts = Record<TaskState, number>;

export interface Stats {
  cpu: { cores: number; load_avg: [number, number, number]; use_percent: number };
  memory: { total_bytes: number; free_bytes: number; daemon_rss_bytes: number };
  disk: { path: string; total_bytes: number; free_bytes: number };
  counts: Counts;
  /** limit: what all groups together may run at once */
  concurrency: { limit: number; running: number };
  /** one entry per GPU that nvidia-smi reports; [] without it */
  gpu: GpuStats[];
  uptime_ms: number;
  /** with a shared store: every daemon of the cluster */
  nodes?: NodeInfo[];
}

/** A daemon of a cluster, as `stats` shows it. */
export interface NodeInfo {
  name: string;
  /** where it listens */
  address: string;
  started_at: string;
  last_seen: string;
  running: number;
  concurrency: number;
}

export interface GpuStats {
  index: number;
  name: string;
  /** null when the GPU does not report it */
  utilization_percent: number | null;
  memory_used_bytes: number | null;
  memory_total_bytes: number | null;
}

/** One group, as `groups`, `pause`, `resume` and `set_group` show it. */
export interface GroupInfo {
  name: string;
  concurrency: number;
  running: number;
  queued: number;
  paused: boolean;
}

/** Payload of a successful response to each op: with `Request` (schema.ts), the typed map of the protocol. */
export interface ResponsePayloads {
  run: { task: TaskRecord; duplicate?: true };
  submit: { task: TaskRecord; duplicate?: true };
  status: { task: TaskRecord };
  wait: { task: TaskRecord; waited_out?: true };
  list: { tasks: TaskRecord[]; total: number };
  cancel: { task: TaskRecord };
  /** sent once the task is terminal, after its output events; the record leaves the output out */
  follow: { task: TaskRecord };
  /** the task's last record, with its output; the task is forgotten */
  remove: { task: TaskRecord };
  restart: { task: TaskRecord };
  edit: { task: TaskRecord };
  /** with a group: that group; without: every group */
  pause: { group: GroupInfo } | { groups: GroupInfo[] };
  resume: { group: GroupInfo } | { groups: GroupInfo[] };
  groups: { groups: GroupInfo[] };
  set_group: { group: GroupInfo };
  count: { counts: Counts; tasks: number };
  health: { version: string; uptime_ms: number };
  stats: Stats;
  subscribe: Record<string, never>;
  auth: Record<string, never>;
}

type AnySuccess = { [O in Op]: { ok: true; ref?: Ref; op: O } & ResponsePayloads[O] }[Op];

/** The answer to a request of op O that succeeded. */
export type SuccessResponse<O extends Op = Op> = Extract<AnySuccess, { op: O }>;

export interface ErrorResponse {
  ok: false;
  ref?: Ref;
  error: { code: RequestErrorCode; message: string };
}

export type Response = SuccessResponse | ErrorResponse;

/** A line of the `subscribe` stream after its first response. */
export interface TaskEvent {
  event: 'task';
  task: TaskRecord;
}

/** A line of a `follow` stream before its answer: output as the task wrote it. */
export interface OutputEvent {
  event: 'output';
  ref?: Ref;
  id: string;
  stream: 'stdout' | 'stderr';
  data: string;
}

/** Sent on a subscription when events had to be dropped for a slow reader. */
export interface DroppedEvent {
  event: 'dropped';
  count: number;
}

/** Any line a server sends. */
export type ServerMessage = Response | TaskEvent | OutputEvent | DroppedEvent;
