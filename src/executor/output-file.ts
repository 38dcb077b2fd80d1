import { close, fdatasync, openSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';

const syncData = promisify(fdatasync);
const closeFile = promisify(close);

/**
 * One stream of an attempt's output, written to its file as it comes: the
 * first `limit` bytes are kept, the rest only counted. The file is created
 * on the first byte, so a quiet task costs no file at all.
 *
 * Writes are synchronous, into the page cache: a chunk is written the moment
 * it is read from the pipe and nothing waits in memory. Queued asynchronous
 * writes let the executor process grow by the output in flight, and a
 * bigger process forks every later task more slowly (docs/performance.md).
 * A write that fails (a full disk) ends what is kept: the output is then
 * marked truncated, and the task itself goes on.
 */
export class OutputFile {
  /** bytes in the file */
  written = 0;
  private dropped = 0;
  private fd: number | undefined;
  private failed = false;

  constructor(
    readonly path: string,
    private readonly limit: number,
  ) {}

  get truncated(): boolean {
    return this.dropped > 0 || this.failed;
  }

  push(chunk: Buffer): void {
    const room = this.failed ? 0 : this.limit - this.written;
    const piece = room <= 0 ? undefined : chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.dropped += chunk.length - (piece?.length ?? 0);
    if (!piece) return;
    try {
      this.fd ??= openSync(this.path, 'w', 0o600);
      for (let offset = 0; offset < piece.length; ) {
        const written = writeSync(this.fd, piece, offset, piece.length - offset);
        if (written === 0) throw new Error('no space left');
        offset += written;
        this.written += written;
      }
    } catch {
      this.failed = true; // what is in the file stays; nothing after it is kept
    }
  }

  /** Once the stream has ended: synced to disk when `sync` (off the event loop: other attempts go on), and closed. */
  async finish(sync: boolean): Promise<void> {
    const fd = this.fd;
    if (fd === undefined) return;
    this.fd = undefined;
    try {
      if (sync && !this.failed) await syncData(fd);
    } catch {
      this.failed = true;
    } finally {
      await closeFile(fd).catch(() => undefined);
    }
  }
}
