import type { ServerMessage } from './types.js';

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export type Frame = { kind: 'line'; line: Buffer } | { kind: 'too_long'; bytes: number };

/**
 * Reassembles newline-terminated lines from arbitrary chunks. A line longer
 * than `maxLineBytes` is reported once, as soon as it passes the limit, and
 * the rest of it up to the next newline is skipped, so memory stays bounded
 * whatever a peer sends. Empty and whitespace-only lines are dropped; a `\r`
 * before the `\n` is removed.
 */
export class LineFramer {
  private parts: Buffer[] = [];
  private buffered = 0;
  /** bytes of the current line seen past the limit; -1 when not skipping */
  private skipped = -1;

  constructor(private readonly maxLineBytes: number) {}

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      const end = newline === -1 ? chunk.length : newline;
      this.take(chunk.subarray(start, end), frames);
      if (newline === -1) break;
      this.finishLine(frames);
      start = newline + 1;
    }
    return frames;
  }

  /** The peer closed: a last line without its newline still counts. */
  end(): Frame[] {
    const frames: Frame[] = [];
    this.finishLine(frames);
    return frames;
  }

  private take(piece: Buffer, frames: Frame[]): void {
    if (piece.length === 0) return;
    if (this.skipped >= 0) {
      this.skipped += piece.length;
      return;
    }
    this.parts.push(piece);
    this.buffered += piece.length;
    // One byte of slack for a "\r" that will turn out to precede the "\n".
    if (this.buffered > this.maxLineBytes + 1) {
      frames.push({ kind: 'too_long', bytes: this.buffered });
      this.skipped = this.buffered;
      this.parts = [];
      this.buffered = 0;
    }
  }

  private finishLine(frames: Frame[]): void {
    if (this.skipped >= 0) {
      this.skipped = -1;
      return;
    }
    if (this.buffered === 0) return;
    let line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.buffered);
    this.parts = [];
    this.buffered = 0;
    if (line[line.length - 1] === CARRIAGE_RETURN) line = line.subarray(0, -1);
    if (line.length > this.maxLineBytes) {
      frames.push({ kind: 'too_long', bytes: line.length });
    } else if (!isBlank(line)) {
      frames.push({ kind: 'line', line });
    }
  }
}

function isBlank(line: Buffer): boolean {
  for (const byte of line) {
    if (byte !== 0x20 && byte !== 0x09 && byte !== CARRIAGE_RETURN && byte !== 0x0b && byte !== 0x0c) return false;
  }
  return true;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export type Decoded = { ok: true; value: unknown } | { ok: false; message: string };

/** Decodes one line as strict UTF-8 JSON. */
export function decodeLine(line: Buffer): Decoded {
  let text: string;
  try {
    text = utf8.decode(line);
  } catch {
    return { ok: false, message: 'the line is not valid UTF-8' };
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, message: `the line is not valid JSON: ${(error as Error).message}` };
  }
}

export const encodeLine = (message: ServerMessage): string => `${JSON.stringify(message)}\n`;
