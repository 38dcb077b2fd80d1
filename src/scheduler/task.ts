import type { StopRequest } from '../executor/index.js';
import { DEFAULT_GROUP, groupOf, type TaskEdit, type TaskRecord, type TaskSpec } from '../protocol/index.js';

/** What the journal keeps of a task: its wire record (its group is in its spec) plus what the scheduler needs to resume it. */
export interface StoredTask extends Omit<TaskRecord, 'group' | 'restarts'> {
  /** how often it was restarted; absent until it is */
  restarts?: number;
  spec: TaskSpec;
  /** submission order, for first-in first-out within a priority */
  seq: number;
  /** epoch ms before which the task must not start (start time or retry back-off) */
  ready_at?: number;
  /** process group of the running attempt, and its start time (to tell a reused pid apart) */
  pgid?: number;
  pgid_started?: string;
  /** attempts cut short by a daemon stop, which do not count against retries */
  interrupted?: number;
  /** names the output files of the current or last attempt (see `outputName`) */
  output?: string;
  /** bytes kept in them, once the attempt has ended (while it runs, the files are still growing) */
  stdout_bytes?: number;
  stderr_bytes?: number;
  /** the spec's size (`specSize`), counted against --max-spec-bytes; absent in journals of earlier versions */
  spec_bytes?: number;
  /** in a cluster: the daemon that runs it, or ran its last attempt */
  node?: string;
  /** in a cluster: executor processes lost in a row during its attempts (the embedded scheduler keeps them in memory) */
  executor_losses?: number;
}

/** The fields a stored task has only at times. */
type OptionalField = { [K in keyof StoredTask]-?: object extends Pick<StoredTask, K> ? K : never }[keyof StoredTask];

/**
 * A change of a stored task, as the scheduler makes it and the journal logs
 * it: each field gets an absolute value, and a field a task has only at
 * times is cleared with null (see `applyPatch`).
 */
export type TaskPatch = { [K in keyof StoredTask]?: K extends OptionalField ? StoredTask[K] | null : StoredTask[K] };

/** A task inside the scheduler: the stored state and the links that are rebuilt at start. */
export class Task {
  private dependentSet: Set<Task> | undefined;
  /** dependencies not yet COMPLETED */
  unmet = 0;
  /** stops the running attempt */
  stop: StopRequest | undefined;
  cancelRequested = false;
  /** executor processes lost in a row during its attempts */
  executorLosses = 0;
  /** the daemon is stopping and killed the running attempt */
  stopRequested = false;
  /** called once when the task reaches a terminal state (made on first use: most tasks are never waited for) */
  private settledCallbacks: Set<() => void> | undefined;

  /** the size of its spec, counted against the bound of what specs may hold */
  specBytes: number;
  /**
   * its submission number (`stored.seq`, which never changes once the task
   * is stored): kept here too, since the ready queue and the indexes compare
   * it all the time, and stored records come in many shapes (fields they
   * have only at times), which makes reading it from them slow
   */
  seq: number;

  constructor(readonly stored: StoredTask) {
    this.specBytes = stored.spec_bytes ?? specSize(stored.spec);
    this.seq = stored.seq;
  }

  /** tasks that wait for this one (the set is made on first use: most tasks have none) */
  get dependents(): Set<Task> {
    this.dependentSet ??= new Set();
    return this.dependentSet;
  }

  /** The tasks that wait for this one, which no longer do: it has finished. */
  takeDependents(): Set<Task> | undefined {
    const tasks = this.dependentSet;
    this.dependentSet = undefined;
    return tasks;
  }

  get id(): string {
    return this.stored.id;
  }

  get spec(): TaskSpec {
    return this.stored.spec;
  }

  get state() {
    return this.stored.state;
  }

  /**
   * The wire record, in the contract's field order. The output is not held
   * here: whoever answers gives what stands for it (text read from the
   * files as the answer is written); without it, stdout/stderr are left out
   * (list, subscribe).
   */
  record(output?: { stdout: unknown; stderr: unknown }): TaskRecord {
    const s = this.stored;
    const record = { id: s.id, state: s.state, cmd: s.cmd } as TaskRecord;
    if (s.script) record.script = s.script;
    if (s.args) record.args = s.args;
    record.group = groupOf(s.spec);
    record.exit_code = s.exit_code;
    record.signal = s.signal;
    record.timed_out = s.timed_out;
    if (output) {
      record.stdout = output.stdout as string;
      record.stderr = output.stderr as string;
    }
    record.stdout_truncated = s.stdout_truncated;
    record.stderr_truncated = s.stderr_truncated;
    record.duration_ms = s.duration_ms;
    record.attempts = s.attempts;
    record.max_attempts = s.max_attempts;
    record.priority = s.priority;
    record.created_at = s.created_at;
    if (s.ready_at !== undefined && s.state === 'PENDING') record.run_at = new Date(s.ready_at).toISOString();
    if (s.started_at) record.started_at = s.started_at;
    if (s.finished_at) record.finished_at = s.finished_at;
    if (s.node) record.node = s.node;
    record.depends_on = s.depends_on;
    record.restarts = s.restarts ?? 0;
    if (s.interrupted) record.interrupted = s.interrupted;
    if (s.output_dropped) record.output_dropped = true;
    record.error = s.error;
    return record;
  }

  /** Calls back once the task is terminal; returns a function that cancels the call. */
  onSettled(callback: () => void): () => void {
    this.settledCallbacks ??= new Set();
    const callbacks = this.settledCallbacks;
    callbacks.add(callback);
    return () => callbacks.delete(callback);
  }

  markSettled(): void {
    const callbacks = this.settledCallbacks;
    this.settledCallbacks = undefined;
    for (const callback of callbacks ?? []) callback();
  }
}

/**
 * The spec and the record's changes after an edit of a task that has not
 * started: a new command replaces the script, a start time the delay.
 */
export function editedSpec(current: TaskSpec, edit: TaskEdit, now: number): { spec: TaskSpec; patch: TaskPatch } {
  const spec: TaskSpec = { ...current };
  const patch: TaskPatch = {};
  if (edit.cmd !== undefined) {
    spec.cmd = edit.cmd;
    delete spec.script;
    delete spec.args;
    Object.assign(patch, { cmd: edit.cmd, script: null, args: null });
  }
  if (edit.priority !== undefined) patch.priority = spec.priority = edit.priority;
  if (edit.group !== undefined) {
    if (edit.group === DEFAULT_GROUP) delete spec.group;
    else spec.group = edit.group;
  }
  if (edit.start_at !== undefined) {
    delete spec.delay_ms;
    spec.start_at = edit.start_at;
    patch.ready_at = edit.start_at > now ? edit.start_at : null;
  }
  return { spec, patch };
}

/** An id for a task submitted without one: its time and a random part, so daemons sharing a store do not collide. */
export const newTaskId = (): string => `t-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/** The size of a spec: the characters of its JSON, as it is journaled. */
export const specSize = (spec: TaskSpec): number => JSON.stringify(spec).length;

/** The result fields of a task that has not run: a new one, or one restarted. */
const NO_RESULT = {
  exit_code: null,
  signal: null,
  timed_out: false,
  stdout_truncated: false,
  stderr_truncated: false,
  duration_ms: null,
  attempts: 0,
  error: null,
} as const;

/** What a restart clears of a finished task: its result, and what its attempts left (null clears a field). */
export const FRESH_RUN: TaskPatch = {
  ...NO_RESULT,
  started_at: null,
  finished_at: null,
  output: null,
  stdout_bytes: null,
  stderr_bytes: null,
  output_dropped: null,
  interrupted: null,
  pgid: null,
  pgid_started: null,
};

/** The record fields a brand-new task starts with; `specBytes` is its `specSize`. */
export function newStoredTask(id: string, seq: number, spec: TaskSpec, now: number, specBytes = specSize(spec)): StoredTask {
  const stored: StoredTask = {
    id,
    state: 'PENDING',
    cmd: spec.cmd ?? null,
    priority: spec.priority,
    ...NO_RESULT,
    max_attempts: spec.retries + 1,
    created_at: new Date(now).toISOString(),
    depends_on: spec.depends_on,
    spec,
    seq,
    spec_bytes: specBytes,
  };
  if (spec.script) stored.script = { lang: spec.script.lang };
  if (spec.args) stored.args = spec.args;
  const readyAt = spec.start_at ?? (spec.delay_ms ? now + spec.delay_ms : undefined);
  if (readyAt !== undefined && readyAt > now) stored.ready_at = readyAt;
  return stored;
}


/**
 * Names one start of a task's process: the attempt number alone is reused
 * when an attempt is interrupted, the count of interruptions tells them apart.
 */
export const startId = (stored: StoredTask): string =>
  `${stored.id} ${stored.attempts} ${stored.interrupted ?? 0}${stored.restarts ? ` r${stored.restarts}` : ''}`;

/**
 * The name of the output files a task may have on disk: none when its last
 * attempt ended with both streams empty and whole, since an attempt leaves
 * no file for a stream it keeps empty. Dropping the many tasks that print
 * nothing then costs no file system call.
 */
export const outputOnDisk = (stored: StoredTask): string | undefined =>
  stored.stdout_bytes === 0 && stored.stderr_bytes === 0 && !stored.stdout_truncated && !stored.stderr_truncated ? undefined : stored.output;

/** Names the output files of one start: unique per start, and the id is read back from the right (ids may hold dots). */
export const outputName = (stored: StoredTask, idReused = false, attempt = stored.attempts): string =>
  // After a restart the attempts count again from 1, and a removed task's id may be used again: the
  // restarts, or the submission number, after a "~" (which no id holds), keep the names apart.
  `${stored.id}${idReused ? `~s${stored.seq}` : ''}${stored.restarts ? `~${stored.restarts}` : ''}.${attempt}.${stored.interrupted ?? 0}`;
