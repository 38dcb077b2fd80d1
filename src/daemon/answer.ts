import { randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';

/** The most an answer hands the socket at once: bigger text goes out piece by piece, as the reader takes it. */
export const PIECE_BYTES = 64 * 1024;

/**
 * A value of an answer that is turned into JSON text only while the answer
 * is written, piece by piece: output read from its file, a long list of
 * records. An answer waiting for a slow reader holds these, not text.
 */
export abstract class Streamed {
  /** JSON text, in order */
  abstract pieces(): AsyncIterable<string>;
  /** Lets go of what it holds, whether or not it was written. */
  release(): void {}

  /** While an Answer serializes its message: the mark of its place. */
  toJSON(): string {
    if (!serializing) throw new Error('a Streamed value is serialized only by an Answer');
    return `${MARK}${serializing.push(this) - 1}\u0000`;
  }
}

/** Lets go of a value an answer will not hold after all (a stream not asked for): held, its files could never go. */
export function letGo(value: unknown): void {
  if (value instanceof Streamed) value.release();
}

/**
 * A wire value as an answer holds it before it is written: any text or list
 * in it may be a Streamed that writes that text or list when its turn comes.
 */
export type Deferred<T> = T extends string
  ? T | Streamed
  : T extends readonly (infer Item)[]
    ? Deferred<Item>[] | Streamed
    : T extends object
      ? { [K in keyof T]: Deferred<T[K]> }
      : T;

/** Output as a JSON string, read from its file; `bytes` undefined reads what is there (a running attempt), up to `limit`. */
export class OutputText extends Streamed {
  constructor(
    private readonly path: string,
    private readonly bytes: number | undefined,
    private readonly limit: number,
    private readonly unhold: () => void,
  ) {
    super();
  }

  override release(): void {
    this.unhold();
  }

  async *pieces(): AsyncIterable<string> {
    yield '"';
    const decoder = new StringDecoder('utf8');
    for await (const chunk of readChunks(this.path, 0, Math.min(this.bytes ?? this.limit, this.limit))) {
      yield escaped(decoder.write(chunk));
    }
    yield `${escaped(decoder.end())}"`;
  }
}

/**
 * Many records as a JSON array, serialized a batch at a time, the event loop
 * free for others in between. The records are made by whoever answers, at
 * once: made later, they could show a change the journal does not hold yet.
 */
export class RecordList extends Streamed {
  constructor(private readonly records: readonly unknown[]) {
    super();
  }

  async *pieces(): AsyncIterable<string> {
    yield '[';
    for (let at = 0; at < this.records.length; at += RECORDS_PER_PIECE) {
      if (at > 0) await new Promise((resolve) => setImmediate(resolve));
      const batch = JSON.stringify(this.records.slice(at, at + RECORDS_PER_PIECE));
      yield `${at > 0 ? ',' : ''}${batch.slice(1, -1)}`;
    }
    yield ']';
  }
}

const RECORDS_PER_PIECE = 200;

/** `text` as it stands between the quotes of a JSON string. */
const escaped = (text: string) => JSON.stringify(text).slice(1, -1);

/**
 * The bytes of a file from `offset`, up to `end` or its end if sooner;
 * nothing when there is no file (no output written, or removed meanwhile).
 * The file is open only while a piece is read, not while a slow reader
 * takes it: a connection's waiting answers hold no file descriptors.
 */
export async function* readChunks(path: string, offset: number, end: number): AsyncIterable<Buffer> {
  for (let at = offset; at < end; ) {
    const piece = await readPiece(path, at, Math.min(PIECE_BYTES, end - at));
    if (!piece || piece.length === 0) return;
    at += piece.length;
    yield piece;
  }
}

async function readPiece(path: string, at: number, length: number): Promise<Buffer | undefined> {
  let file: Awaited<ReturnType<typeof open>>;
  try {
    file = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const { bytesRead, buffer } = await file.read(Buffer.alloc(length), 0, length, at);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

/** A string in pieces of at most PIECE_BYTES, never cut between the two halves of a character (each piece is encoded alone). */
function* slices(text: string): Iterable<string> {
  for (let at = 0; at < text.length; ) {
    let end = Math.min(at + PIECE_BYTES, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    yield text.slice(at, end);
    at = end;
  }
}

/** Marks where a Streamed value goes in the serialized answer: no text a client sends can hold it. */
const MARK = `\u0000${randomUUID()}:`;
const MARKED = new RegExp(`${JSON.stringify(MARK).slice(1, -1).replaceAll('\\', '\\\\')}(\\d+)\\\\u0000`, 'g');

/** The Streamed values met by the serialization under way (toJSON, not a replacer: a replacer is called for every value). */
let serializing: Streamed[] | undefined;

/** One line to a client, serialized as it is written; its Streamed values are read then. */
export class Answer {
  private readonly parts: (string | Streamed)[] = [];
  private readonly streamed: Streamed[] = [];

  constructor(message: object) {
    const outer = serializing; // an Answer made while another serializes (none is, today) gives it back
    serializing = this.streamed;
    let text: string;
    try {
      text = JSON.stringify(message);
    } finally {
      serializing = outer;
    }
    if (this.streamed.length === 0) {
      this.parts.push(`${text}\n`);
      return;
    }
    let at = 0;
    for (const match of text.matchAll(MARKED)) {
      // The mark stands inside quotes of its own, which the Streamed value brings if it wants them.
      this.parts.push(text.slice(at, match.index - 1), this.streamed[Number(match[1])]!);
      at = match.index + match[0].length + 1;
    }
    this.parts.push(`${text.slice(at)}\n`);
  }

  async *pieces(): AsyncIterable<string> {
    for (const part of this.parts) {
      if (typeof part !== 'string') yield* part.pieces();
      else yield* slices(part);
    }
  }

  /** The whole text, when nothing in it is to be read while it is written. */
  whole(): string | undefined {
    return this.parts.length === 1 ? (this.parts[0] as string) : undefined;
  }

  release(): void {
    for (const value of this.streamed) value.release();
  }
}
