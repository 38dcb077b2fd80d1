import { Heap } from './heap.js';

const LONGEST_TIMER_MS = 2 ** 31 - 1;

interface Entry<T> {
  at: number;
  item: T;
}

/**
 * Many deadlines behind one Node timer, armed for the earliest. Waiting
 * entries cost memory only; removal is lazy (the callback decides whether an
 * entry still matters), which keeps every operation O(log n).
 */
export class TimerQueue<T> {
  private readonly heap = new Heap<Entry<T>>((a, b) => a.at < b.at);
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Infinity;

  constructor(private readonly onDue: (item: T) => void) {}

  get size(): number {
    return this.heap.size;
  }

  add(at: number, item: T): void {
    this.heap.push({ at, item });
    if (at < this.armedFor) this.arm();
  }

  /** Drops the entries for which `keep` is false (lazy removal leaves them until they fall due). */
  prune(keep: (item: T) => boolean): void {
    this.heap.filter((entry) => keep(entry.item));
    if (this.armedFor !== -Infinity) this.arm();
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = -Infinity; // never arm again
  }

  private arm(): void {
    clearTimeout(this.timer);
    const next = this.heap.peek();
    if (!next) {
      this.armedFor = Infinity;
      return;
    }
    this.armedFor = next.at;
    // Timers longer than ~24.8 days overflow and fire at once: wait in steps instead.
    const wait = Math.min(Math.max(next.at - Date.now(), 0), LONGEST_TIMER_MS);
    this.timer = setTimeout(() => this.fire(), wait);
  }

  private fire(): void {
    const now = Date.now();
    while (this.heap.size > 0 && this.heap.peek()!.at <= now) this.onDue(this.heap.pop()!.item);
    this.arm();
  }
}
