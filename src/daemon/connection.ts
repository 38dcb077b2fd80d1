import { createHash, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  LineFramer,
  RequestError,
  decodeLine,
  encodeLine,
  parseRequest,
  readableRef,
  type Frame,
  type Ref,
  type RequestErrorCode,
  type ValidRequest,
} from '../protocol/index.js';
import type { DaemonContext } from './context.js';
import { handlers, type StatelessOp } from './handlers.js';

/** Unsent output past which the connection stops reading requests until the peer catches up. */
const PAUSE_READING_BYTES = 1024 * 1024;
/** Unsent output past which subscription events are skipped (and counted) instead of queued. */
const SKIP_EVENTS_BYTES = 4 * 1024 * 1024;

const digest = (text: string) => createHash('sha256').update(text).digest();

/**
 * One client connection: frames lines, answers each request as soon as it
 * is done (requests are handled concurrently), and keeps its own memory
 * bounded when the peer does not read.
 */
export class Connection {
  private readonly framer: LineFramer;
  private authenticated: boolean;
  private inFlight = 0;
  private readEnded = false;
  private unsubscribe: (() => void) | undefined;
  private skippedEvents = 0;
  /** set once the connection is to be closed: nothing more is read */
  private closing = false;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: DaemonContext,
  ) {
    this.framer = new LineFramer(ctx.config.maxLineBytes);
    this.authenticated = ctx.config.token === undefined;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(this.framer.push(chunk)));
    socket.on('end', () => {
      this.readEnded = true;
      this.receive(this.framer.end());
      this.endIfIdle();
    });
    socket.on('drain', () => this.drained());
    socket.on('error', () => undefined); // resets are normal; 'close' follows
    socket.on('close', () => this.unsubscribe?.());
  }

  /** Reads nothing more and ends the connection once every request in flight is answered. */
  close(): void {
    this.closing = true;
    this.readEnded = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.endIfIdle();
  }

  private receive(frames: Frame[]): void {
    for (const frame of frames) {
      if (this.closing) return;
      if (frame.kind === 'too_long') {
        this.fail(undefined, new RequestError('LINE_TOO_LONG', `the line is longer than ${this.ctx.config.maxLineBytes} bytes (--max-line-bytes); it was skipped`));
        continue;
      }
      const decoded = decodeLine(frame.line);
      if (!decoded.ok) {
        this.fail(undefined, new RequestError('BAD_JSON', decoded.message));
        continue;
      }
      const ref = readableRef(decoded.value);
      let request: ValidRequest;
      try {
        request = parseRequest(decoded.value);
      } catch (error) {
        this.fail(ref, error);
        continue;
      }
      this.handle(request);
    }
  }

  private handle(request: ValidRequest): void {
    if (request.op === 'auth') return this.authenticate(request.ref, request.token);
    if (!this.authenticated) {
      this.closeWith(request.ref, new RequestError('UNAUTHORIZED', 'this daemon needs a token: send {"op":"auth","token":"..."} first'));
      return;
    }
    if (request.op === 'subscribe') return this.subscribe(request.ref, request.ids);
    this.inFlight++;
    const op: StatelessOp = request.op;
    const handler = handlers[op] as (request: ValidRequest, ctx: DaemonContext) => unknown;
    Promise.resolve()
      .then(() => handler(request, this.ctx))
      .then(
        (payload) => this.reply(request.ref, op, payload as object),
        (error: unknown) => this.fail(request.ref, error),
      )
      .finally(() => {
        this.inFlight--;
        this.endIfIdle();
      });
  }

  private authenticate(ref: Ref | undefined, token: string): void {
    const expected = this.ctx.config.token;
    if (expected !== undefined && !timingSafeEqual(digest(token), digest(expected))) {
      this.closeWith(ref, new RequestError('UNAUTHORIZED', 'the token is wrong'));
      return;
    }
    this.authenticated = true;
    this.reply(ref, 'auth', {});
  }

  private subscribe(ref: Ref | undefined, ids: string[] | undefined): void {
    this.unsubscribe?.();
    this.reply(ref, 'subscribe', {});
    this.unsubscribe = this.ctx.subscribers.add({
      ids: ids && new Set(ids),
      deliver: (line) => {
        if (this.socket.writableLength > SKIP_EVENTS_BYTES) this.skippedEvents++;
        else this.write(line);
      },
    });
  }

  private reply(ref: Ref | undefined, op: string, payload: object): void {
    this.send({ ok: true, ...(ref === undefined ? {} : { ref }), op, ...payload });
  }

  private closeWith(ref: Ref | undefined, error: RequestError): void {
    this.closing = true;
    this.socket.end(encodeLine({ ok: false, ...(ref === undefined ? {} : { ref }), error: { code: error.code, message: error.message } }));
  }

  private fail(ref: Ref | undefined, error: unknown): void {
    const known = error instanceof RequestError;
    if (!known) this.ctx.config.log(`internal error: ${(error as Error)?.stack ?? String(error)}`);
    const code: RequestErrorCode = known ? error.code : 'INTERNAL';
    const message = known ? error.message : 'the daemon failed to carry out the request';
    this.send({ ok: false, ...(ref === undefined ? {} : { ref }), error: { code, message } });
  }

  /** Every report waits until the journal holds what it reports. */
  private send(message: object): void {
    const line = encodeLine(message);
    this.ctx.journal.flushed().then(
      () => this.write(line),
      (error: Error) => {
        this.ctx.config.log(error.message);
        this.write(encodeLine({ ok: false, error: { code: 'INTERNAL', message: 'the journal could not be written' } }));
      },
    );
  }

  private write(line: string): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(line);
    if (this.socket.writableLength > PAUSE_READING_BYTES) this.socket.pause();
  }

  private drained(): void {
    if (this.skippedEvents > 0) {
      this.write(encodeLine({ event: 'dropped', count: this.skippedEvents }));
      this.skippedEvents = 0;
    }
    if (this.socket.isPaused() && !this.readEnded) this.socket.resume();
  }

  /** A peer that has closed its side gets its answers, then the connection ends. */
  private endIfIdle(): void {
    if (this.readEnded && this.inFlight === 0 && !this.unsubscribe) {
      void this.ctx.journal.flushed().finally(() => this.socket.end());
    }
  }
}
