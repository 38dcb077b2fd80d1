import { EventEmitter } from 'node:events';
import { DEFAULT_GROUP, groupOf, isTerminal, requestError, specKey, taskError } from '../protocol/index.js';
import type { Counts, GroupInfo, TaskEdit, TaskSpec, TaskState } from '../protocol/index.js';
import { startFailure, StopRequest, type AttemptResult } from '../executor/index.js';
import type { StoredGroup } from './group.js';
import { Heap } from './heap.js';
import { attemptOutcome, interrupted, notStarted, serviceStopHeld } from './outcome.js';
import { Retention, type RetentionBounds } from './retention.js';
import { MemoryTaskStore, type TaskJournal, type TaskStore } from './task-store.js';
import type { ListFilter, TaskService } from './task-service.js';
import { TimerQueue } from './timer-queue.js';
import { onAbort } from './abort.js';
import { FRESH_RUN, Task, editedSpec, newStoredTask, newTaskId, outputName, specSize, startId, type StoredTask, type TaskPatch } from './task.js';

export type { TaskJournal } from './task-store.js';

/** Runs one attempt; resolves with undefined when it was aborted before its process started. */
export type AttemptRunner = (
  task: { id: string; attempt: number; spec: TaskSpec; startId: string; alone: boolean; output: string },
  stop: StopRequest,
  /** the process exists: its pid, and its start time (to recognise it after a restart) when known */
  onSpawn: (pid: number, started?: string) => void,
) => Promise<AttemptResult | undefined>;

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

/** A group as dispatch sees it: its ready queue and what it runs now. */
interface GroupState {
  readonly ready: Heap<Task>;
  running: number;
}

/** Higher priority first; equal priority, first in first out. */
const startsBefore = (a: Task, b: Task): boolean =>
  a.spec.priority !== b.spec.priority ? a.spec.priority > b.spec.priority : a.seq < b.seq;


/**
 * Task states, the ready queue, dependencies, timers and retries. Every
 * state change is written to the journal the moment it happens in memory;
 * a process is started only after the journal has flushed its task.
 */
export class Scheduler extends EventEmitter<SchedulerEvents> implements TaskService {
  private readonly store: TaskStore;
  private readonly retention: Retention;
  /** per group: its ready queue, by priority, and how many of its tasks run */
  private readonly groupStates = new Map<string, GroupState>();
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
  /**
   * ids of tasks removed since the start: a new task under one of them names
   * its output files apart, since the removed task's may still be read (and
   * deleted) after the new one starts
   */
  private readonly removedIds = new Set<string>();
  /** entries of finished tasks still in the ready queue or the timers (removed lazily) */
  private staleEntries = 0;

  constructor(private readonly options: SchedulerOptions) {
    super();
    const store = options.store ?? (options.journal && new MemoryTaskStore(options.journal));
    if (!store) throw new TypeError('a Scheduler needs a store or a journal');
    this.store = store;
    this.retention = new Retention(store, options, options.discardOutput);
  }

  /** What all groups together may run at once, and run now. */
  get concurrency(): { limit: number; running: number } {
    let limit = 0;
    for (const name of this.groupNames()) limit += this.limitOf(name);
    return { limit, running: this.running };
  }

  /** Every group: `default`, those with settings, and any a task names (a journal edited by hand). */
  groupNames(): string[] {
    return [...new Set([DEFAULT_GROUP, ...this.store.groups().keys(), ...this.groupStates.keys()])];
  }

  /** Each group as `groups` shows it, in the order of `groupNames`. */
  groups(): GroupInfo[] {
    const queued = new Map<string, number>();
    for (const task of this.store.all()) {
      if (task.state === 'QUEUED') queued.set(groupOf(task.spec), (queued.get(groupOf(task.spec)) ?? 0) + 1);
    }
    return this.groupNames().map((name) => this.groupInfo(name, queued.get(name) ?? 0));
  }

  /** One group as `groups` shows it; UNKNOWN_GROUP if it does not exist. */
  group(name: string): GroupInfo {
    this.mustExist(name);
    let queued = 0;
    for (const task of this.store.all()) if (task.state === 'QUEUED' && groupOf(task.spec) === name) queued++;
    return this.groupInfo(name, queued);
  }

  /** Makes a group, or changes its limit: a lower one kills nothing, it only starts nothing new until under it. */
  setGroup(name: string, concurrency: number): GroupInfo {
    this.store.changeGroup(name, { concurrency });
    this.pump();
    return this.group(name);
  }

  /** Pauses or resumes starting tasks in one group, or in every existing group; running tasks go on. */
  setPaused(paused: boolean, name?: string): GroupInfo[] {
    if (name !== undefined) this.mustExist(name);
    for (const group of name === undefined ? this.groupNames() : [name]) this.store.changeGroup(group, { paused });
    this.pump();
    return name === undefined ? this.groups() : [this.group(name)];
  }

  private groupInfo(name: string, queued: number): GroupInfo {
    const settings = this.store.groups().get(name);
    return { name, concurrency: this.limitOf(name), running: this.groupStates.get(name)?.running ?? 0, queued, paused: settings?.paused === true };
  }

  private limitOf(name: string): number {
    return this.store.groups().get(name)?.concurrency ?? this.options.concurrency;
  }

  private mustExist(name: string): void {
    if (name !== DEFAULT_GROUP && !this.store.groups().has(name)) throw requestError.UNKNOWN_GROUP(name);
  }

  private groupState(name: string): GroupState {
    let state = this.groupStates.get(name);
    if (!state) {
      state = { ready: new Heap<Task>(startsBefore), running: 0 };
      this.groupStates.set(name, state);
    }
    return state;
  }

  /** Into its group's ready queue, and a start soon if there is room. */
  private enqueue(task: Task): void {
    this.groupState(groupOf(task.spec)).ready.push(task);
    this.pump();
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
    if (spec.group !== undefined) this.mustExist(spec.group);
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
    this.mustHaveRoom();
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
  restore(stored: StoredTask[], started: (task: StoredTask) => boolean, groups: ReadonlyMap<string, StoredGroup> = new Map()): void {
    this.restoring = true;
    for (const [name, group] of groups) this.store.registerGroup(name, group);
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

  /** The settings of every group that has any, for a journal snapshot. */
  groupSettings(): Map<string, StoredGroup> {
    return new Map(this.store.groups());
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
      task.stop?.request();
      await this.wait(task);
    } else {
      this.finish(task, 'CANCELED', { error: taskError.CANCELED('before it started') });
    }
    return task;
  }

  /**
   * A page of tasks in submission order (or its reverse, `newest`), and how
   * many match after `after` in that order in all, the page included. With
   * `group`, only that group's tasks: found by going through the tasks of
   * the state (no index by group), so it costs them all.
   */
  list(filter: ListFilter): { tasks: Task[]; total: number } {
    // `after` is a position in the order of all tasks, whatever its own state.
    const afterSeq = filter.after === undefined ? undefined : this.get(filter.after).stored.seq;
    const newest = filter.order === 'newest';
    const limit = filter.limit ?? 100;
    if (filter.group === undefined) return this.store.page(filter.state, afterSeq, limit, newest);
    this.mustExist(filter.group);
    const all = this.store.page(filter.state, afterSeq, Number.MAX_SAFE_INTEGER, newest).tasks;
    const matching = all.filter((task) => groupOf(task.spec) === filter.group);
    return { tasks: matching.slice(0, limit), total: matching.length };
  }

  /**
   * Forgets a finished task (`remove` cancels an unfinished one first, with
   * its dependents). A task that depends on it and has not finished would
   * have been canceled with it; one that finished keeps its record.
   */
  remove(task: Task): void {
    if (!isTerminal(task.state)) throw requestError.NOT_CANCELABLE(task.id, task.state);
    if (this.store.get(task.id) !== task) return; // forgotten already (retention, or another remove)
    this.retention.removed(task);
    this.store.remove(task);
    this.removedIds.add(task.id);
  }

  /**
   * Runs a finished task again under its id, with a fresh budget of
   * attempts. The tasks that were canceled because it failed (and for no
   * other failure) run again with it, waiting for it as before.
   */
  restart(task: Task): Task {
    if (this.stopping) throw requestError.SHUTTING_DOWN('new task');
    if (!isTerminal(task.state)) throw requestError.NOT_RESTARTABLE(task.id, { state: task.state });
    const failed = this.failedDependency(task, new Set());
    if (failed) throw requestError.NOT_RESTARTABLE(task.id, { dependency: failed.id, state: failed.state });
    this.mustHaveRoom();
    const again = new Set([task]);
    if (task.state !== 'COMPLETED') {
      // Dependents come after their dependencies in submission order: one pass finds them all.
      for (const later of this.store.page(undefined, task.stored.seq, Number.MAX_SAFE_INTEGER).tasks) {
        const canceledForIt = later.state === 'CANCELED' && later.stored.error?.code === 'DEPENDENCY_FAILED';
        const onRestarted = later.spec.depends_on.some((id) => {
          const dep = this.store.get(id);
          return dep !== undefined && again.has(dep);
        });
        if (canceledForIt && onRestarted && !this.failedDependency(later, again)) {
          again.add(later);
        }
      }
    }
    for (const each of again) this.runAgain(each);
    this.pump();
    return task;
  }

  /**
   * Changes a task that has not started: its command, priority, start time
   * or group. A task waiting for a retry counts as not started: its next
   * attempt runs as edited.
   */
  edit(task: Task, edit: TaskEdit): Task {
    if (task.state !== 'PENDING' && task.state !== 'QUEUED') throw requestError.NOT_EDITABLE(task.id, task.state);
    if (edit.group !== undefined) this.mustExist(edit.group);
    const { spec, patch } = editedSpec(task.spec, edit, Date.now());
    const bytes = specSize(spec);
    this.retention.respecified(task, bytes);
    // Out of its queue (its place there depends on its priority and group), and back in as edited.
    this.groupStates.get(groupOf(task.spec))?.ready.filter((queued) => queued !== task);
    const waiting = task.unmet > 0 || (patch.ready_at ?? task.stored.ready_at ?? 0) > Date.now();
    this.update(task, waiting ? 'PENDING' : task.state, { ...patch, spec, spec_bytes: bytes });
    this.becomeReadyIfDue(task);
    return task;
  }

  private mustHaveRoom(): void {
    const { tasks: unfinished } = this.countByState();
    if (unfinished >= this.options.maxQueue) {
      throw requestError.QUEUE_FULL({ bound: '--max-queue', unfinished });
    }
  }

  /** A dependency of `task` that ended FAILED or CANCELED and is not among `restarting`, if any. */
  private failedDependency(task: Task, restarting: Set<Task>): Task | undefined {
    for (const id of task.spec.depends_on) {
      const dep = this.store.get(id); // a dependency forgotten since counts as met, as at a restart of the daemon
      if (dep && isTerminal(dep.state) && dep.state !== 'COMPLETED' && !restarting.has(dep)) return dep;
    }
    return undefined;
  }

  /** A finished task back to waiting, its result cleared, linked to its dependencies again. */
  private runAgain(task: Task): void {
    this.retention.restarted(task);
    Object.assign(task, { unmet: 0, cancelRequested: false, stopRequested: false, executorLosses: 0 });
    const startAt = task.spec.start_at;
    const patch: TaskPatch = { ...FRESH_RUN, restarts: (task.stored.restarts ?? 0) + 1, ready_at: startAt !== undefined && startAt > Date.now() ? startAt : null };
    const dependencies = task.spec.depends_on.map((id) => this.store.get(id)).filter((dep) => dep !== undefined);
    this.linkDependencies(task, dependencies);
    // Straight to QUEUED when nothing holds it: subscribers see no PENDING it never waited in.
    this.update(task, task.unmet === 0 && patch.ready_at === null ? 'QUEUED' : 'PENDING', patch);
    this.becomeReadyIfDue(task);
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
      task.stop?.request();
    }
    await all;
    await this.store.flushed().catch(() => undefined); // a failed journal is the daemon's to report
  }

  /** Ends the grace period of a stop now: running tasks are killed, to run again after a restart. */
  endGrace: () => void = () => undefined;

  private newId(): string {
    let id: string;
    do id = newTaskId();
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
    this.enqueue(task);
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

  /**
   * Starts ready tasks while their groups have free slots and are not
   * paused: of the tasks that could start, the highest priority first.
   */
  private fillSlots(): void {
    while (!this.stopping && !this.restoring) {
      let next: Task | undefined;
      for (const [name, group] of this.groupStates) {
        if (group.running >= this.limitOf(name) || this.store.groups().get(name)?.paused) continue;
        const top = this.nextReady(name, group);
        if (top && (!next || startsBefore(top, next))) next = top;
      }
      if (!next) return;
      this.groupStates.get(groupOf(next.spec))!.ready.pop();
      const attempt = this.start(next).finally(() => this.attempts.delete(attempt));
      this.attempts.add(attempt);
    }
  }

  /** The task at the head of a group's queue, once entries of tasks that left it (canceled, started, moved) are dropped. */
  private nextReady(name: string, group: GroupState): Task | undefined {
    for (let top = group.ready.peek(); top; top = group.ready.peek()) {
      if (top.state === 'QUEUED' && groupOf(top.spec) === name && this.store.get(top.id) === top) return top;
      group.ready.pop();
    }
    return undefined;
  }

  private async start(task: Task): Promise<void> {
    const group = this.groupState(groupOf(task.spec));
    this.running++;
    group.running++;
    const stop = new StopRequest();
    task.stop = stop;
    const attempt = task.stored.attempts + 1;
    const earlierOutput = task.stored.output;
    this.update(task, 'RUNNING', {
      attempts: attempt,
      started_at: new Date().toISOString(),
      output: outputName(task.stored, this.removedIds.has(task.id), attempt),
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
      if (durable && !stop.requested) {
        const alone = task.executorLosses > 0;
        result = await this.options.runAttempt({ id: task.id, attempt, spec: task.spec, startId: startId(task.stored), alone, output }, stop, (pid, started) => {
          this.store.change(task, started ? { pgid: pid, pgid_started: started } : { pgid: pid });
        });
        // Not for a kill of the daemon's own (cancel, timeout): only a signal from outside is in doubt.
        const fromOutside = !stop.requested && !task.cancelRequested;
        if (fromOutside && !this.stopping && result) await serviceStopHeld(result, this.stopBegun.signal);
      }
    } catch (error) {
      result = startFailure(`the attempt could not be run: ${(error as Error).message}`);
    } finally {
      this.running--;
      group.running--;
      task.stop = undefined;
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
    if (!this.stopping && !this.restoring) this.enqueue(task);
  }

  /** A task changes state: in the store, and to listeners. `patch` is the caller's own, and is written to. */
  private update(task: Task, state: TaskState, patch: TaskPatch): void {
    patch.state = state;
    this.store.change(task, patch);
    this.emit('change', task);
  }

  private finish(task: Task, state: 'COMPLETED' | 'FAILED' | 'CANCELED', patch: TaskPatch): void {
    if (task.state === 'QUEUED' || (task.state === 'PENDING' && task.stored.ready_at !== undefined)) this.dropStaleEntries();
    patch.ready_at = null;
    patch.finished_at = new Date().toISOString();
    this.update(task, state, patch);
    task.markSettled();
    const dependents = task.takeDependents() ?? [];
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
    let ready = 0;
    for (const group of this.groupStates.values()) ready += group.ready.size;
    if (++this.staleEntries < 64 || this.staleEntries < (ready + this.timers.size) / 2) return;
    const live = (task: Task) => !isTerminal(task.state);
    for (const group of this.groupStates.values()) group.ready.filter(live);
    this.timers.prune(live);
    this.staleEntries = 0;
  }
}

const dependencyFailed = (dependency: Task) => taskError.DEPENDENCY_FAILED(dependency.id, dependency.state);
