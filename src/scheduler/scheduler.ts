import { EventEmitter } from 'node:events';
import { RequestError, TASK_STATES, isTerminal, specKey } from '../protocol/index.js';
import type { Counts, TaskRecord, TaskSpec, TaskState } from '../protocol/index.js';
import { startFailure, type AttemptResult } from '../executor/index.js';
import { Heap } from './heap.js';
import { TimerQueue } from './timer-queue.js';
import { Task, errorOf, newStoredTask, specSize, startId, type StoredTask, type TaskPatch } from './task.js';

/** Where the scheduler writes every change; reports go out only after `flushed()`. */
export interface TaskJournal {
  put(id: string, patch: TaskPatch): void;
  drop(id: string): void;
  flushed(): Promise<void>;
}

/** Runs one attempt; resolves with undefined when it was aborted before its process started. */
export type AttemptRunner = (
  task: { id: string; attempt: number; spec: TaskSpec; startId: string; alone: boolean },
  signal: AbortSignal,
  onSpawn: (pid: number) => void,
) => Promise<AttemptResult | undefined>;

export interface SchedulerOptions {
  concurrency: number;
  runAttempt: AttemptRunner;
  journal: TaskJournal;
  /** finished tasks kept before the oldest are dropped */
  keepFinished: number;
  /** output (stdout + stderr, in characters) of finished tasks kept before the oldest outputs are dropped */
  keepOutputBytes: number;
  /** tasks not yet finished that may exist at once */
  maxQueue: number;
  /** what the specs of unfinished and retained tasks may hold together (`specSize`); the oldest finished go first */
  maxSpecBytes: number;
  /** the process start time of a pid, to recognise it after a restart */
  processStartTime?: (pid: number) => string | undefined;
}

export interface SchedulerEvents {
  change: [Task];
}

const MAX_BACKOFF_MS = 24 * 3600 * 1000;
/**
 * Executor processes lost in a row during one task's attempts before the
 * attempt counts as failed: a task that kills its parent would otherwise be
 * run again, and take its neighbours down with it, forever. After the first
 * loss a task runs on an executor process of its own, so the later losses
 * are its own doing, and its neighbours were lost only once.
 */
const MAX_EXECUTOR_LOSSES = 3;
/** Signals that a stop of the whole service sends every process (systemd's KillMode=control-group). */
const STOP_SIGNALS = new Set(['SIGTERM', 'SIGINT', 'SIGHUP']);
/** How a program that handles those signals usually exits: 128 + the signal's number. */
const STOP_EXIT_CODES = new Set([128 + 15, 128 + 2, 128 + 1]);
const emptyCounts = (): Counts => Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Counts;

/**
 * Task states, the ready queue, dependencies, timers and retries. Every
 * state change is written to the journal the moment it happens in memory;
 * a process is started only after the journal has flushed its task.
 */
export class Scheduler extends EventEmitter<SchedulerEvents> {
  private readonly tasks = new Map<string, Task>();
  /** finished task ids, oldest first, for retention */
  private readonly finishedIds = new Set<string>();
  /** finished tasks that still hold their output, oldest first, with its size, and the total */
  private readonly withOutput = new Map<string, number>();
  private outputBytes = 0;
  /** what the specs of all tasks hold, and of the finished ones among them */
  private specBytes = 0;
  private finishedSpecBytes = 0;
  private readonly ready = new Heap<Task>((a, b) =>
    a.spec.priority !== b.spec.priority ? a.spec.priority > b.spec.priority : a.stored.seq < b.stored.seq,
  );
  private readonly timers = new TimerQueue<Task>((task) => this.timeReached(task));
  private readonly counts = emptyCounts();
  private readonly attempts = new Set<Promise<void>>();
  private seq = 0;
  private running = 0;
  private stopping = false;
  /** holds dispatch back until all restored tasks are in the ready queue */
  private restoring = false;
  private pumpScheduled = false;
  /** entries of finished tasks still in the ready queue or the timers (removed lazily) */
  private staleEntries = 0;

  constructor(private readonly options: SchedulerOptions) {
    super();
  }

  get concurrency(): { limit: number; running: number } {
    return { limit: this.options.concurrency, running: this.running };
  }

  countByState(): { counts: Counts; tasks: number } {
    const counts = { ...this.counts };
    return { counts, tasks: counts.PENDING + counts.QUEUED + counts.RUNNING };
  }

  get(id: string): Task {
    const task = this.tasks.get(id);
    if (!task) throw new RequestError('NOT_FOUND', `id "${id}" names no task`);
    return task;
  }

  /**
   * Registers a task (synchronously, so requests are registered in the order
   * they are read). Resubmitting an id with the same spec returns the
   * existing task as a duplicate.
   */
  submit(spec: TaskSpec, id?: string): { task: Task; duplicate: boolean } {
    if (this.stopping) throw new RequestError('SHUTTING_DOWN', 'the daemon is stopping and accepts no new tasks');
    if (id !== undefined) {
      const existing = this.tasks.get(id);
      if (existing) {
        if (specKey(existing.spec) === specKey(spec)) return { task: existing, duplicate: true };
        throw new RequestError('ID_CONFLICT', `id "${id}" is already used by a task with a different spec`);
      }
    }
    const dependencies = spec.depends_on.map((dep) => {
      const found = this.tasks.get(dep);
      if (!found) throw new RequestError('UNKNOWN_DEPENDENCY', `depends_on names "${dep}", which is not a known task`);
      return found;
    });
    const unfinished = this.counts.PENDING + this.counts.QUEUED + this.counts.RUNNING;
    if (unfinished >= this.options.maxQueue) {
      throw new RequestError('QUEUE_FULL', `${unfinished} tasks are not yet finished, the most this daemon holds (--max-queue)`);
    }
    const specBytes = specSize(spec);
    this.makeRoomForSpec(specBytes);
    const now = Date.now();
    const task = new Task(newStoredTask(id ?? this.newId(), ++this.seq, spec, now, specBytes));
    this.tasks.set(task.id, task);
    this.specBytes += specBytes;
    const failed = this.linkDependencies(task, dependencies);
    if (!failed && task.unmet === 0 && task.stored.ready_at === undefined) task.stored.state = 'QUEUED';
    this.counts[task.state]++;
    this.options.journal.put(task.id, task.stored);
    this.emit('change', task);
    if (failed) {
      this.finish(task, 'CANCELED', { error: dependencyFailed(failed) });
    } else {
      this.becomeReadyIfDue(task);
    }
    return { task, duplicate: false };
  }

  /**
   * Rebuilds the state read from the journal. Tasks that were RUNNING (their
   * processes already made sure dead) are queued again without losing a
   * retry; `started` tells whether that attempt's process really started,
   * which the record then counts as an interruption.
   */
  restore(stored: StoredTask[], started: (task: StoredTask) => boolean): void {
    this.restoring = true;
    // The journal keeps tasks in submission order: sorting is for a journal that was edited by hand.
    const ordered = stored.every((record, i) => i === 0 || stored[i - 1]!.seq < record.seq) ? stored : [...stored].sort((a, b) => a.seq - b.seq);
    const tasks = ordered.map((record) => new Task(record));
    const finished: Task[] = [];
    for (const task of tasks) {
      this.tasks.set(task.id, task);
      this.counts[task.state]++;
      this.specBytes += task.specBytes;
      if (isTerminal(task.state)) finished.push(task);
    }
    this.seq = Math.max(this.seq, ordered.at(-1)?.seq ?? 0);
    // Oldest first, as retention drops them. ISO times of one format sort as their text does.
    const finishedAt = (task: Task) => task.stored.finished_at ?? '';
    finished.sort((a, b) => (finishedAt(a) < finishedAt(b) ? -1 : finishedAt(a) > finishedAt(b) ? 1 : 0));
    for (const task of finished) this.retain(task);
    for (const task of tasks) {
      if (isTerminal(task.state)) continue; // finished, or dropped by retention
      if (task.state === 'RUNNING' && started(task.stored)) this.interrupted(task, { pgid: undefined, pgid_started: undefined });
      else if (task.state === 'RUNNING') this.notStarted(task);
      // A dependency missing from the journal was dropped by retention after it COMPLETED:
      // had it failed, this task would have been canceled with it.
      const dependencies: Task[] = [];
      for (const dep of task.spec.depends_on) {
        const found = this.tasks.get(dep);
        if (found) dependencies.push(found);
      }
      const failed = this.linkDependencies(task, dependencies);
      if (failed) {
        this.finish(task, 'CANCELED', { error: dependencyFailed(failed) });
      } else {
        if (task.unmet > 0 && task.state === 'QUEUED') this.update(task, 'PENDING', {});
        this.becomeReadyIfDue(task);
      }
    }
    this.restoring = false;
    this.pump();
  }

  /** Every task as stored, for a journal snapshot. */
  snapshot(): StoredTask[] {
    return Array.from(this.tasks.values(), (task) => task.stored);
  }

  /**
   * Resolves with the task once it is terminal, or with `waitedOut` after
   * timeoutMs or once `signal` aborts (whoever asked has gone). Nothing of
   * the wait is left behind on the task either way.
   */
  wait(task: Task, timeoutMs?: number, signal?: AbortSignal): Promise<{ task: Task; waitedOut: boolean }> {
    if (isTerminal(task.state)) return Promise.resolve({ task, waitedOut: false });
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (waitedOut: boolean) => {
        stopWaiting();
        clearTimeout(timer);
        signal?.removeEventListener('abort', gone);
        resolve({ task, waitedOut });
      };
      const gone = () => done(true);
      const stopWaiting = task.onSettled(() => done(false));
      if (timeoutMs !== undefined) timer = setTimeout(done, timeoutMs, true);
      signal?.addEventListener('abort', gone, { once: true });
    });
  }

  /** Cancels a task; a running one is killed with its process group first. */
  async cancel(task: Task): Promise<Task> {
    if (isTerminal(task.state)) {
      throw new RequestError('NOT_CANCELABLE', `task "${task.id}" is already ${task.state} and cannot be canceled`);
    }
    if (task.state === 'RUNNING') {
      task.cancelRequested = true;
      task.abort?.abort();
      await this.wait(task);
    } else {
      this.finish(task, 'CANCELED', { error: errorOf('CANCELED', 'canceled before it started') });
    }
    return task;
  }

  list(filter: { state?: TaskState; limit?: number; after?: string }): { tasks: TaskRecord[]; total: number } {
    const limit = filter.limit ?? 100;
    if (filter.after !== undefined) this.get(filter.after);
    const tasks: TaskRecord[] = [];
    let total = 0;
    let passedAfter = filter.after === undefined;
    for (const task of this.tasks.values()) {
      if (!passedAfter) {
        passedAfter = task.id === filter.after;
        continue;
      }
      if (filter.state !== undefined && task.state !== filter.state) continue;
      total++;
      if (tasks.length < limit) tasks.push(task.record(false));
    }
    return { tasks, total };
  }

  /** Stops starting tasks; running ones get `graceMs` to finish, then are killed to run again after a restart. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.timers.clear();
    const all = Promise.all(this.attempts);
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      this.endGrace = resolve;
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([all, grace]);
    clearTimeout(timer);
    for (const task of this.tasks.values()) {
      if (task.state !== 'RUNNING') continue;
      task.stopRequested = true;
      task.abort?.abort();
    }
    await all;
    await this.options.journal.flushed().catch(() => undefined); // a failed journal is the daemon's to report
  }

  /** Ends the grace period of a stop now: running tasks are killed, to run again after a restart. */
  endGrace: () => void = () => undefined;

  private newId(): string {
    let id: string;
    do id = `t-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    while (this.tasks.has(id));
    return id;
  }

  /** Counts unmet dependencies; returns a dependency that already failed, if any. */
  private linkDependencies(task: Task, dependencies: Task[]): Task | undefined {
    for (const dep of dependencies) {
      if (dep.state === 'COMPLETED') continue;
      if (isTerminal(dep.state)) return dep;
      task.unmet++;
      dep.dependents.add(task);
    }
    return undefined;
  }

  private becomeReadyIfDue(task: Task): void {
    if (task.unmet > 0 || (task.state !== 'PENDING' && task.state !== 'QUEUED')) return;
    const readyAt = task.stored.ready_at;
    if (readyAt !== undefined && readyAt > Date.now()) {
      this.timers.add(readyAt, task);
      return;
    }
    if (task.state === 'PENDING') this.update(task, 'QUEUED', { ready_at: undefined });
    this.ready.push(task);
    this.pump();
  }

  private timeReached(task: Task): void {
    if (task.state === 'PENDING' && task.stored.ready_at !== undefined && task.stored.ready_at <= Date.now()) {
      this.becomeReadyIfDue(task);
    }
  }

  /**
   * Fills free slots soon, not at once: the requests of one read are all
   * registered before any starts (so priorities among them count), and a
   * submit is answered with the state it was accepted in.
   */
  private pump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.fillSlots();
    });
  }

  /** Starts ready tasks while slots are free, highest priority first. */
  private fillSlots(): void {
    while (!this.stopping && !this.restoring && this.running < this.options.concurrency && this.ready.size > 0) {
      const task = this.ready.pop()!;
      if (task.state !== 'QUEUED') continue; // canceled while queued
      const attempt = this.start(task).finally(() => this.attempts.delete(attempt));
      this.attempts.add(attempt);
    }
  }

  private async start(task: Task): Promise<void> {
    this.running++;
    const abort = new AbortController();
    task.abort = abort;
    const attempt = task.stored.attempts + 1;
    this.update(task, 'RUNNING', { attempts: attempt, started_at: new Date().toISOString() });
    let result: AttemptResult | undefined;
    try {
      // The task and its RUNNING state are on disk before its process starts: after a crash, the
      // record never shows fewer starts than really happened. For a task that starts as soon as
      // it is submitted, both lines share one flush.
      const durable = await this.options.journal.flushed().then(
        () => true,
        () => false,
      );
      if (durable && !abort.signal.aborted) {
        result = await this.options.runAttempt({ id: task.id, attempt, spec: task.spec, startId: startId(task.stored), alone: task.executorLosses > 0 }, abort.signal, (pid) => {
          const started = this.options.processStartTime?.(pid);
          this.options.journal.put(task.id, started ? { pgid: pid, pgid_started: started } : { pgid: pid });
        });
      }
    } catch (error) {
      result = startFailure(`the attempt could not be run: ${(error as Error).message}`);
    } finally {
      this.running--;
      task.abort = undefined;
    }
    this.attemptEnded(task, result);
    this.pump();
  }

  /** Decides what follows an attempt; `result` is absent when its process never started. */
  private attemptEnded(task: Task, result: AttemptResult | undefined): void {
    if (result?.error?.code !== 'INTERRUPTED') {
      task.executorLosses = 0;
    } else if (++task.executorLosses >= MAX_EXECUTOR_LOSSES) {
      const message = `killed with its executor process, which ended during ${task.executorLosses} attempts in a row (does the task kill its parent process?)`;
      result.error = errorOf('KILLED', message);
    }
    const outcome: TaskPatch = { ...result, pgid: undefined, pgid_started: undefined };
    if (task.cancelRequested && !result) {
      this.finish(task, 'CANCELED', { attempts: task.stored.attempts - 1, started_at: undefined, error: errorOf('CANCELED', 'canceled before it started') });
    } else if (task.cancelRequested) {
      this.finish(task, 'CANCELED', { ...outcome, error: errorOf('CANCELED', 'canceled while running') });
    } else if (!result) {
      this.notStarted(task);
    } else if (result.error === null) {
      this.finish(task, 'COMPLETED', outcome);
    } else if (this.wasInterrupted(task, result)) {
      this.interrupted(task, outcome, result.error.code === 'INTERRUPTED' ? result.error.message : undefined);
    } else if (task.stored.attempts < task.stored.max_attempts) {
      const backoff = Math.min(task.spec.retry_delay_ms * 2 ** (task.stored.attempts - 1), MAX_BACKOFF_MS);
      this.update(task, 'PENDING', { ...outcome, ready_at: Date.now() + backoff });
      this.becomeReadyIfDue(task);
    } else {
      this.finish(task, 'FAILED', outcome);
    }
  }

  /**
   * Cut short by something other than the task itself: the daemon's stop,
   * including a stop signal that reached the task's processes too (systemd
   * signals the whole control group), or the loss of its executor process.
   */
  private wasInterrupted(task: Task, result: AttemptResult): boolean {
    if (result.error?.code === 'INTERRUPTED') return true;
    const stopSignal = STOP_SIGNALS.has(result.signal ?? '') || STOP_EXIT_CODES.has(result.exit_code ?? 0);
    return task.stopRequested || (this.stopping && !result.timed_out && stopSignal);
  }

  /** The attempt was called off before its process started: it does not count, and the task waits again. */
  private notStarted(task: Task): void {
    this.requeue(task, { attempts: task.stored.attempts - 1 });
  }

  /** An attempt ended by the daemon's stop, not by the task: it runs again, without using up a retry. */
  private interrupted(task: Task, outcome: TaskPatch, why = 'the daemon stopped during the attempt; it runs again'): void {
    this.requeue(task, {
      ...outcome,
      attempts: task.stored.attempts - 1,
      interrupted: (task.stored.interrupted ?? 0) + 1,
      error: errorOf('INTERRUPTED', why),
    });
  }

  /** Back to QUEUED, and into the ready queue unless the daemon is stopping (or restoring, which queues after). */
  private requeue(task: Task, patch: TaskPatch): void {
    this.update(task, 'QUEUED', patch);
    if (!this.stopping && !this.restoring) {
      this.ready.push(task);
      this.pump();
    }
  }

  /** The one place a task changes: in memory, in the journal, and to listeners. */
  private update(task: Task, state: TaskState, patch: TaskPatch): void {
    if (task.state !== state) {
      this.counts[task.state]--;
      this.counts[state]++;
    }
    const journaled: Record<string, unknown> = { state };
    for (const [key, value] of Object.entries(patch)) {
      // The journal merges patches as JSON, where a cleared field must be an explicit null.
      journaled[key] = value ?? null;
      if (value === undefined) delete task.stored[key as keyof StoredTask];
      else (task.stored as unknown as Record<string, unknown>)[key] = value;
    }
    task.stored.state = state;
    this.options.journal.put(task.id, journaled as TaskPatch);
    this.emit('change', task);
  }

  private finish(task: Task, state: 'COMPLETED' | 'FAILED' | 'CANCELED', patch: TaskPatch): void {
    if (task.state === 'QUEUED' || (task.state === 'PENDING' && task.stored.ready_at !== undefined)) this.dropStaleEntries();
    this.update(task, state, { ...patch, ready_at: undefined, finished_at: new Date().toISOString() });
    task.markSettled();
    const dependents = task.dependents;
    task.dependents = new Set();
    for (const dep of task.spec.depends_on) this.tasks.get(dep)?.dependents.delete(task);
    for (const dependent of dependents) {
      if (isTerminal(dependent.state)) continue;
      if (state === 'COMPLETED') {
        dependent.unmet--;
        this.becomeReadyIfDue(dependent);
      } else {
        this.finish(dependent, 'CANCELED', { error: dependencyFailed(task) });
      }
    }
    this.retain(task);
  }

  /** Canceled waiting tasks stay in the heaps until popped: clear them out once they outnumber the live ones. */
  private dropStaleEntries(): void {
    if (++this.staleEntries < 64 || this.staleEntries < (this.ready.size + this.timers.size) / 2) return;
    const live = (task: Task) => !isTerminal(task.state);
    this.ready.filter(live);
    this.timers.prune(live);
    this.staleEntries = 0;
  }

  /**
   * Makes room for a spec of `bytes` within --max-spec-bytes by dropping the
   * oldest finished tasks, as retention does; refuses, with nothing changed,
   * when the unfinished tasks' specs alone leave no room for it.
   */
  private makeRoomForSpec(bytes: number): void {
    const bound = this.options.maxSpecBytes;
    const unfinished = this.specBytes - this.finishedSpecBytes;
    if (unfinished + bytes > bound) {
      throw new RequestError(
        'QUEUE_FULL',
        `the specs of unfinished tasks hold ${unfinished} bytes, and this one ${bytes} more: that is over ${bound}, the most this daemon holds (--max-spec-bytes)`,
      );
    }
    while (this.specBytes + bytes > bound) this.dropOldestFinished();
  }

  /** Keeps finished tasks, and their output, within the retention bounds: oldest go first. */
  private retain(task: Task): void {
    this.finishedIds.add(task.id);
    this.finishedSpecBytes += task.specBytes;
    const size = outputSize(task);
    if (size > 0) {
      this.withOutput.set(task.id, size);
      this.outputBytes += size;
    }
    while (this.finishedIds.size > this.options.keepFinished) this.dropOldestFinished();
    for (const id of this.withOutput.keys()) {
      if (this.outputBytes <= this.options.keepOutputBytes || id === task.id) break;
      const oldest = this.tasks.get(id)!;
      this.forgetOutput(oldest);
      Object.assign(oldest.stored, { stdout: '', stderr: '', output_dropped: true });
      this.options.journal.put(id, { stdout: '', stderr: '', output_dropped: true });
    }
  }

  /** Forgets the task that finished longest ago, in memory and in the journal. */
  private dropOldestFinished(): void {
    const oldest = this.finishedIds.values().next().value!;
    this.finishedIds.delete(oldest);
    const dropped = this.tasks.get(oldest)!;
    this.forgetOutput(dropped);
    this.tasks.delete(oldest);
    this.counts[dropped.state]--;
    this.specBytes -= dropped.specBytes;
    this.finishedSpecBytes -= dropped.specBytes;
    this.options.journal.drop(oldest);
  }

  private forgetOutput(task: Task): void {
    this.outputBytes -= this.withOutput.get(task.id) ?? 0;
    this.withOutput.delete(task.id);
  }

}

/**
 * Output size as it is written in the journal: escaped JSON, where a control
 * character takes six. That is what the snapshot and memory hold of it.
 */
const outputSize = ({ stored }: Task) =>
  (stored.stdout ? JSON.stringify(stored.stdout).length : 0) + (stored.stderr ? JSON.stringify(stored.stderr).length : 0);

const dependencyFailed = (dependency: Task) => errorOf('DEPENDENCY_FAILED', `dependency "${dependency.id}" ended ${dependency.state}`);
