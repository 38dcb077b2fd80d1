/**
 * Messages to another process, sent as one array per turn of the event loop:
 * a burst of starts and results costs one IPC write and one JSON document
 * each way, not one per message.
 */
export class Outbox<T> {
  private queue: T[] = [];

  constructor(private readonly send: (batch: T[]) => void) {}

  push(message: T): void {
    if (this.queue.push(message) === 1) setImmediate(() => this.flush());
  }

  /** Sends what is queued now (the immediate finds nothing left). */
  flush(): void {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    this.send(batch);
  }
}
