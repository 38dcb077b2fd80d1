import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Characters of lines written at once, at most. */
const WRITE_CHARS = 16 * 1024 * 1024;

interface Waiter {
  upTo: number;
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * An append-only file with group commit: lines appended while a write is in
 * flight go out together in the next write and share one sync.
 */
export class LogWriter {
  private pending: string[] = [];
  private appended = 0;
  private written = 0;
  private waiters: Waiter[] = [];
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
    size: number,
  ) {
    this.size = size;
  }

  /**
   * `sync`: opened with O_DSYNC, so that a write returns once its lines are
   * on disk, as write plus fdatasync would, in one call on the thread pool.
   */
  static async open(path: string, sync: boolean): Promise<LogWriter> {
    const { O_WRONLY, O_APPEND, O_CREAT, O_DSYNC } = constants;
    const file = await open(path, O_WRONLY | O_APPEND | O_CREAT | (sync ? O_DSYNC : 0), 0o600);
    const { size } = await file.stat();
    return new LogWriter(file, path, size);
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

  /**
   * Resolves once every line appended so far is written (and synced, when
   * syncing). Callers with nothing appended between them share one promise:
   * a burst of starts and answers waits on one, not one each.
   */
  flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.written === this.appended) return Promise.resolve();
    const last = this.waiters.at(-1);
    if (last?.upTo === this.appended) return last.promise;
    let resolve!: () => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<void>((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    this.waiters.push({ upTo: this.appended, promise, resolve, reject });
    return promise;
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
