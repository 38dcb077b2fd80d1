import { open, type FileHandle } from 'node:fs/promises';

/** Bytes waiting to be written past which the task's pipe is no longer read (the task then waits on its writes). */
const BACKLOG_BYTES = 1024 * 1024;

/**
 * One stream of an attempt's output, written to its file as it comes: the
 * first `limit` bytes are kept, the rest only counted. The file is created
 * on the first byte, so a quiet task costs no file at all. A write that
 * fails (a full disk) ends what is kept there: the output is then marked
 * truncated, and the task itself goes on.
 */
export class OutputFile {
  /** bytes in the file */
  written = 0;
  private accepted = 0;
  private dropped = 0;
  private file: Promise<FileHandle> | undefined;
  private writing: Promise<void> = Promise.resolve();
  private backlog = 0;
  private failed = false;

  /** `pause(true)` asks the source to stop for a while, `pause(false)` to go on. */
  constructor(
    readonly path: string,
    private readonly limit: number,
    private readonly pause: (paused: boolean) => void,
  ) {}

  get truncated(): boolean {
    return this.dropped > 0 || this.failed;
  }

  push(chunk: Buffer): void {
    const room = this.limit - this.accepted;
    const piece = room <= 0 ? undefined : chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.dropped += chunk.length - (piece?.length ?? 0);
    if (!piece || this.failed) return;
    this.accepted += piece.length;
    this.file ??= open(this.path, 'w', 0o600);
    this.backlog += piece.length;
    if (this.backlog > BACKLOG_BYTES && this.backlog - piece.length <= BACKLOG_BYTES) this.pause(true);
    this.writing = this.writing.then(() => this.write(piece));
  }

  /** Once the stream has ended: everything written, and synced to disk when `sync`. */
  async finish(sync: boolean): Promise<void> {
    await this.writing;
    if (!this.file) return;
    const file = await this.file.catch(() => undefined);
    if (!file) return;
    try {
      if (sync && !this.failed) await file.datasync();
    } catch {
      this.failed = true;
    } finally {
      await file.close().catch(() => undefined);
    }
  }

  private async write(piece: Buffer): Promise<void> {
    try {
      if (this.failed) return;
      const file = await this.file!;
      for (let offset = 0; offset < piece.length; ) {
        const { bytesWritten } = await file.write(piece, offset, piece.length - offset);
        if (bytesWritten === 0) throw new Error('no space left');
        offset += bytesWritten;
        this.written += bytesWritten;
      }
    } catch {
      this.failed = true; // what is in the file stays; nothing after it is kept
    } finally {
      this.backlog -= piece.length;
      if (this.backlog <= BACKLOG_BYTES && this.backlog + piece.length > BACKLOG_BYTES) this.pause(false);
    }
  }
}
