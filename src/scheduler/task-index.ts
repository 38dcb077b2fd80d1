import { TASK_STATES, type TaskState } from '../protocol/index.js';
import { SortedList } from './sorted-list.js';
import type { Task } from './task.js';

const bySeq = (task: Task) => task.seq;

/**
 * Tasks in submission order, all of them and those of each state, so that a
 * page of `list` costs the page and a binary search, not a scan of every task.
 */
export class TaskIndex {
  private readonly all = new SortedList<Task>(bySeq);
  private readonly byState = Object.fromEntries(TASK_STATES.map((state) => [state, new SortedList<Task>(bySeq)])) as Record<
    TaskState,
    SortedList<Task>
  >;

  add(task: Task): void {
    this.all.insert(task);
    this.byState[task.state].insert(task);
  }

  remove(task: Task): void {
    this.all.delete(task);
    this.byState[task.state].delete(task);
  }

  /** Call while the task is still in its old state. */
  move(task: Task, to: TaskState): void {
    this.byState[task.state].delete(task);
    this.byState[to].insert(task);
  }

  /**
   * Up to `limit` tasks of `state` (of any state when undefined) submitted
   * after the task numbered `fromSeq` (from the first when undefined), and
   * how many there are in all; with `newest`, those submitted before it
   * (from the last), newest first.
   */
  page(state: TaskState | undefined, fromSeq: number | undefined, limit: number, newest = false): { tasks: Task[]; total: number } {
    const matching = state === undefined ? this.all : this.byState[state];
    if (newest) return { tasks: matching.before(fromSeq, limit), total: matching.countBefore(fromSeq) };
    return { tasks: matching.after(fromSeq, limit), total: matching.countAfter(fromSeq) };
  }
}
