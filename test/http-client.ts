import { request } from 'node:http';
import { connect } from 'node:net';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: answers as sent; each test checks their shape
  json: any;
}

/**
 * One HTTP request on a connection of its own, with any headers (Host and
 * Origin included, which fetch would not let a test set).
 */
export function http(
  port: number,
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<HttpAnswer> {
  const raw = options.body === undefined ? undefined : typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  const headers = {
    ...(raw !== undefined && typeof options.body !== 'string' ? { 'Content-Type': 'application/json' } : {}),
    // Node sends a GET's body only with its length given.
    ...(raw !== undefined ? { 'Content-Length': String(Buffer.byteLength(raw)) } : {}),
    ...options.headers,
  };
  return new Promise((resolve, reject) => {
    const sent = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: response.statusCode!, headers: response.headers, text, json });
      });
    });
    sent.on('error', reject);
    sent.end(raw);
  });
}

/**
 * Writes `text` (raw HTTP, pipelined requests, anything) on a connection of its own and resolves
 * with all the daemon sent once `enough` holds of it, or once the daemon has closed the connection.
 */
export function rawExchange(port: number, text: string, enough: (received: string) => boolean = () => false): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined); // the daemon may close while this side still writes
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (!enough(received)) return;
      socket.destroy();
      resolve(received);
    });
    socket.on('close', () => resolve(received));
    socket.write(text);
  });
}

export interface ServerSentEvent {
  event: string;
  // biome-ignore lint/suspicious/noExplicitAny: events as sent; each test checks their shape
  data: any;
}

/** Reads a text/event-stream: `next()` gives each event in turn, `ended` settles when the server ends the stream. */
export class EventStreamReader {
  private readonly queue: ServerSentEvent[] = [];
  private readonly waiting: ((event: ServerSentEvent | undefined) => void)[] = [];
  private done = false;
  status = 0;
  contentType = '';
  headers: Record<string, string | string[] | undefined> = {};
  readonly ended: Promise<void>;
  private close: () => void = () => undefined;

  constructor(port: number, path: string, headers: Record<string, string> = {}) {
    this.ended = new Promise((resolveEnded) => {
      const sent = request({ host: '127.0.0.1', port, path, headers: { Accept: 'text/event-stream', ...headers }, agent: false }, (response) => {
        this.status = response.statusCode!;
        this.contentType = String(response.headers['content-type']);
        this.headers = response.headers;
        let buffer = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          buffer += chunk;
          for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
            this.parse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        });
        response.on('close', () => {
          this.done = true;
          for (const wake of this.waiting.splice(0)) wake(undefined);
          resolveEnded();
        });
      });
      sent.on('error', () => resolveEnded());
      sent.end();
      this.close = () => sent.destroy();
    });
  }

  private parse(block: string): void {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length === 0) return; // a comment: keep-alive
    const parsed = { event, data: JSON.parse(data.join('\n')) };
    const wake = this.waiting.shift();
    if (wake) wake(parsed);
    else this.queue.push(parsed);
  }

  /** The next event, or undefined once the stream has ended. */
  next(): Promise<ServerSentEvent | undefined> {
    const queued = this.queue.shift();
    if (queued || this.done) return Promise.resolve(queued);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Events until one matches, returning all read. */
  async until(match: (event: ServerSentEvent) => boolean): Promise<ServerSentEvent[]> {
    const seen: ServerSentEvent[] = [];
    for (;;) {
      const event = await this.next();
      if (!event) throw new Error(`the stream ended before the event looked for; got ${JSON.stringify(seen).slice(0, 500)}`);
      seen.push(event);
      if (match(event)) return seen;
    }
  }

  stop(): void {
    this.close();
  }
}
