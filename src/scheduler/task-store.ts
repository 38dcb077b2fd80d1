import { TASK_STATES, type Counts, type TaskState } from '../protocol/index.js';
import type { StoredGroup } from './group.js';
import { applyPatch } from './stored-task-rules.js';
import { TaskIndex } from './task-index.js';
import type { Task, TaskPatch } from './task.js';

/** Where the store writes every change; reports go out only after `flushed()`. */
export interface TaskJournal {
  put(id: string, patch: TaskPatch): void;
  drop(id: string): void;
  /** a group's settings change: each field given is set */
  putGroup(name: string, patch: StoredGroup): void;
  flushed(): Promise<void>;
}

/**
 * Where tasks are kept. The scheduler's rules read and change tasks only
 * through it: a change is made at once (so requests are registered in the
 * order they are read) and is durable once `flushed()` resolves. The
 * embedded store keeps tasks in memory and writes each change to the
 * journal; a store shared by several daemons implements the same interface
 * and passes the same conformance tests (test/store-conformance.ts).
 */
export interface TaskStore {
  get(id: string): Task | undefined;
  /** a new task, recorded whole */
  add(task: Task): void;
  /** a task read back at start: kept, not recorded again */
  register(task: Task): void;
  /** the one place a task changes; a field it sets to null is cleared */
  change(task: Task, patch: TaskPatch): void;
  /** forgets a task */
  remove(task: Task): void;
  /** the groups that have settings, by name */
  groups(): ReadonlyMap<string, Readonly<StoredGroup>>;
  /** the one place a group's settings change (or the group is made) */
  changeGroup(name: string, patch: StoredGroup): void;
  /** a group read back at start: kept, not recorded again */
  registerGroup(name: string, group: StoredGroup): void;
  /** how many tasks are in each state */
  counts(): Counts;
  /**
   * Up to `limit` tasks of `state` (any when undefined) past the task
   * numbered `fromSeq` (from the first when undefined), and how many there
   * are: submitted after it, or with `newest`, before it, newest first.
   */
  page(state: TaskState | undefined, fromSeq: number | undefined, limit: number, newest?: boolean): { tasks: Task[]; total: number };
  /** every task, in no particular order */
  all(): IterableIterator<Task>;
  /** resolves once every change made so far is durable; rejects if it cannot be */
  flushed(): Promise<void>;
}

/** Every state, counted 0. */
export const emptyCounts = (): Counts => Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Counts;

/** The embedded store: tasks in memory, indexed for `list`, every change appended to the journal. */
export class MemoryTaskStore implements TaskStore {
  private readonly tasks = new Map<string, Task>();
  private readonly index = new TaskIndex();
  private readonly stateCounts = emptyCounts();
  private readonly groupSettings = new Map<string, StoredGroup>();

  constructor(private readonly journal: TaskJournal) {}

  get(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  add(task: Task): void {
    this.register(task);
    this.journal.put(task.id, task.stored);
  }

  /** A task read from the journal: registered, not written again. */
  register(task: Task): void {
    this.tasks.set(task.id, task);
    this.stateCounts[task.state]++;
    this.index.add(task);
  }

  change(task: Task, patch: TaskPatch): void {
    const state = patch.state;
    if (state !== undefined && state !== task.state) {
      this.stateCounts[task.state]--;
      this.stateCounts[state]++;
      this.index.move(task, state);
    }
    applyPatch(task.stored, patch);
    this.journal.put(task.id, patch);
  }

  remove(task: Task): void {
    this.tasks.delete(task.id);
    this.stateCounts[task.state]--;
    this.index.remove(task);
    this.journal.drop(task.id);
  }

  groups(): ReadonlyMap<string, Readonly<StoredGroup>> {
    return this.groupSettings;
  }

  changeGroup(name: string, patch: StoredGroup): void {
    this.groupSettings.set(name, { ...this.groupSettings.get(name), ...patch });
    this.journal.putGroup(name, patch);
  }

  registerGroup(name: string, group: StoredGroup): void {
    this.groupSettings.set(name, { ...group });
  }

  counts(): Counts {
    return { ...this.stateCounts };
  }

  page(state: TaskState | undefined, fromSeq: number | undefined, limit: number, newest = false): { tasks: Task[]; total: number } {
    return this.index.page(state, fromSeq, limit, newest);
  }

  all(): IterableIterator<Task> {
    return this.tasks.values();
  }

  flushed(): Promise<void> {
    return this.journal.flushed();
  }
}
