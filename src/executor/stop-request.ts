/**
 * Asks one attempt to stop (a cancel, the daemon's stop): what an
 * AbortSignal would do for it, without an EventTarget made for every task
 * that runs.
 */
export class StopRequest {
  private asked = false;
  private listener: (() => void) | undefined;

  get requested(): boolean {
    return this.asked;
  }

  /** Asks for the stop; the listener is told once. */
  request(): void {
    if (this.asked) return;
    this.asked = true;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  /** Whoever runs the attempt: `listener` is called when a stop is asked for (at once if it was); undefined forgets it. */
  listen(listener: (() => void) | undefined): void {
    if (this.asked) {
      listener?.();
      return;
    }
    this.listener = listener;
  }
}
