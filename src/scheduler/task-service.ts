import type { Counts, GroupInfo, NodeInfo, TaskEdit, TaskSpec, TaskState } from '../protocol/index.js';
import type { Task } from './task.js';

type MaybePromise<T> = T | Promise<T>;

export interface ListFilter {
  state?: TaskState | undefined;
  limit?: number | undefined;
  after?: string | undefined;
  order?: 'oldest' | 'newest' | undefined;
  group?: string | undefined;
}

/**
 * What the daemon's handlers ask of a scheduler, whichever store holds the
 * tasks: the embedded `Scheduler` answers at once from memory, the cluster's
 * asks PostgreSQL. A task handed back is the state when it was read; `wait`
 * and `cancel` hand back the task as it ended.
 */
export interface TaskService {
  get(id: string): MaybePromise<Task>;
  submit(spec: TaskSpec, id?: string): MaybePromise<{ task: Task; duplicate: boolean }>;
  wait(task: Task, timeoutMs?: number, signal?: AbortSignal): Promise<{ task: Task; waitedOut: boolean }>;
  list(filter: ListFilter): MaybePromise<{ tasks: Task[]; total: number }>;
  cancel(task: Task): Promise<Task>;
  remove(task: Task): MaybePromise<void>;
  restart(task: Task): MaybePromise<Task>;
  edit(task: Task, edit: TaskEdit): MaybePromise<Task>;
  groups(): MaybePromise<GroupInfo[]>;
  setGroup(name: string, concurrency: number): MaybePromise<GroupInfo>;
  setPaused(paused: boolean, name?: string): MaybePromise<GroupInfo[]>;
  countByState(): MaybePromise<{ counts: Counts; tasks: number }>;
  /** what this daemon may run at once, and runs now */
  readonly concurrency: { limit: number; running: number };
  /** the daemons of a cluster; absent for the embedded store */
  nodes?(): Promise<NodeInfo[]>;
  /** every change of a task, once it is durable */
  on(event: 'change', listener: (task: Task) => void): unknown;
  off(event: 'change', listener: (task: Task) => void): unknown;
}
