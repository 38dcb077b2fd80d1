import { EventEmitter } from 'node:events';
import { unlink } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { StringDecoder } from 'node:string_decoder';
import { type AttemptResult, type OutputPaths, StopRequest, startFailure } from '../executor/index.js';
import {
  DEFAULT_GROUP,
  isTerminal,
  RequestError,
  requestError,
  specKey,
  taskError,
} from '../protocol/index.js';
import type { Counts, GroupInfo, NodeInfo, TaskEdit, TaskSpec, TaskState } from '../protocol/index.js';
import {
  type AttemptRunner,
  applyPatch,
  attemptOutcome,
  editedSpec,
  emptyCounts,
  FRESH_RUN,
  interrupted,
  type ListFilter,
  notStarted,
  newStoredTask,
  newTaskId,
  onAbort,
  startId,
  serviceStopHeld,
  Task,
  type TaskPatch,
  type TaskService,
} from '../scheduler/index.js';
import { Database, isUnreachable, Listener, type Query, storePatienceMs } from './database.js';
import { Lease } from './lease.js';
import { OutputUpload, readChunks, STREAM_NUMBER, STREAMS, type Stream } from './output-chunks.js';
import { claimTasks, insertTask, lockTask, saveTask, TASK_COLUMNS, type TaskRow, taskOf } from './task-rows.js';

export interface ClusterOptions {
  db: Database;
  concurrency: number;
  leaseMs: number;
  keepFinished: number;
  maxQueue: number;
  runAttempt: AttemptRunner;
  /** the local files an attempt writes its output to, named after its claim */
  outputPaths: (claim: string) => OutputPaths;
  /** kills every running task's process group at once (a fence cannot wait for a grace period) */
  killAll: () => void;
  /** the lease holds `validMs` more: past it without a new word, whatever runs the tasks kills them (the daemon may be frozen) */
  leaseHolds: (validMs: number) => void;
  log: (line: string) => void;
}

/** An attempt this daemon runs. */
interface Running {
  task: Task;
  claim: string;
  stop: StopRequest;
  upload: OutputUpload;
  /** killed by a stop or a fence, not by the task: it runs again */
  stopRequested: boolean;
  /** its process has ended: what stops or fences now cannot have cut it short */
  ended: boolean;
}

/** How often, without a notice, waiters and followers look again, output is copied, and leases are checked. */
const POLL_MS = 1000;
const COPY_MS = 250;
const PROMOTE_CAP_MS = 5000;
const FOREIGN_KEY_VIOLATION = '23503';
/** How long the upkeep looks for a claim whose commit went unheard. */
const IN_DOUBT_MS = 60_000;
/** A subquery of a task row `t`: one stream of its current (or last) attempt's output, whole. */
const OUTPUT_OF_STREAM = (stream: number) =>
  `SELECT string_agg(data, ''::bytea ORDER BY pos) FROM tm_output o WHERE o.task_id = t.id AND o.claim = (t.record->>'output')::bigint AND o.stream = ${stream}`;

const dependencyFailed = (dependency: Task) => taskError.DEPENDENCY_FAILED(dependency.id, dependency.state);
const nowIso = () => new Date().toISOString();

/** Makes a ready task QUEUED: its start time has come and every dependency is COMPLETED (or gone, as after retention). */
const PROMOTE = `UPDATE tm_tasks t SET state = 'QUEUED', ready_at = NULL
  WHERE t.state = 'PENDING' AND (t.ready_at IS NULL OR t.ready_at <= $1)
    AND NOT EXISTS (SELECT 1 FROM tm_tasks d WHERE d.id = ANY (t.depends_on) AND d.state <> 'COMPLETED')`;

/**
 * The scheduler of a daemon in a cluster: the tasks, their states and the
 * rules' decisions live in PostgreSQL, shared by every daemon of the
 * cluster. Each daemon claims ready tasks with FOR UPDATE SKIP LOCKED, in
 * priority and submission order, within its concurrency and the groups'
 * cluster-wide limits; LISTEN/NOTIFY wakes waiters, followers and idle
 * daemons. The rules of what follows an attempt are the embedded
 * scheduler's own (`attemptOutcome`).
 */
export class ClusterScheduler extends EventEmitter<{ change: [Task] }> implements TaskService {
  private readonly db: Database;
  private lease: Lease | undefined;
  private leaseDb: Database | undefined;
  /** this daemon's name in the cluster, once registered */
  private node = '';
  private readonly listener: Listener;
  private readonly running = new Map<string, Running>();
  private readonly attempts = new Set<Promise<void>>();
  /** per task id, whoever waits for its end, or (`any`) for any change or output of it */
  private readonly wakers = new Map<string, Set<{ any: boolean; wake: () => void }>>();
  /** ids changed since the last publication to subscribers */
  private readonly changed = new Set<string>();
  /**
   * The row version (xmin, the transaction that last wrote it) of each task last told to
   * subscribers: a task looked at again (after notices may have been missed) that has not
   * changed since is not told twice.
   */
  private readonly told = new Map<string, string>();
  /** the output of tasks as read for an answer */
  private readonly texts = new WeakMap<Task, { stdout: string; stderr: string }>();
  private publishing = false;
  private dispatching = false;
  /** claims whose transaction failed (perhaps committed, unheard; never started here), and since when */
  private readonly inDoubt = new Map<string, number>();
  /** the claim loop in progress: a stop waits for it, so that nothing it claims escapes the stop */
  private dispatched: Promise<void> = Promise.resolve();
  private pokedAgain = false;
  private stopping = false;
  private ticker: NodeJS.Timeout | undefined;
  private copier: NodeJS.Timeout | undefined;
  private promoteTimer: NodeJS.Timeout | undefined;
  /** how long a request waits for an unreachable store before it is answered INTERNAL */
  private readonly patienceMs: number;

  constructor(private readonly options: ClusterOptions) {
    super();
    this.db = options.db;
    this.patienceMs = storePatienceMs(options.leaseMs);
    this.listener = new Listener(this.db.url, ['tm_change', 'tm_kill', 'tm_groups', 'tm_output'], this.db.queryTimeoutMs);
    this.listener.on('notification', (channel, payload) => this.notified(channel, payload));
    this.listener.on('connected', () => {
      // Notices may have been missed while not listening: look again at everything one would have told.
      for (const id of this.wakers.keys()) this.wake(id, true);
      this.poke();
      this.planPromotion();
      if (this.listenerCount('change') > 0) void this.republish();
    });
  }

  /** Takes this daemon's name in the cluster (NodeNameTakenError while another live daemon has it). */
  async register(node: string, address: string): Promise<void> {
    this.node = node;
    // A connection of its own: requests and results queued for the pool never hold a renewal back.
    this.leaseDb ??= new Database(this.db.url, this.db.queryTimeoutMs, 1);
    this.lease = new Lease(this.leaseDb, {
      node,
      address,
      concurrency: this.options.concurrency,
      leaseMs: this.options.leaseMs,
      running: () => this.running.size,
      rescue: (query, nodes) => this.rescue(query, nodes),
      fence: () => this.stopAttempts(true),
      resume: () => this.poke(),
      // Later than the daemon's own fence (half the lease), well before the lease can move.
      renewed: () => this.options.leaseHolds(this.lease!.heldUntil(0.75) - performance.now()),
      log: this.options.log,
    });
    try {
      await this.lease.register();
    } catch (error) {
      await this.leaseDb.close().catch(() => undefined);
      this.leaseDb = undefined;
      throw error;
    }
  }

  /** Starts claiming tasks, renewing the lease and listening for the cluster's notices. */
  start(): void {
    // Whatever runs the tasks keeps to the lease from the first task on, before the first renewal.
    if (this.lease) this.options.leaseHolds(this.lease.heldUntil(0.75) - performance.now());
    this.lease?.start();
    this.listener.start();
    this.ticker = setInterval(() => void this.tick(), Math.max(100, Math.min(POLL_MS, this.options.leaseMs / 6)));
    this.copier = setInterval(() => this.copyOutputs(), COPY_MS);
    this.poke();
    this.planPromotion();
  }

  get concurrency(): { limit: number; running: number } {
    return { limit: this.options.concurrency, running: this.running.size };
  }

  /** Runs `work` against the store, waiting a while for it if it is unreachable; then INTERNAL. */
  private async store<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await this.db.patiently(work, this.patienceMs);
    } catch (error) {
      if (error instanceof RequestError) throw error;
      if (isUnreachable(error)) throw requestError.INTERNAL('store');
      throw error;
    }
  }

  private transaction<T>(work: (query: Query) => Promise<T>): Promise<T> {
    return this.store(() => this.db.transaction(work));
  }

  // ---- reading ----

  async get(id: string): Promise<Task> {
    const task = await this.find(id);
    if (!task) throw requestError.NOT_FOUND(id);
    return task;
  }

  /** The task with its output, in one query, or undefined. */
  private async find(id: string): Promise<Task | undefined> {
    return this.store(async () => {
      const [row] = await this.db.query<TaskRow & Record<Stream, Buffer | null>>(
        `SELECT ${TASK_COLUMNS}, ${STREAMS.map((stream) => `(${OUTPUT_OF_STREAM(STREAM_NUMBER[stream])}) AS ${stream}`).join(', ')} FROM tm_tasks t WHERE id = $1`,
        [id],
      );
      if (!row) return undefined;
      const task = taskOf(row);
      this.texts.set(task, { stdout: row.stdout?.toString('utf8') ?? '', stderr: row.stderr?.toString('utf8') ?? '' });
      return task;
    });
  }

  /** What an answer shows of a task's output: as it was read with the task. */
  textOf(task: Task): { stdout: string; stderr: string } {
    return this.texts.get(task) ?? { stdout: '', stderr: '' };
  }

  async list(filter: ListFilter): Promise<{ tasks: Task[]; total: number }> {
    return this.store(async () => {
      const where: string[] = [];
      const values: unknown[] = [];
      const add = (condition: string, value: unknown) => {
        values.push(value);
        where.push(condition.replace('?', `$${values.length}`));
      };
      const newest = filter.order === 'newest';
      if (filter.after !== undefined) {
        const [after] = await this.db.query<{ seq: string }>('SELECT seq FROM tm_tasks WHERE id = $1', [filter.after]);
        if (!after) throw requestError.NOT_FOUND(filter.after);
        add(newest ? 'seq < ?' : 'seq > ?', after.seq);
      }
      if (filter.state !== undefined) add('state = ?', filter.state);
      if (filter.group !== undefined) {
        await this.mustExist(this.db.query.bind(this.db), filter.group);
        add('grp = ?', filter.group);
      }
      const condition = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
      const rows = await this.db.query<TaskRow>(
        `SELECT ${TASK_COLUMNS} FROM tm_tasks ${condition} ORDER BY seq ${newest ? 'DESC' : ''} LIMIT $${values.length + 1}`,
        [...values, filter.limit ?? 100],
      );
      const [{ total }] = (await this.db.query<{ total: number }>(`SELECT count(*)::int AS total FROM tm_tasks ${condition}`, values)) as [{ total: number }];
      return { tasks: rows.map(taskOf), total };
    });
  }

  async countByState(): Promise<{ counts: Counts; tasks: number }> {
    const rows = await this.store(() => this.db.query<{ state: TaskState; n: number }>('SELECT state, count(*)::int AS n FROM tm_tasks GROUP BY state'));
    const counts = emptyCounts();
    for (const { state, n } of rows) counts[state] = n;
    return { counts, tasks: counts.PENDING + counts.QUEUED + counts.RUNNING };
  }

  async nodes(): Promise<NodeInfo[]> {
    const rows = await this.store(() =>
      this.db.query<{ name: string; address: string; started_at: Date; last_seen: Date; running: number; concurrency: number }>(
        'SELECT name, address, started_at, last_seen, running, concurrency FROM tm_nodes ORDER BY name',
      ),
    );
    return rows.map((row) => ({ ...row, started_at: row.started_at.toISOString(), last_seen: row.last_seen.toISOString() }));
  }

  // ---- groups ----

  async groups(): Promise<GroupInfo[]> {
    return this.store(async () => {
      const settings = await this.db.query<{ name: string; concurrency: number | null; paused: boolean }>('SELECT name, concurrency, paused FROM tm_groups ORDER BY made');
      const counts = await this.db.query<{ grp: string; running: number; queued: number }>(
        `SELECT grp, count(*) FILTER (WHERE state = 'RUNNING')::int AS running, count(*) FILTER (WHERE state = 'QUEUED')::int AS queued
         FROM tm_tasks WHERE state IN ('RUNNING', 'QUEUED') GROUP BY grp`,
      );
      const names = [...new Set([DEFAULT_GROUP, ...settings.map((g) => g.name), ...counts.map((c) => c.grp)])];
      return names.map((name) => {
        const setting = settings.find((g) => g.name === name);
        const count = counts.find((c) => c.grp === name);
        return {
          name,
          concurrency: setting?.concurrency ?? this.options.concurrency,
          running: count?.running ?? 0,
          queued: count?.queued ?? 0,
          paused: setting?.paused === true,
        };
      });
    });
  }

  private async group(name: string): Promise<GroupInfo> {
    return (await this.groups()).find((group) => group.name === name)!;
  }

  private async mustExist(query: Query, name: string): Promise<void> {
    if (name === DEFAULT_GROUP) return;
    const rows = await query('SELECT 1 FROM tm_groups WHERE name = $1', [name]);
    if (rows.length === 0) throw requestError.UNKNOWN_GROUP(name);
  }

  async setGroup(name: string, concurrency: number): Promise<GroupInfo> {
    await this.store(() =>
      this.db.query('INSERT INTO tm_groups (name, concurrency) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET concurrency = EXCLUDED.concurrency', [
        name,
        concurrency,
      ]),
    );
    return this.group(name);
  }

  async setPaused(paused: boolean, name?: string): Promise<GroupInfo[]> {
    await this.transaction(async (query) => {
      if (name !== undefined) await this.mustExist(query, name);
      const names = name !== undefined ? [name] : [DEFAULT_GROUP, ...(await query<{ name: string }>('SELECT name FROM tm_groups')).map((g) => g.name)];
      await query(
        'INSERT INTO tm_groups (name, paused) SELECT unnest($1::text[]), $2 ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused',
        [[...new Set(names)], paused],
      );
    });
    const groups = await this.groups();
    return name === undefined ? groups : groups.filter((group) => group.name === name);
  }

  // ---- changing tasks ----

  async submit(spec: TaskSpec, id?: string): Promise<{ task: Task; duplicate: boolean }> {
    if (this.stopping) throw requestError.SHUTTING_DOWN('new task');
    // Made once, outside what a lost connection makes run again: a try that committed unheard is found by its id.
    const made = new Task(newStoredTask(id ?? newTaskId(), 0, spec, Date.now()));
    const plain = id === undefined && spec.group === undefined && spec.depends_on.length === 0;
    const found = plain
      ? // A task that names nothing else is one statement, without a transaction: the common case.
        await this.store(() => this.insert(this.db.query.bind(this.db) as Query, made, id, []))
      : await this.transaction(async (query) => {
          if (spec.group !== undefined) await this.mustExist(query, spec.group);
          if (id !== undefined) {
            const existing = await this.sameId(query, id, spec);
            if (existing) return existing;
          }
          // Locked against a change of state until this task is in: a dependency that ends meanwhile finds it.
          const dependencies =
            spec.depends_on.length === 0 ? [] : (await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = ANY ($1) FOR SHARE`, [spec.depends_on])).map(taskOf);
          const missing = spec.depends_on.find((dep) => !dependencies.some((task) => task.id === dep));
          if (missing !== undefined) throw requestError.UNKNOWN_DEPENDENCY(missing);
          return this.insert(query, made, id, dependencies);
        });
    if (found.duplicate) return { task: (await this.find(found.task.id)) ?? found.task, duplicate: true }; // with its output
    if (found.task.state === 'PENDING') this.planPromotion();
    return found;
  }

  /** Adds a new task, in the state its dependencies and start time give it. */
  private async insert(query: Query, made: Task, id: string | undefined, dependencies: Task[]): Promise<{ task: Task; duplicate: boolean }> {
    const task = new Task({ ...made.stored });
    const failed = dependencies.find((dep) => isTerminal(dep.state) && dep.state !== 'COMPLETED');
    if (failed) {
      applyPatch(task.stored, { state: 'CANCELED', error: dependencyFailed(failed), ready_at: null, finished_at: nowIso() });
    } else if (dependencies.every((dep) => dep.state === 'COMPLETED') && task.stored.ready_at === undefined) {
      task.stored.state = 'QUEUED';
    }
    const inserted = await insertTask(query, task, this.options.maxQueue);
    if (inserted === 'full') {
      await this.mustHaveRoom(query); // refuses, with the count
      throw requestError.QUEUE_FULL({ bound: '--max-queue', unfinished: this.options.maxQueue }); // room made since the insert was refused
    }
    if (inserted === 'exists') {
      // Submitted at the same moment through another daemon (a conflict, or a duplicate), or this very
      // submit, committed by a try whose answer was lost.
      const existing = await this.sameId(query, task.id, task.spec);
      if (existing) return id === undefined ? { task: existing.task, duplicate: false } : existing;
    }
    return { task, duplicate: false };
  }

  /** QUEUE_FULL once --max-queue tasks are not finished. */
  private async mustHaveRoom(query: Query): Promise<void> {
    const [{ unfinished }] = (await query<{ unfinished: number }>("SELECT count(*)::int AS unfinished FROM tm_tasks WHERE state IN ('PENDING', 'QUEUED', 'RUNNING')")) as [
      { unfinished: number },
    ];
    if (unfinished >= this.options.maxQueue) throw requestError.QUEUE_FULL({ bound: '--max-queue', unfinished });
  }

  /** The task already under `id`: a duplicate if its spec is this one; ID_CONFLICT otherwise. */
  private async sameId(query: Query, id: string, spec: TaskSpec): Promise<{ task: Task; duplicate: true } | undefined> {
    const [row] = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1`, [id]);
    if (!row) return undefined;
    const existing = taskOf(row);
    if (specKey(existing.spec) !== specKey(spec)) throw requestError.ID_CONFLICT(id);
    return { task: existing, duplicate: true };
  }

  async wait(task: Task, timeoutMs?: number, signal?: AbortSignal): Promise<{ task: Task; waitedOut: boolean }> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    let last = task;
    for (;;) {
      // Listening before reading: a change between the two still wakes this wait.
      const next = this.nextChange(task.id, false, deadline, signal);
      try {
        last = await this.get(task.id);
      } catch (error) {
        if (error instanceof RequestError && error.code === 'NOT_FOUND') {
          next.cancel();
          throw error;
        }
        // Unreachable store: the wait goes on, and looks again later.
      }
      if (isTerminal(last.state)) {
        next.cancel();
        return { task: last, waitedOut: false };
      }
      if ((await next.happened) === 'over') return { task: (await this.find(task.id).catch(() => undefined)) ?? last, waitedOut: true };
    }
  }

  /**
   * Resolves 'again' when the task may have ended (`any`: changed, or written
   * output), or a while has passed; 'over' once the deadline passes or the signal aborts.
   */
  private nextChange(id: string, any: boolean, deadline: number | undefined, signal: AbortSignal | undefined) {
    let cancel: () => void = () => undefined;
    const happened = new Promise<'again' | 'over'>((resolve) => {
      const wakers = this.wakers.get(id) ?? new Set();
      this.wakers.set(id, wakers);
      const done = (how: 'again' | 'over') => {
        clearTimeout(poll);
        clearTimeout(timer);
        forget?.();
        wakers.delete(waker);
        if (wakers.size === 0 && this.wakers.get(id) === wakers) this.wakers.delete(id);
        resolve(how);
      };
      const waker = { any, wake: () => done('again') };
      wakers.add(waker);
      const poll = setTimeout(done, POLL_MS, 'again');
      const timer = deadline === undefined ? undefined : setTimeout(done, Math.max(0, deadline - Date.now()), 'over');
      const forget = signal && onAbort(signal, () => done('over'));
      cancel = () => done('over');
    });
    return { happened, cancel: () => cancel() };
  }

  /** Wakes who waits on the task: all (`ended`), or those that follow its every change. */
  private wake(id: string, ended: boolean): void {
    for (const waker of [...(this.wakers.get(id) ?? [])]) if (ended || waker.any) waker.wake();
  }

  async cancel(task: Task): Promise<Task> {
    const where = await this.transaction(async (query) => {
      const now = await lockTask(query, task.id);
      if (!now) throw requestError.NOT_FOUND(task.id);
      if (isTerminal(now.state)) throw requestError.NOT_CANCELABLE(now.id, now.state);
      if (now.state === 'RUNNING') {
        await query('UPDATE tm_tasks SET cancel_requested = true WHERE id = $1', [now.id]);
        await query("SELECT pg_notify('tm_kill', $1)", [`${now.stored.node ?? ''} ${now.id}`]);
        return now.stored.node;
      }
      await this.finish(query, now, 'CANCELED', { error: taskError.CANCELED('before it started') });
      return undefined;
    });
    if (where === this.node) this.cancelHere(task.id);
    return (await this.wait(task)).task;
  }

  private cancelHere(id: string): void {
    const attempt = this.running.get(id);
    if (!attempt) return;
    attempt.task.cancelRequested = true;
    attempt.stop.request();
  }

  async remove(task: Task): Promise<void> {
    await this.transaction(async (query) => {
      const now = await lockTask(query, task.id);
      if (!now) return; // removed already
      if (!isTerminal(now.state)) throw requestError.NOT_CANCELABLE(now.id, now.state);
      await query('DELETE FROM tm_tasks WHERE id = $1', [now.id]);
    });
  }

  async restart(task: Task): Promise<Task> {
    if (this.stopping) throw requestError.SHUTTING_DOWN('new task');
    const restarted = await this.transaction(async (query) => {
      const now = await lockTask(query, task.id);
      if (!now) throw requestError.NOT_FOUND(task.id);
      if (!isTerminal(now.state)) throw requestError.NOT_RESTARTABLE(now.id, { state: now.state });
      const failed = await this.failedDependency(query, now, new Set());
      if (failed) throw requestError.NOT_RESTARTABLE(now.id, { dependency: failed.id, state: failed.state });
      await this.mustHaveRoom(query);
      const again = new Map([[now.id, now]]);
      if (now.state !== 'COMPLETED') {
        // Dependents come after their dependencies in submission order: one pass finds them all.
        const later = await query<TaskRow>(
          `SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE seq > $1 AND state = 'CANCELED' AND record->'error'->>'code' = 'DEPENDENCY_FAILED' ORDER BY seq FOR NO KEY UPDATE`,
          [now.stored.seq],
        );
        for (const candidate of later.map(taskOf)) {
          const onRestarted = candidate.spec.depends_on.some((id) => again.has(id));
          if (onRestarted && !(await this.failedDependency(query, candidate, new Set(again.keys())))) again.set(candidate.id, candidate);
        }
      }
      for (const each of again.values()) {
        const startAt = each.spec.start_at;
        applyPatch(each.stored, {
          ...FRESH_RUN,
          state: 'PENDING',
          restarts: (each.stored.restarts ?? 0) + 1,
          ready_at: startAt !== undefined && startAt > Date.now() ? startAt : null,
        });
        await saveTask(query, each, null);
        await query('DELETE FROM tm_output WHERE task_id = $1', [each.id]);
      }
      await query(PROMOTE, [Date.now()]);
      // As committed: read later, a daemon may already have started it.
      const [row] = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1`, [now.id]);
      return taskOf(row!);
    });
    this.planPromotion();
    return restarted;
  }

  /** A dependency of `task` that ended FAILED or CANCELED and is not being restarted with it. */
  private async failedDependency(query: Query, task: Task, restarting: Set<string>): Promise<Task | undefined> {
    if (task.spec.depends_on.length === 0) return undefined;
    const rows = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = ANY ($1) AND state IN ('FAILED', 'CANCELED')`, [task.spec.depends_on]);
    return rows.map(taskOf).find((dep) => !restarting.has(dep.id));
  }

  async edit(task: Task, edit: TaskEdit): Promise<Task> {
    const edited = await this.transaction(async (query) => {
      const now = await lockTask(query, task.id);
      if (!now) throw requestError.NOT_FOUND(task.id);
      if (now.state !== 'PENDING' && now.state !== 'QUEUED') throw requestError.NOT_EDITABLE(now.id, now.state);
      if (edit.group !== undefined) await this.mustExist(query, edit.group);
      const { spec, patch } = editedSpec(now.spec, edit, Date.now());
      const unmet = await query(`SELECT 1 FROM tm_tasks WHERE id = ANY ($1) AND state <> 'COMPLETED'`, [spec.depends_on]);
      applyPatch(now.stored, { ...patch, spec, spec_bytes: JSON.stringify(spec).length });
      const waiting = unmet.length > 0 || (now.stored.ready_at ?? 0) > Date.now();
      now.stored.state = waiting ? 'PENDING' : 'QUEUED';
      if (!waiting) delete now.stored.ready_at;
      await saveTask(query, now, null);
      return now;
    });
    this.planPromotion();
    return edited;
  }

  // ---- the rules' decisions, in the store ----

  /** Ends a task, and cancels the tasks that wait for it if it did not complete. */
  private async finish(query: Query, task: Task, state: 'COMPLETED' | 'FAILED' | 'CANCELED', patch: TaskPatch): Promise<void> {
    applyPatch(task.stored, { ...patch, state, ready_at: null, finished_at: nowIso() });
    await saveTask(query, task, null);
    if (state === 'COMPLETED') {
      await query(`${PROMOTE} AND $2 = ANY (t.depends_on)`, [Date.now(), task.id]);
      return;
    }
    const dependents = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE $1 = ANY (depends_on) AND state IN ('PENDING', 'QUEUED') FOR NO KEY UPDATE`, [task.id]);
    for (const dependent of dependents.map(taskOf)) await this.finish(query, dependent, 'CANCELED', { error: dependencyFailed(task) });
  }

  /** A task whose daemon is gone runs again elsewhere (a cancel asked meanwhile is carried out instead). */
  private async rescueTask(query: Query, task: Task, why: string): Promise<void> {
    if (task.cancelRequested) {
      await this.finish(query, task, 'CANCELED', { error: taskError.CANCELED('while running') });
      return;
    }
    applyPatch(task.stored, { ...interrupted(task, { pgid: null, pgid_started: null }, why), state: 'QUEUED' });
    await saveTask(query, task, null);
  }

  /** Requeues what daemons whose leases ran out (or that are gone) left RUNNING. */
  private async rescue(query: Query, nodes: string[]): Promise<void> {
    const orphans = await query<TaskRow>(
      `SELECT ${TASK_COLUMNS} FROM tm_tasks t WHERE state = 'RUNNING'
         AND (node = ANY ($1) OR NOT EXISTS (SELECT 1 FROM tm_nodes n WHERE n.name = t.node)) FOR NO KEY UPDATE SKIP LOCKED`,
      [nodes],
    );
    for (const task of orphans.map(taskOf)) {
      const why = `the daemon "${task.stored.node}" running it stopped renewing its lease; it runs again`;
      await this.rescueTask(query, task, why);
      this.options.log(`task ${task.id}: ${why}`);
    }
    await query('DELETE FROM tm_nodes WHERE name = ANY ($1)', [nodes]);
  }

  // ---- running tasks here ----

  /** Claims and starts tasks soon; one claim loop at a time. */
  private poke(): void {
    if (this.dispatching) {
      this.pokedAgain = true;
      return;
    }
    this.dispatching = true;
    this.pokedAgain = false;
    this.dispatched = this.dispatch()
      .catch((error: unknown) => {
        if (!isUnreachable(error)) this.options.log(`claiming tasks failed: ${(error as Error).stack ?? String(error)}`);
      })
      .finally(() => {
        this.dispatching = false;
        if (this.pokedAgain) this.poke();
      });
  }

  private async dispatch(): Promise<void> {
    for (;;) {
      const free = this.options.concurrency - this.running.size;
      const lease = this.lease;
      if (free <= 0 || this.stopping || !lease?.held) return;
      const numbers: string[] = [];
      const sent = performance.now(); // before the transaction: a renewal in it is counted from here
      let renewed = false;
      const claimed = await this.db
        .transaction(async (query) => {
          renewed = false; // a transaction tried again starts over
          if (!(await lease.confirm(query))) return [];
          const tasks = await this.claim(query, free, numbers);
          if (tasks.length > 0 && lease.renewalOverdue) {
            await lease.renewIn(query);
            renewed = true;
          }
          return tasks;
        })
        .catch((error: unknown) => {
          // The commit may have happened unheard: the upkeep hands back whatever of these it finds committed.
          for (const claim of numbers) this.inDoubt.set(claim, Date.now());
          throw error;
        });
      if (renewed) lease.renewedBy(sent);
      // The claim took time: a daemon that has fenced itself or begun to stop since starts none of it.
      if (claimed.length > 0 && (this.stopping || !lease.held)) {
        await this.handBack(claimed.map(({ task, claim }) => ({ id: task.id, claim })));
        return;
      }
      for (const attempt of claimed) this.startAttempt(attempt);
      if (claimed.length < free) return;
    }
  }

  /**
   * Takes up to `free` QUEUED tasks for this daemon: the highest priority
   * first, then the oldest, skipping tasks other daemons are claiming. A
   * group with a limit has its row locked while its running tasks are
   * counted, so the limit holds across the cluster. The claims' numbers go
   * into `numbers` before the commit, for the caller to know them if the
   * commit fails.
   */
  private async claim(query: Query, free: number, numbers: string[]): Promise<{ task: Task; claim: string }[]> {
    const settings = await query<{ name: string; concurrency: number | null; paused: boolean }>('SELECT name, concurrency, paused FROM tm_groups');
    const limits = new Map(settings.filter((g) => g.concurrency !== null).map((g) => [g.name, g.concurrency!]));
    const runningIn = async () =>
      limits.size === 0
        ? new Map<string, number>()
        : new Map(
        (
          await query<{ grp: string; n: number }>("SELECT grp, count(*)::int AS n FROM tm_tasks WHERE state = 'RUNNING' AND grp = ANY ($1) GROUP BY grp", [
            [...limits.keys()],
          ])
        ).map((row) => [row.grp, row.n]),
      );
    const before = await runningIn();
    const closed = [...settings.filter((g) => g.paused).map((g) => g.name), ...[...limits].filter(([name, limit]) => (before.get(name) ?? 0) >= limit).map(([name]) => name)];
    // Each candidate gets a claim number at once (one left unused leaves a gap, which nothing minds).
    const candidates = await query<TaskRow & { grp: string; next_claim: string }>(
      `SELECT ${TASK_COLUMNS}, grp, nextval('tm_claims')::text AS next_claim FROM tm_tasks
       WHERE state = 'QUEUED' AND grp <> ALL ($1) ORDER BY priority DESC, seq LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`,
      [closed, free * 2],
    );
    const limited = [...new Set(candidates.map((row) => row.grp))].filter((name) => limits.has(name)).sort();
    let counts = new Map<string, number>();
    if (limited.length > 0) {
      // Locked, the settings are read again: a pause or a lower limit committed meanwhile holds for this claim.
      const locked = await query<{ name: string; concurrency: number | null; paused: boolean }>(
        'SELECT name, concurrency, paused FROM tm_groups WHERE name = ANY ($1) ORDER BY name FOR UPDATE',
        [limited],
      );
      for (const group of locked) limits.set(group.name, group.paused ? 0 : (group.concurrency ?? Number.POSITIVE_INFINITY));
      counts = await runningIn();
    }
    const chosen: (TaskRow & { next_claim: string })[] = [];
    for (const row of candidates) {
      if (chosen.length === free) break;
      const limit = limits.get(row.grp);
      if (limit !== undefined) {
        const n = counts.get(row.grp) ?? 0;
        if (n >= limit) continue;
        counts.set(row.grp, n + 1);
      }
      chosen.push(row);
    }
    if (chosen.length === 0) return [];
    const claimed = chosen.map((row) => {
      const task = taskOf(row);
      const claim = row.next_claim;
      applyPatch(task.stored, {
        state: 'RUNNING',
        attempts: task.stored.attempts + 1,
        started_at: nowIso(),
        output: claim,
        node: this.node,
        stdout_bytes: null,
        stderr_bytes: null,
        stdout_truncated: false,
        stderr_truncated: false,
      });
      return { task, claim };
    });
    numbers.push(...claimed.map(({ claim }) => claim));
    await claimTasks(query, this.node, claimed, chosen.filter((row) => row.record.output !== undefined).map((row) => row.id));
    return claimed;
  }

  private startAttempt({ task, claim }: { task: Task; claim: string }): void {
    const paths = this.options.outputPaths(claim);
    const attempt: Running = { task, claim, stop: new StopRequest(), upload: new OutputUpload(task.id, claim, paths), stopRequested: false, ended: false };
    this.running.set(task.id, attempt);
    const run = this.runAttempt(attempt).finally(() => {
      this.attempts.delete(run);
      this.running.delete(task.id);
      this.poke();
    });
    this.attempts.add(run);
  }

  private async runAttempt(attempt: Running): Promise<void> {
    const { task, claim } = attempt;
    let result: AttemptResult | undefined;
    try {
      result = await this.options.runAttempt(
        // After an executor process was lost under it, a task runs on one of its own: its next loss takes no neighbour with it.
        { id: task.id, attempt: task.stored.attempts, spec: task.spec, startId: startId(task.stored), alone: task.executorLosses > 0, output: claim },
        attempt.stop,
        () => undefined,
      );
      // Not for a kill of the daemon's own (cancel, fence, stop): only a signal from outside is in doubt.
      const fromOutside = !attempt.stop.requested && !task.cancelRequested;
      if (fromOutside && !this.stopping && result) await serviceStopHeld(result, this.stopBegun.signal);
    } catch (error) {
      result = startFailure(`the attempt could not be run: ${(error as Error).message}`);
    }
    attempt.ended = true;
    await this.recordEnd(attempt, result);
    const { paths } = attempt.upload;
    await Promise.all(STREAMS.map((stream) => unlink(paths[stream]).catch(() => undefined)));
  }

  /**
   * Writes what follows the attempt, trying again while the store is
   * unreachable. Written only under the attempt's own claim: if the lease
   * ran out meanwhile, the task is another daemon's now and this result is
   * dropped (it was recorded INTERRUPTED when it was requeued).
   */
  private async recordEnd(attempt: Running, result: AttemptResult | undefined): Promise<void> {
    const query = this.db.query.bind(this.db) as Query;
    for (let delay = 100, failures = 0; ; delay = Math.min(delay * 2, 2000)) {
      try {
        // The output first, each piece committed as it goes (a second copy of a piece changes nothing):
        // in the store before the result, and no lock held while it waits for a copy before it.
        if (result && result.stdout_bytes + result.stderr_bytes > 0) await attempt.upload.copy(query, { stdout: result.stdout_bytes, stderr: result.stderr_bytes });
        const ended = await this.db.transaction(async (query) => {
          const [row] = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1 FOR NO KEY UPDATE`, [attempt.task.id]);
          if (!row || row.claim !== attempt.claim || row.state !== 'RUNNING') return false;
          const task = taskOf(row);
          task.stopRequested = attempt.stopRequested;
          task.cancelRequested ||= attempt.task.cancelRequested;
          const outcome = attemptOutcome(task, result, this.stopping || attempt.stopRequested, Date.now());
          outcome.patch.executor_losses = task.executorLosses > 0 ? task.executorLosses : null;
          if (outcome.next === 'finish') {
            await this.finish(query, task, outcome.state, outcome.patch);
          } else {
            applyPatch(task.stored, { ...outcome.patch, state: outcome.next === 'requeue' ? 'QUEUED' : 'PENDING' });
            await saveTask(query, task, null);
          }
          return outcome.next === 'retry';
        });
        if (ended) this.planPromotion();
        return;
      } catch (error) {
        // The task is gone (removed, or forgotten once it ended elsewhere): its output has nowhere to go.
        if ((error as { code?: string }).code === FOREIGN_KEY_VIOLATION) return;
        // Tried again until it is written: while this daemon holds its lease, nobody else will settle the task.
        if (!isUnreachable(error) && failures++ % 10 === 0) {
          this.options.log(`task ${attempt.task.id}: its result could not be recorded (trying again): ${(error as Error).message}`);
        }
        if (this.stopping && this.stopGivenUp) return; // the lease runs out and the cluster runs it again
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /** Claimed tasks this daemon will not start after all: back to QUEUED, the claim undone. */
  private async handBack(claimed: { id: string; claim: string }[]): Promise<void> {
    await this.db
      .transaction(async (query) => {
        for (const { id, claim } of claimed) {
          const [row] = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1 FOR NO KEY UPDATE`, [id]);
          if (!row || row.claim !== claim || row.state !== 'RUNNING') continue;
          const now = taskOf(row);
          if (now.cancelRequested) {
            await this.finish(query, now, 'CANCELED', { ...notStarted(now), started_at: null, error: taskError.CANCELED('before it started') });
            continue;
          }
          applyPatch(now.stored, { ...notStarted(now), state: 'QUEUED', started_at: null });
          await saveTask(query, now, null);
        }
      })
      .catch(() => {
        // Not handed back: the upkeep tries again (and the lease's end settles them if this daemon is lost).
        for (const { claim } of claimed) this.inDoubt.set(claim, Date.now());
      });
  }

  /** Copies what running attempts wrote since the last copy to the store. */
  private copyOutputs(): void {
    const query = this.db.query.bind(this.db) as Query;
    for (const { upload, ended, task } of this.running.values()) {
      const cap = task.spec.max_output_bytes;
      if (!ended) void upload.copy(query, { stdout: cap, stderr: cap }).catch(() => undefined);
    }
  }

  /** Stops every attempt here: they run again elsewhere. `now`: SIGKILL at once, as a fence must, not after the kill grace. */
  private stopAttempts(now: boolean): void {
    for (const attempt of this.running.values()) {
      if (attempt.ended) continue;
      attempt.stopRequested = true;
      attempt.stop.request();
    }
    if (now) this.options.killAll();
  }

  // ---- notices and timers ----

  private notified(channel: string, payload: string): void {
    const space = payload.indexOf(' ');
    if (channel === 'tm_change') {
      const state = payload.slice(0, space);
      const id = payload.slice(space + 1);
      if (state === 'QUEUED') this.poke();
      else if (state === 'PENDING') this.planPromotion();
      else if (state === 'REMOVED') this.told.delete(id);
      this.wake(id, state === 'REMOVED' || isTerminal(state as TaskState));
      this.publishSoon(id);
    } else if (channel === 'tm_kill') {
      if (payload.slice(0, space) === this.node) this.cancelHere(payload.slice(space + 1));
    } else if (channel === 'tm_groups') {
      this.poke();
    } else if (channel === 'tm_output') {
      this.wake(payload, false);
    }
  }

  /** Subscribers get the latest record of each changed task, read in one query per turn. */
  private publishSoon(id: string): void {
    if (this.listenerCount('change') === 0) {
      this.told.clear(); // a later subscriber hears only of later changes
      return;
    }
    this.changed.add(id);
    if (this.publishing) return;
    this.publishing = true;
    // One read at a time: a later one never overtakes an earlier one and delivers the older state last.
    setImmediate(async () => {
      while (this.changed.size > 0) {
        const ids = [...this.changed];
        this.changed.clear();
        const rows = await this.db
          .query<TaskRow & { version: string }>(`SELECT xmin::text AS version, ${TASK_COLUMNS} FROM tm_tasks WHERE id = ANY ($1) ORDER BY seq`, [ids])
          .catch(() => []);
        for (const row of rows) {
          if (this.told.get(row.id) === row.version) continue;
          this.told.set(row.id, row.version);
          this.emit('change', taskOf(row));
        }
      }
      this.publishing = false;
    });
  }

  /** After notices may have been missed: every task not finished, and those finished in the last minute, to subscribers again. */
  private async republish(): Promise<void> {
    const rows = await this.db
      .query<{ id: string }>("SELECT id FROM tm_tasks WHERE finished_at IS NULL OR finished_at > now() - interval '1 minute'")
      .catch(() => []);
    for (const { id } of rows) this.publishSoon(id);
  }

  /** Makes due PENDING tasks QUEUED at the next start time (looked at again at least every few seconds). */
  private planPromotion(): void {
    if (this.stopping) return;
    void this.db
      .query<{ next: string | null }>("SELECT min(ready_at)::text AS next FROM tm_tasks WHERE state = 'PENDING'")
      .then(
        ([row]) => (row?.next == null ? Date.now() + PROMOTE_CAP_MS : Number(row.next)),
        () => Date.now() + PROMOTE_CAP_MS, // the store away: looked at again a while later
      )
      .then((next) => {
        if (this.stopping) return;
        clearTimeout(this.promoteTimer);
        this.promoteTimer = setTimeout(() => void this.promote(), Math.min(Math.max(0, next - Date.now()), PROMOTE_CAP_MS));
      });
  }

  private async promote(): Promise<void> {
    if (this.stopping) return;
    await this.db.query(PROMOTE, [Date.now()]).catch(() => undefined);
    this.planPromotion();
  }

  /** Now and then: other daemons' run-out leases, cancels whose notice was missed, retention, and a claim in case a notice was. */
  private async tick(): Promise<void> {
    if (this.stopping) return;
    try {
      await this.db.transaction(async (query) => {
        const dead = await query<{ name: string }>('SELECT name FROM tm_nodes WHERE lease_until < now() FOR UPDATE SKIP LOCKED');
        await this.rescue(
          query,
          dead.map((row) => row.name),
        );
      });
      const mine = await this.db.query<{ id: string; claim: string; cancel_requested: boolean }>(
        "SELECT id, claim, cancel_requested FROM tm_tasks WHERE state = 'RUNNING' AND node = $1",
        [this.node],
      );
      for (const { id, cancel_requested } of mine) if (cancel_requested) this.cancelHere(id);
      // Claimed by a transaction whose commit went unheard (the store went away as it answered): no attempt here runs them.
      const unheard = mine.filter(({ claim }) => this.inDoubt.has(claim));
      if (unheard.length > 0) await this.handBack(unheard);
      for (const [claim, since] of this.inDoubt) if (Date.now() - since > IN_DOUBT_MS) this.inDoubt.delete(claim);
      // Fan-in: dependencies that completed at the same moment in two transactions each saw the other running.
      await this.db.query(PROMOTE, [Date.now()]);
      await this.db.query(
        `DELETE FROM tm_tasks WHERE finished_at IS NOT NULL
           AND id IN (SELECT id FROM tm_tasks WHERE finished_at IS NOT NULL ORDER BY finished_at DESC OFFSET $1 LIMIT 1000)`,
        [this.options.keepFinished],
      );
    } catch (error) {
      if (!isUnreachable(error)) this.options.log(`cluster upkeep failed: ${(error as Error).message}`);
    }
    this.poke();
  }

  // ---- follow ----

  /** The task's output as it is written (from the store, wherever it runs), until it is terminal. */
  async follow(task: Task, gone: AbortSignal, send: (stream: Stream, data: string) => Promise<boolean>): Promise<Task> {
    let claim: string | undefined;
    let offsets: Record<Stream, number> = { stdout: 0, stderr: 0 };
    let decoders: Record<Stream, StringDecoder> | undefined;
    const query = this.db.query.bind(this.db) as Query;
    /** Sends what the store holds past what was sent; false once the reader is gone. */
    const readOn = async () => {
      if (!claim || !decoders) return true;
      for (const stream of STREAMS) {
        for (const chunk of await readChunks(query, task.id, claim, stream, offsets[stream])) {
          offsets[stream] += chunk.length;
          const text = decoders[stream].write(chunk);
          if (text !== '' && !(await send(stream, text))) return false;
        }
      }
      return true;
    };
    const flush = async () => {
      for (const stream of STREAMS) {
        const text = decoders?.[stream].end() ?? '';
        if (text !== '' && !(await send(stream, text))) return false;
      }
      return true;
    };
    let last = task;
    while (!gone.aborted) {
      const next = this.nextChange(task.id, true, undefined, gone);
      try {
        const [row] = await this.db.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1`, [task.id]);
        if (!row) throw requestError.NOT_FOUND(task.id);
        last = taskOf(row);
        const terminal = isTerminal(last.state);
        if (last.stored.output !== claim) {
          // The earlier attempt's output is whole: what is left of it goes first.
          if (!(await readOn()) || !(await flush())) return last;
          claim = last.stored.output;
          offsets = { stdout: 0, stderr: 0 };
          decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
        }
        if (!(await readOn())) return last;
        if (terminal) {
          next.cancel();
          await flush();
          return last;
        }
      } catch (error) {
        if (!isUnreachable(error)) {
          next.cancel();
          throw error;
        }
      }
      await next.happened;
    }
    return last;
  }

  // ---- stopping ----

  private stopGivenUp = false;
  /** aborted when a stop begins: a result held back as a possible stop signal is judged then */
  private readonly stopBegun = new AbortController();
  private endGraceNow: () => void = () => undefined;

  /** Ends the grace period of a stop now. */
  endGrace(): void {
    this.endGraceNow();
  }

  /**
   * Starts nothing more; running tasks get `graceMs`, then are killed and
   * handed back (QUEUED, recorded INTERRUPTED) for the other daemons, and
   * the name is given back.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.stopBegun.abort();
    clearInterval(this.ticker);
    clearInterval(this.copier);
    clearTimeout(this.promoteTimer);
    await this.dispatched;
    const all = Promise.all(this.attempts);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      all,
      new Promise<void>((resolve) => {
        this.endGraceNow = resolve;
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
    this.stopAttempts(false);
    // A store that does not come back in time: the lease runs out and the cluster runs these again.
    const patience = setTimeout(() => (this.stopGivenUp = true), this.patienceMs);
    while (this.attempts.size > 0) await Promise.all(this.attempts);
    clearTimeout(patience);
    await this.lease?.release().catch(() => undefined);
    await this.leaseDb?.close().catch(() => undefined);
    await this.listener.close();
  }
}
