import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { Answer } from '../answer.js';

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Sends a JSON answer. Output and long lists in it are read from their files
 * and serialized as the client takes the body, as on the line protocol.
 */
export function sendJson(reply: FastifyReply, status: number, body: object): FastifyReply {
  const answer = new Answer(body);
  const whole = answer.whole();
  void reply.code(status).type(JSON_TYPE);
  if (whole !== undefined) return reply.send(whole);
  const stream = Readable.from(answer.pieces(), { objectMode: false });
  stream.once('close', () => answer.release());
  return reply.send(stream);
}

/** The most an event stream may hold unsent for a client before it is cut off (its EventSource reconnects). */
const UNSENT_EVENTS_LIMIT = 1024 * 1024;
/** A comment line now and then keeps proxies and idle timers from closing a quiet stream. */
const KEEPALIVE_MS = 15_000;

export interface EventStream {
  /** Sends one event; resolves once the client has taken it, false if the client is gone. */
  send(event: string, data: unknown): Promise<boolean>;
  /** Sends one event now, or cuts off a client that has let too much pile up. */
  push(event: string, data: unknown): void;
  end(): void;
  /** aborted when the client goes or the stream ends */
  closed: AbortSignal;
}

/** Answers with Server-Sent Events (`text/event-stream`); fastify leaves the response to it. */
export function openEventStream(reply: FastifyReply): EventStream {
  void reply.hijack();
  const response = reply.raw;
  const closed = new AbortController();
  response.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    'X-Accel-Buffering': 'no',
  });
  response.write(': task-manager\n\n');
  const keepalive = setInterval(() => response.write(': keep-alive\n\n'), KEEPALIVE_MS);
  response.once('close', () => {
    clearInterval(keepalive);
    closed.abort();
  });
  const frame = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  return {
    closed: closed.signal,
    send: (event, data) =>
      new Promise((resolve) => {
        if (closed.signal.aborted) return resolve(false);
        if (response.write(frame(event, data))) return resolve(true);
        const done = () => {
          response.off('drain', done);
          closed.signal.removeEventListener('abort', done);
          resolve(!closed.signal.aborted);
        };
        response.once('drain', done);
        closed.signal.addEventListener('abort', done, { once: true });
      }),
    push: (event, data) => {
      if (closed.signal.aborted) return;
      if (response.writableLength > UNSENT_EVENTS_LIMIT) response.destroy();
      else response.write(frame(event, data));
    },
    end: () => {
      clearInterval(keepalive);
      response.end();
    },
  };
}
