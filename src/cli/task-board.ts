import { isTerminal, type TaskRecord, type TaskState } from '../protocol/index.js';

/** The states of tasks that are not finished, in the order `watch` shows them. */
export const LIVE_STATES = ['RUNNING', 'QUEUED', 'PENDING'] as const satisfies readonly TaskState[];

/** A `list` request: tasks in a state, after a task id (undefined: from the start). */
export type ListPage = (filter: { state: TaskState; limit: number; after?: string | undefined }) => Promise<TaskRecord[]>;

/** Called when a task is new to the board or in another state than the board had. */
export type ChangeListener = (task: TaskRecord) => void;

const PAGE_SIZE = 1000;

/**
 * The unfinished tasks as last heard of: fed by the `subscribe` stream and
 * filled in by `list`. Finished tasks leave the board.
 */
export class TaskBoard {
  private readonly live = new Map<string, TaskRecord>();
  /** during a sync: the ids whose record is at least as new as the sync */
  private touched: Set<string> | undefined;

  constructor(private readonly onChange: ChangeListener) {}

  /** Takes a newer record of a task. */
  update(task: TaskRecord): void {
    const before = this.live.get(task.id)?.state;
    this.touched?.add(task.id);
    if (isTerminal(task.state)) this.live.delete(task.id);
    else this.live.set(task.id, task);
    if (before !== task.state) this.onChange(task);
  }

  /**
   * Lists every unfinished task, for a start or after the daemon dropped
   * events. Events keep arriving meanwhile; they are never older than a page
   * that came before them, so each page is taken as it comes and later
   * events win. A task that was on the board before, is in no page and had
   * no event since has finished unseen, and leaves.
   */
  async sync(listPage: ListPage): Promise<void> {
    this.touched = new Set();
    try {
      for (const state of LIVE_STATES) {
        let after: string | undefined;
        for (;;) {
          const page = await listPage({ state, limit: PAGE_SIZE, after });
          page.forEach((task) => {
            this.update(task);
          });
          if (page.length < PAGE_SIZE) break;
          after = page.at(-1)!.id;
        }
      }
      for (const id of this.live.keys()) if (!this.touched.has(id)) this.live.delete(id);
    } finally {
      this.touched = undefined;
    }
  }

  isIdle(): boolean {
    return this.live.size === 0;
  }

  /** Running tasks first (longest running on top), then queued ones in the order they will start, then pending ones. */
  tasks(): TaskRecord[] {
    const rank = (task: TaskRecord) => LIVE_STATES.indexOf(task.state as (typeof LIVE_STATES)[number]);
    return [...this.live.values()].sort((a, b) =>
      rank(a) - rank(b)
      || (a.state === 'QUEUED' ? b.priority - a.priority : 0)
      || (a.started_at ?? a.created_at).localeCompare(b.started_at ?? b.created_at));
  }
}
