import { closeSync, constants, fdatasync, fstatSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import { promisify } from 'node:util';

const syncData = promisify(fdatasync);

/**
 * One stream of an attempt's output: the file the task's stdout (or stderr)
 * is, so the task writes straight to disk, as pueue and task-spooler have
 * their tasks do. Nothing of the output passes through this process: copying
 * it from a pipe cost twice the CPU per task of a task that prints nothing
 * (docs/performance.md).
 *
 * The cap is kept by cutting the file back to `limit` bytes whenever it has
 * grown past it: while the task runs (see `keepWithinLimit`), and once more
 * when it ends. The file is opened for appending, so what the task writes
 * after a cut lands past the limit and is cut in turn; the first `limit`
 * bytes are never touched.
 */
export class OutputFile {
  readonly fd: number;
  truncated = false;

  constructor(
    readonly path: string,
    private readonly limit: number,
  ) {
    // Emptied on opening: an attempt that never started may have left the name (and a file) to this one.
    this.fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_TRUNC, 0o600);
  }

  /** Cuts the file back to the limit if the task has written past it (an I/O error leaves it for the next look). */
  keepWithinLimit(): void {
    try {
      this.cut(fstatSync(this.fd).size);
    } catch {
      // the next look, or the one at the end, cuts it
    }
  }

  /** The bytes kept of a file of `size` bytes, cut back to them if it is longer. */
  private cut(size: number): number {
    if (size <= this.limit) return size;
    ftruncateSync(this.fd, this.limit);
    this.truncated = true;
    return this.limit;
  }

  /**
   * Once the task has ended: the bytes kept, synced to disk when `sync` (off
   * the event loop: other attempts go on). A stream the task left empty
   * leaves no file.
   */
  async finish(sync: boolean): Promise<number> {
    try {
      // A process that left the task's group may still be appending: what counts is the cap.
      const bytes = this.cut(fstatSync(this.fd).size);
      if (bytes === 0) unlinkSync(this.path);
      else if (sync) await syncData(this.fd);
      return bytes;
    } catch {
      // The task ran and its result stands; what its file holds is not known to be on disk.
      this.truncated = true;
      return 0;
    } finally {
      // At once: closing a file costs less than a trip through libuv's thread pool.
      try {
        closeSync(this.fd);
      } catch {
        // nothing to do: the result stands
      }
    }
  }

  /** The task never started: its file goes (or, failing that, at the daemon's next start, which removes unreferenced files). */
  discard(): void {
    try {
      closeSync(this.fd);
      unlinkSync(this.path);
    } catch {
      // left for the next start
    }
  }
}
