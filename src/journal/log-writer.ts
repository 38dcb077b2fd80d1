import { open, type FileHandle } from 'node:fs/promises';

/** Characters of lines written at once, at most. */
const WRITE_CHARS = 16 * 1024 * 1024;

/**
 * An append-only file with group commit: lines appended while a write is in
 * flight go out together in the next write and share one fdatasync.
 */
export class LogWriter {
  private pending: string[] = [];
  private appended = 0;
  private written = 0;
  private waiters: { upTo: number; resolve: () => void; reject: (error: Error) => void }[] = [];
  private writing: Promise<void> | undefined;
  private failure: Error | undefined;
  /** what must be written before this file's first line (the log it replaces) */
  private predecessor: Promise<unknown> | undefined;
  /** called once if a write or sync fails: from then on nothing appended can be promised */
  onFailure: (error: Error) => void = () => undefined;
  /** bytes in the file */
  size: number;

  private constructor(
    private readonly file: FileHandle,
    readonly path: string,
    private readonly sync: boolean,
    size: number,
  ) {
    this.size = size;
  }

  static async open(path: string, sync: boolean): Promise<LogWriter> {
    const file = await open(path, 'a', 0o600);
    const { size } = await file.stat();
    return new LogWriter(file, path, sync, size);
  }

  append(line: string): void {
    if (this.failure) return; // flushed() rejects: nothing appended now is reported as done
    this.pending.push(line);
    this.appended++;
    this.writing ??= this.drain();
  }

  /**
   * Writes nothing until `previous` has settled. A new log follows the one it
   * replaces: were a change to reach the new file before the change that
   * created its task reached the old one, a crash in between would leave a
   * journal that recovery rightly refuses.
   */
  follow(previous: Promise<unknown>): void {
    this.predecessor = previous.catch(() => undefined);
  }

  /** Resolves once every line appended so far is written (and synced, when syncing). */
  flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.written === this.appended) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ upTo: this.appended, resolve, reject }));
  }

  async close(): Promise<void> {
    await this.flushed().catch(() => undefined);
    await this.file.close();
  }

  /**
   * The oldest pending lines, up to WRITE_CHARS of them (one at least): all
   * that piled up during a slow sync, joined, could pass the longest string
   * there can be.
   */
  private takeBatch(): string[] {
    let count = 0;
    let chars = 0;
    for (const line of this.pending) {
      if (count > 0 && chars + line.length > WRITE_CHARS) break;
      chars += line.length;
      count++;
    }
    return this.pending.splice(0, count);
  }

  private async drain(): Promise<void> {
    // Let the lines of this turn of the event loop join the batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    await this.predecessor;
    this.predecessor = undefined;
    try {
      while (this.pending.length > 0) {
        const lines = this.takeBatch();
        const batch = Buffer.from(lines.join(''));
        const upTo = this.written + lines.length;
        // A write may take fewer bytes than given (a file system filling up): write the rest, or fail.
        for (let offset = 0; offset < batch.length; ) {
          const { bytesWritten } = await this.file.write(batch, offset, batch.length - offset);
          if (bytesWritten === 0) throw new Error('no space left to write');
          offset += bytesWritten;
        }
        if (this.sync) await this.file.datasync();
        this.size += batch.length;
        this.written = upTo;
        this.waiters = this.waiters.filter((waiter) => {
          if (waiter.upTo > upTo) return true;
          waiter.resolve();
          return false;
        });
      }
    } catch (error) {
      this.failure = new Error(`writing the journal ${this.path} failed: ${(error as Error).message}`);
      for (const waiter of this.waiters) waiter.reject(this.failure);
      this.waiters = [];
      this.onFailure(this.failure);
    } finally {
      this.writing = undefined;
    }
  }
}
