import type { RequestErrorCode, TaskErrorCode } from './errors.js';

export const TASK_STATES = ['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'] as const;
export type TaskState = (typeof TASK_STATES)[number];

const TERMINAL: ReadonlySet<TaskState> = new Set(['COMPLETED', 'FAILED', 'CANCELED']);
export const isTerminal = (state: TaskState): boolean => TERMINAL.has(state);

export const SCRIPT_LANGS = ['sh', 'bash', 'python', 'node', 'bin'] as const;
export type ScriptLang = (typeof SCRIPT_LANGS)[number];

export type Script = { lang: ScriptLang; source: string } | { lang: ScriptLang; source_b64: string };

/** A task spec as a client may send it (see docs/protocol.md). */
export interface TaskSpecInput {
  cmd?: string | string[];
  command?: string | string[];
  script?: Script;
  args?: string[];
  id?: string;
  timeout_ms?: number;
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  depends_on?: string[];
  start_at?: string | number;
  delay_ms?: number;
  retries?: number;
  retry_delay_ms?: number;
  priority?: number;
  max_output_bytes?: number;
}

/**
 * A validated spec with aliases folded and defaults filled in. Two submits
 * with equal TaskSpecs are the same task (idempotent ids).
 */
export interface TaskSpec {
  cmd?: string | string[];
  script?: Script;
  args?: string[];
  timeout_ms?: number;
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  depends_on: string[];
  /** epoch milliseconds; from start_at, or delay_ms added to the submission time */
  start_at?: number;
  delay_ms?: number;
  retries: number;
  retry_delay_ms: number;
  priority: number;
  max_output_bytes: number;
}

export const SPEC_DEFAULTS = {
  retries: 0,
  retry_delay_ms: 1000,
  priority: 0,
  max_output_bytes: 1024 * 1024,
} as const;

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
  depends_on: string[];
  /** attempts cut short by a daemon stop or crash (they do not use up retries) */
  interrupted?: number;
  /** the output was dropped to keep retained output within --keep-output-bytes */
  output_dropped?: true;
  error: TaskError | null;
}

export type Ref = string | number;

export interface RunRequest extends TaskSpecInput { op: 'run' }
export interface SubmitRequest extends TaskSpecInput { op: 'submit' }
export interface StatusRequest { op: 'status'; id: string }
export interface WaitRequest { op: 'wait'; id: string; timeout_ms?: number }
/** The filter fields may be given as undefined: JSON leaves them out. */
export interface ListRequest { op: 'list'; state?: TaskState | undefined; limit?: number | undefined; after?: string | undefined }
export interface CancelRequest { op: 'cancel'; id: string }
export interface FollowRequest { op: 'follow'; id: string }
export interface CountRequest { op: 'count' }
export interface HealthRequest { op: 'health' }
export interface StatsRequest { op: 'stats' }
export interface SubscribeRequest { op: 'subscribe'; ids?: string[] }
export interface AuthRequest { op: 'auth'; token: string }

export type Request = (
  | RunRequest
  | SubmitRequest
  | StatusRequest
  | WaitRequest
  | ListRequest
  | CancelRequest
  | FollowRequest
  | CountRequest
  | HealthRequest
  | StatsRequest
  | SubscribeRequest
  | AuthRequest
) & { ref?: Ref };

export type Op = Request['op'];

/** A validated request: task specs are normalized, everything else is as sent. */
export type ValidRequest =
  | { op: 'run' | 'submit'; ref?: Ref; id?: string; spec: TaskSpec }
  | (Exclude<Request, RunRequest | SubmitRequest> & { ref?: Ref });

export type Counts = Record<TaskState, number>;

export interface Stats {
  cpu: { cores: number; load_avg: [number, number, number]; use_percent: number };
  memory: { total_bytes: number; free_bytes: number; daemon_rss_bytes: number };
  disk: { path: string; total_bytes: number; free_bytes: number };
  counts: Counts;
  concurrency: { limit: number; running: number };
  uptime_ms: number;
}

/** Payload of a successful response to each op. */
export interface ResponsePayloads {
  run: { task: TaskRecord; duplicate?: true };
  submit: { task: TaskRecord; duplicate?: true };
  status: { task: TaskRecord };
  wait: { task: TaskRecord; waited_out?: true };
  list: { tasks: TaskRecord[]; total: number };
  cancel: { task: TaskRecord };
  /** sent once the task is terminal, after its output events; the record leaves the output out */
  follow: { task: TaskRecord };
  count: { counts: Counts; tasks: number };
  health: { version: string; uptime_ms: number };
  stats: Stats;
  subscribe: Record<string, never>;
  auth: Record<string, never>;
}

export type SuccessResponse<O extends Op = Op> = { ok: true; ref?: Ref; op: O } & ResponsePayloads[O];

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
