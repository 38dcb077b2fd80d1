import type { Socket } from 'node:net';
import { looksLikeHttp } from './http-guard.js';

export type PortProtocol = 'http' | 'lines';

/** An HTTP request line is short; a first line longer than this is the line protocol's (which then judges it). */
const MAX_REQUEST_LINE_BYTES = 8 * 1024;
/** A first line that takes longer than this is handed to the line protocol, whose own deadlines then apply. */
const DECIDE_WITHIN_MS = 2_000;

/**
 * Tells which protocol a new connection speaks from its first line: an
 * HTTP request line (`GET /tasks HTTP/1.1`) is HTTP, anything else the line
 * protocol. A request of the line protocol starts with `{` or a blank, where
 * every method starts with a letter, so it is handed over at its first byte. The bytes
 * read to decide are put back on the socket (or, once the peer has ended
 * its side, handed to `decided`), which is left paused: its new owner
 * resumes it once its own listeners are in place.
 */
export function sniffProtocol(socket: Socket, decided: (protocol: PortProtocol, ended?: Buffer) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const stop = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', stop);
  };
  const decide = (protocol: PortProtocol) => {
    stop();
    socket.pause();
    // After the peer's end nothing can be put back on the socket: its first bytes are handed over.
    if (socket.readableEnded) return decided(protocol, seen);
    if (seen.length > 0) socket.unshift(seen);
    decided(protocol);
  };
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const verdict = judge(seen);
    if (verdict) decide(verdict);
  };
  const onEnd = () => decide('lines');
  const timer = setTimeout(() => decide('lines'), DECIDE_WITHIN_MS);
  socket.on('data', onData);
  socket.once('end', onEnd);
  socket.once('close', stop); // gone before a decision: nobody takes it
}

function judge(seen: Buffer): PortProtocol | undefined {
  // Methods are words: any other first byte rules HTTP out at once.
  if (!isLetter(seen[0]!)) return 'lines';
  const newline = seen.indexOf(0x0a);
  if (newline === -1) return seen.length > MAX_REQUEST_LINE_BYTES ? 'lines' : undefined;
  const line = seen.subarray(0, newline > 0 && seen[newline - 1] === 0x0d ? newline - 1 : newline);
  return looksLikeHttp(line) === 'request-line' ? 'http' : 'lines';
}

const isLetter = (byte: number) => (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
