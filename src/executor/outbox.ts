/**
 * Messages to another process, sent as one array per turn of the event loop:
 * a burst of starts and results costs one IPC write and one JSON document
 * each way, not one per message.
 */
export class Outbox<T> {
  private queue: T[] = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly send: (batch: T[]) => void) {}

  push(message: T): void {
    this.queue.push(message);
    this.immediate ??= setImmediate(() => this.flush());
  }

  /**
   * Queues a message that can wait up to `ms` for company: it goes with the
   * next batch, or alone once `ms` have passed.
   */
  pushLater(message: T, ms: number): void {
    this.queue.push(message);
    this.timer ??= setTimeout(() => this.flush(), ms);
  }

  /** Takes back the queued messages `unsent` is true for (queued messages are few: a turn's worth). */
  withdraw(unsent: (message: T) => boolean): void {
    this.queue = this.queue.filter((message) => !unsent(message));
  }

  /** Sends what is queued now. */
  flush(): void {
    clearImmediate(this.immediate);
    clearTimeout(this.timer);
    this.immediate = undefined;
    this.timer = undefined;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.send(batch);
  }
}
