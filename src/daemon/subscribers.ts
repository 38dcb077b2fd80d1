import type { Journal } from '../journal/index.js';
import { encodeLine, type TaskRecord } from '../protocol/index.js';
import type { Task, TaskService } from '../scheduler/index.js';

export interface Subscriber {
  /** ids to follow; all tasks when absent */
  ids: ReadonlySet<string> | undefined;
  deliver(change: TaskChange): void;
  /** told of a task a client removed, for an event stream (the line protocol's subscribe tells only changes) */
  removed?(removal: Removal): void;
}

/** A removed task: its id, and when it was created (a later task may take the id). */
export interface Removal {
  id: string;
  created_at: string;
}

/** A task's new record, and the line-protocol event that tells it, made once for every subscriber. */
export class TaskChange {
  private text: string | undefined;
  constructor(readonly record: TaskRecord) {}

  get line(): string {
    this.text ??= encodeLine({ event: 'task', task: this.record });
    return this.text;
  }
}

/**
 * Fans task changes out to subscribed connections and event streams. Each
 * change is serialized once, and sent only after the journal has it, like every other report.
 */
export class Subscribers {
  private readonly all = new Set<Subscriber>();
  private readonly listener = (task: Task) => this.publish(task);

  constructor(
    private readonly scheduler: TaskService,
    private readonly journal: Pick<Journal, 'flushed'>,
  ) {}

  /** Listens to the scheduler only while someone is subscribed: a cluster's scheduler reads every changed task for its listeners. */
  add(subscriber: Subscriber): () => void {
    if (this.all.size === 0) this.scheduler.on('change', this.listener);
    this.all.add(subscriber);
    return () => {
      if (this.all.delete(subscriber) && this.all.size === 0) this.scheduler.off('change', this.listener);
    };
  }

  /** A task a client of this daemon removed: the subscribers that asked hear of it once the journal has it. */
  removed(removal: Removal): void {
    this.tell(removal.id, () => (s) => s.removed?.(removal));
  }

  private publish(task: Task): void {
    this.tell(task.id, () => {
      const change = new TaskChange(task.record()); // as it is now, not as it may be once the journal has it
      return (s) => s.deliver(change);
    });
  }

  /**
   * Tells the subscribers that follow task `id`, once the journal has what they are told; `prepare`
   * runs now, and only when someone follows it.
   */
  private tell(id: string, prepare: () => (subscriber: Subscriber) => void): void {
    const targets = [...this.all].filter((s) => s.ids === undefined || s.ids.has(id));
    if (targets.length === 0) return;
    const send = prepare();
    void this.journal.flushed().then(
      () => {
        for (const target of targets) send(target);
      },
      () => undefined, // a failing journal stops the daemon; nothing to report
    );
  }
}
