import { EventEmitter } from 'node:events';
import { isTerminal, requestError, specKey, taskError } from '../protocol/index.js';
import type { Counts, TaskSpec, TaskState } from '../protocol/index.js';
import { startFailure, type AttemptResult } from '../executor/index.js';
import { Heap } from './heap.js';
import { attemptOutcome, interrupted, mayBeServiceStop, notStarted } from './outcome.js';
import { Retention, type RetentionBounds } from './retention.js';
import { MemoryTaskStore, type TaskJournal, type TaskStore } from './task-store.js';
import { TimerQueue } from './timer-queue.js';
import { onAbort } from './abort.js';
import { Task, newStoredTask, outputName, specSize, startId, type StoredTask, type TaskPatch } from './task.js';

export type { TaskJournal } from './task-store.js';

/** Runs one attempt; resolves with undefined when it was aborted before its process started. */
export type AttemptRunner = (
  task: { id: string; attempt: number; spec: TaskSpec; startId: string; alone: boolean; output: string },
  signal: AbortSignal,
  /** the process exists: its pid, and its start time (to recognise it after a restart) when known */
  onSpawn: (pid: number, started?: string) => void,
) => Promise<AttemptResult | undefined>;

/**
 * How long the result of an attempt ended by a stop signal waits before it
 * counts as the task's failure. A stop of the whole service (systemd's
 * KillMode=control-group, Ctrl-C) signals the tasks and the daemon at once,
 * and a task may report its end before the daemon has seen its own signal:
 * if the stop begins meanwhile, the attempt was interrupted, not failed.
 */
const STOP_SIGNAL_HOLD_MS = 500;

/** Resolves after `ms`, or at once when `early` aborts. */
function holdBack(ms: number, early: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      early.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    early.addEventListener('abort', done, { once: true });
  });
}

export interface SchedulerOptions extends RetentionBounds {
  concurrency: number;
  runAttempt: AttemptRunner;
  /** where tasks are kept: a MemoryTaskStore writing to this journal when a journal is given */
  store?: TaskStore;
  journal?: TaskJournal;
  /** the output files of an earlier attempt, or of a dropped task, are no longer referred to */
  discardOutput?: (name: string) => void;
  /** tasks not yet finished that may exist at once */
  maxQueue: number;
}

export interface SchedulerEvents {
  change: [Task];
}

/**
 * Task states, the ready queue, dependencies, timers and retries. Every
 * state change is written to the journal the moment it happens in memory;
 * a process is started only after the journal has flushed its task.
 */
export class Scheduler extends EventEmitter<SchedulerEvents> {
  private readonly store: TaskStore;
  private readonly retention: Retention;
  private readonly ready = new Heap<Task>((a, b) =>
    a.spec.priority !== b.spec.priority ? a.spec.priority > b.spec.priority : a.stored.seq < b.stored.seq,
  );
  private readonly timers = new TimerQueue<Task>((task) => this.timeReached(task));
  private readonly attempts = new Set<Promise<void>>();
  private seq = 0;
  private running = 0;
  private stopping = false;
  /** aborted when a stop begins: a result held back as a possible stop signal is judged then */
  private readonly stopBegun = new AbortController();
  /** holds dispatch back until all restored tasks are in the ready queue */
  private restoring = false;
  private pumpScheduled = false;
  /** entries of finished tasks still in the ready queue or the timers (removed lazily) */
  private staleEntries = 0;

  constructor(private readonly options: SchedulerOptions) {
    super();
    const store = options.store ?? (options.journal && new MemoryTaskStore(options.journal));
    if (!store) throw new TypeError('a Scheduler needs a store or a journal');
    this.store = store;
    this.retention = new Retention(store, options, options.discardOutput);
  }

  get concurrency(): { limit: number; running: number } {
    return { limit: this.options.concurrency, running: this.running };
  }

  countByState(): { counts: Counts; tasks: number } {
    const counts = this.store.counts();
    return { counts, tasks: counts.PENDING + counts.QUEUED + counts.RUNNING };
  }

  get(id: string): Task {
    const task = this.store.get(id);
    if (!task) throw requestError.NOT_FOUND(id);
    return task;
  }

  /**
   * Registers a task (synchronously, so requests are registered in the order
   * they are read). Resubmitting an id with the same spec returns the
   * existing task as a duplicate.
   */
  submit(spec: TaskSpec, id?: string): { task: Task; duplicate: boolean } {
    if (this.stopping) throw requestError.SHUTTING_DOWN('new task');
    if (id !== undefined) {
      const existing = this.store.get(id);
      if (existing) {
        if (specKey(existing.spec) === specKey(spec)) return { task: existing, duplicate: true };
        throw requestError.ID_CONFLICT(id);
      }
    }
    const dependencies = spec.depends_on.map((dep) => {
      const found = this.store.get(dep);
      if (!found) throw requestError.UNKNOWN_DEPENDENCY(dep);
      return found;
    });
    const { tasks: unfinished } = this.countByState();
    if (unfinished >= this.options.maxQueue) {
      throw requestError.QUEUE_FULL({ bound: '--max-queue', unfinished });
    }
    const specBytes = specSize(spec);
    this.retention.makeRoomForSpec(specBytes);
    const now = Date.now();
    const task = new Task(newStoredTask(id ?? this.newId(), ++this.seq, spec, now, specBytes));
    const failed = this.linkDependencies(task, dependencies);
    if (!failed && task.unmet === 0 && task.stored.ready_at === undefined) task.stored.state = 'QUEUED';
    this.store.add(task);
    this.retention.kept(task);
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
      this.store.register(task);
      this.retention.kept(task);
      if (isTerminal(task.state)) finished.push(task);
    }
    this.seq = Math.max(this.seq, ordered.at(-1)?.seq ?? 0);
    // Oldest first, as retention drops them. ISO times of one format sort as their text does.
    const finishedAt = (task: Task) => task.stored.finished_at ?? '';
    finished.sort((a, b) => (finishedAt(a) < finishedAt(b) ? -1 : finishedAt(a) > finishedAt(b) ? 1 : 0));
    for (const task of finished) this.retention.finishedNow(task);
    for (const task of tasks) {
      if (isTerminal(task.state)) continue; // finished, or dropped by retention
      if (task.state === 'RUNNING' && started(task.stored)) this.requeue(task, interrupted(task, { pgid: null, pgid_started: null }));
      else if (task.state === 'RUNNING') this.requeue(task, notStarted(task));
      // A dependency missing from the journal was dropped by retention after it COMPLETED:
      // had it failed, this task would have been canceled with it.
      const dependencies: Task[] = [];
      for (const dep of task.spec.depends_on) {
        const found = this.store.get(dep);
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
    return Array.from(this.store.all(), (task) => task.stored);
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
      let forgetSignal: (() => void) | undefined;
      const done = (waitedOut: boolean) => {
        stopWaiting();
        clearTimeout(timer);
        forgetSignal?.();
        resolve({ task, waitedOut });
      };
      const stopWaiting = task.onSettled(() => done(false));
      if (timeoutMs !== undefined) timer = setTimeout(done, timeoutMs, true);
      if (signal) forgetSignal = onAbort(signal, () => done(true));
    });
  }

  /** Cancels a task; a running one is killed with its process group first. */
  async cancel(task: Task): Promise<Task> {
    if (isTerminal(task.state)) {
      throw requestError.NOT_CANCELABLE(task.id, task.state);
    }
    if (task.state === 'RUNNING') {
      task.cancelRequested = true;
      task.abort?.abort();
      await this.wait(task);
    } else {
      this.finish(task, 'CANCELED', { error: taskError.CANCELED('before it started') });
    }
    return task;
  }

  /** A page of tasks in submission order, and how many match after `after` in all, the page included. */
  list(filter: { state?: TaskState | undefined; limit?: number | undefined; after?: string | undefined }): { tasks: Task[]; total: number } {
    // `after` is a position in the order of all tasks, whatever its own state.
    const afterSeq = filter.after === undefined ? undefined : this.get(filter.after).stored.seq;
    return this.store.page(filter.state, afterSeq, filter.limit ?? 100);
  }

  /** Stops starting tasks; running ones get `graceMs` to finish, then are killed to run again after a restart. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.stopBegun.abort();
    this.timers.clear();
    const all = Promise.all(this.attempts);
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      this.endGrace = resolve;
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([all, grace]);
    clearTimeout(timer);
    for (const task of this.store.all()) {
      if (task.state !== 'RUNNING') continue;
      task.stopRequested = true;
      task.abort?.abort();
    }
    await all;
    await this.store.flushed().catch(() => undefined); // a failed journal is the daemon's to report
  }

  /** Ends the grace period of a stop now: running tasks are killed, to run again after a restart. */
  endGrace: () => void = () => undefined;

  private newId(): string {
    let id: string;
    do id = `t-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    while (this.store.get(id));
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
    if (task.state === 'PENDING') this.update(task, 'QUEUED', { ready_at: null });
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
    const earlierOutput = task.stored.output;
    this.update(task, 'RUNNING', {
      attempts: attempt,
      started_at: new Date().toISOString(),
      output: outputName({ ...task.stored, attempts: attempt }),
      stdout_bytes: null,
      stderr_bytes: null,
      stdout_truncated: false,
      stderr_truncated: false,
    });
    // An attempt that never started gives its name to the next: its files are the new attempt's.
    if (earlierOutput && earlierOutput !== task.stored.output) this.options.discardOutput?.(earlierOutput);
    const output = task.stored.output!;
    let result: AttemptResult | undefined;
    try {
      // The task and its RUNNING state are on disk before its process starts: after a crash, the
      // record never shows fewer starts than really happened. For a task that starts as soon as
      // it is submitted, both lines share one flush.
      const durable = await this.store.flushed().then(
        () => true,
        () => false,
      );
      if (durable && !abort.signal.aborted) {
        const alone = task.executorLosses > 0;
        result = await this.options.runAttempt({ id: task.id, attempt, spec: task.spec, startId: startId(task.stored), alone, output }, abort.signal, (pid, started) => {
          this.store.change(task, started ? { pgid: pid, pgid_started: started } : { pgid: pid });
        });
        // Not for a kill of the daemon's own (cancel, timeout): only a signal from outside is in doubt.
        const fromOutside = !abort.signal.aborted && !task.cancelRequested;
        if (fromOutside && !this.stopping && result && mayBeServiceStop(result)) await holdBack(STOP_SIGNAL_HOLD_MS, this.stopBegun.signal);
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

  /** Carries out what the rules say follows an attempt. */
  private attemptEnded(task: Task, result: AttemptResult | undefined): void {
    const outcome = attemptOutcome(task, result, this.stopping, Date.now());
    if (outcome.next === 'finish') {
      this.finish(task, outcome.state, outcome.patch);
    } else if (outcome.next === 'requeue') {
      this.requeue(task, outcome.patch);
    } else {
      this.update(task, 'PENDING', outcome.patch);
      this.becomeReadyIfDue(task);
    }
  }

  /** Back to QUEUED, and into the ready queue unless the daemon is stopping (or restoring, which queues after). */
  private requeue(task: Task, patch: TaskPatch): void {
    this.update(task, 'QUEUED', patch);
    if (!this.stopping && !this.restoring) {
      this.ready.push(task);
      this.pump();
    }
  }

  /** A task changes state: in the store, and to listeners. */
  private update(task: Task, state: TaskState, patch: TaskPatch): void {
    this.store.change(task, { state, ...patch });
    this.emit('change', task);
  }

  private finish(task: Task, state: 'COMPLETED' | 'FAILED' | 'CANCELED', patch: TaskPatch): void {
    if (task.state === 'QUEUED' || (task.state === 'PENDING' && task.stored.ready_at !== undefined)) this.dropStaleEntries();
    this.update(task, state, { ...patch, ready_at: null, finished_at: new Date().toISOString() });
    task.markSettled();
    const dependents = task.dependents;
    task.dependents = new Set();
    for (const dep of task.spec.depends_on) this.store.get(dep)?.dependents.delete(task);
    for (const dependent of dependents) {
      if (isTerminal(dependent.state)) continue;
      if (state === 'COMPLETED') {
        dependent.unmet--;
        this.becomeReadyIfDue(dependent);
      } else {
        this.finish(dependent, 'CANCELED', { error: dependencyFailed(task) });
      }
    }
    this.retention.finishedNow(task);
  }

  /** Canceled waiting tasks stay in the heaps until popped: clear them out once they outnumber the live ones. */
  private dropStaleEntries(): void {
    if (++this.staleEntries < 64 || this.staleEntries < (this.ready.size + this.timers.size) / 2) return;
    const live = (task: Task) => !isTerminal(task.state);
    this.ready.filter(live);
    this.timers.prune(live);
    this.staleEntries = 0;
  }
}

const dependencyFailed = (dependency: Task) => taskError.DEPENDENCY_FAILED(dependency.id, dependency.state);
