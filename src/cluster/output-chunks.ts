import { open } from 'node:fs/promises';
import type { OutputPaths } from '../executor/index.js';
import type { Query } from './database.js';

export const STREAMS = ['stdout', 'stderr'] as const;
export type Stream = (typeof STREAMS)[number];
/** Streams are numbered in tm_output. */
export const STREAM_NUMBER: Record<Stream, number> = { stdout: 1, stderr: 2 };

/** The most one row of tm_output holds. */
const CHUNK_BYTES = 256 * 1024;

/**
 * What a running attempt has written to its local files and the store does
 * not hold yet, copied there as it comes: so that `follow`, `wait` and
 * `status` on any daemon see it, and it outlives this host.
 */
export class OutputUpload {
  private readonly copied: Record<Stream, number> = { stdout: 0, stderr: 0 };
  private busy: Promise<void> = Promise.resolve();

  constructor(
    readonly taskId: string,
    readonly claim: string,
    readonly paths: OutputPaths,
  ) {}

  /** Copies what is new, up to `limit` bytes of each stream (what the attempt keeps); one copy at a time. */
  copy(query: Query, limit: Record<Stream, number | undefined> = { stdout: undefined, stderr: undefined }): Promise<void> {
    // A copy that failed (the store away) leaves its bytes to the next one.
    this.busy = this.busy.catch(() => undefined).then(() => this.copyNow(query, limit));
    return this.busy;
  }

  private async copyNow(query: Query, limit: Record<Stream, number | undefined>): Promise<void> {
    for (const stream of STREAMS) {
      const file = await open(this.paths[stream], 'r').catch(() => undefined);
      if (!file) continue; // not made yet: nothing written
      try {
        const end = Math.min((await file.stat()).size, limit[stream] ?? Number.POSITIVE_INFINITY);
        while (this.copied[stream] < end) {
          const buffer = Buffer.alloc(Math.min(CHUNK_BYTES, end - this.copied[stream]));
          const { bytesRead } = await file.read(buffer, 0, buffer.length, this.copied[stream]);
          if (bytesRead === 0) break;
          await query('INSERT INTO tm_output (task_id, claim, stream, pos, data) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
            this.taskId,
            this.claim,
            STREAM_NUMBER[stream],
            this.copied[stream],
            buffer.subarray(0, bytesRead),
          ]);
          this.copied[stream] += bytesRead;
        }
      } finally {
        await file.close();
      }
    }
  }
}

/** The chunks of one attempt's stream from byte `from` on, in order. */
export async function readChunks(query: Query, taskId: string, claim: string, stream: Stream, from = 0): Promise<Buffer[]> {
  const rows = await query<{ data: Buffer }>('SELECT data FROM tm_output WHERE task_id = $1 AND claim = $2 AND stream = $3 AND pos >= $4 ORDER BY pos', [
    taskId,
    claim,
    STREAM_NUMBER[stream],
    from,
  ]);
  return rows.map((row) => row.data);
}
