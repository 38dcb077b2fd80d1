import { createReadStream } from 'node:fs';
import { JournalCorruptError } from './errors.js';

const NEWLINE = 0x0a;

/** What `forEachLine` read. */
export interface LinesRead {
  /** complete lines */
  lines: number;
  /** the text after the last newline ('' when the file ends with one): a line cut off mid-write */
  rest: string;
  bytes: number;
}

/**
 * Calls `onLine` with each newline-terminated line of a file, numbered from
 * 1, a chunk at a time: a file of any size is read in the memory of its
 * longest line, never as one string. A newline byte never occurs inside a
 * multi-byte UTF-8 character, so each line is decoded on its own. An error
 * thrown by `onLine` stops the reading and rejects.
 */
export async function forEachLine(path: string, onLine: (line: string, number: number) => void): Promise<LinesRead> {
  let lines = 0;
  let bytes = 0;
  // A line that spans chunks, kept as pieces and joined once: copying it at every chunk would cost its length squared.
  let pieces: Buffer[] = [];
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    let start = 0;
    for (let newline = chunk.indexOf(NEWLINE); newline >= 0; newline = chunk.indexOf(NEWLINE, start)) {
      let line: string;
      if (pieces.length > 0) {
        pieces.push(chunk.subarray(start, newline));
        line = Buffer.concat(pieces).toString('utf8');
        pieces = [];
      } else {
        line = chunk.toString('utf8', start, newline);
      }
      onLine(line, ++lines);
      start = newline + 1;
    }
    if (start < chunk.length) pieces.push(chunk.subarray(start));
  }
  return { lines, rest: Buffer.concat(pieces).toString('utf8'), bytes };
}

/** The JSON value of one line of a journal file; `where` names file and line if it is not JSON. */
export function parseLine(where: string, line: string, what: string): unknown {
  try {
    return JSON.parse(line);
  } catch (error) {
    throw new JournalCorruptError(where, `unreadable ${what} (${(error as Error).message})`);
  }
}
