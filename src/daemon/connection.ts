import { createHash, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
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
import { HTTP_REFUSAL, looksLikeHttp, type HttpLine } from './http-guard.js';

/** Unsent output past which answers are held back (as records, not text) and no new request is taken on. */
const UNSENT_BYTES_LIMIT = 1024 * 1024;
/** Unsent output past which subscription events are skipped (and counted) instead of queued. */
const SKIP_EVENTS_BYTES = 4 * 1024 * 1024;
/**
 * The output that the answers in flight on one connection may carry at most,
 * reckoned from each task's max_output_bytes: a client that sends many runs
 * and never reads cannot make the daemon hold more than this for it.
 * (With the default cap that is 64 runs or waits in flight at once.)
 */
const OUTPUT_BUDGET_BYTES = 128 * 1024 * 1024;
/**
 * How long a connection the daemon has ended still reads (and drops) what the
 * peer sends: closing with unread input makes the kernel reset the connection,
 * which can destroy the last answer before the peer has read it.
 */
const LINGER_MS = 2000;

const NEEDS_AUTH = 'this daemon needs a token: send {"op":"auth","token":"..."} first';

const digest = (text: string) => createHash('sha256').update(text).digest();

/**
 * One client connection: frames lines, answers each request as soon as it
 * is done (requests are handled concurrently), and keeps its memory bounded
 * when the peer sends faster than it reads.
 */
export class Connection {
  private readonly framer: LineFramer;
  private authenticated: boolean;
  /** lines read but not yet taken on */
  private readonly waiting: Frame[] = [];
  /** answers that wait for the peer to read what was sent before */
  private readonly held: object[] = [];
  private inFlight = 0;
  /** answers on their way through the journal flush, not yet written or held */
  private unsent = 0;
  private reservedOutput = 0;
  /** aborted when the connection closes: requests still waiting on tasks let go of them */
  private readonly gone = new AbortController();
  private readEnded = false;
  private unsubscribe: (() => void) | undefined;
  private skippedEvents = 0;
  /** set once the connection is to be closed: nothing more is read */
  private closing = false;
  /** the connection's first line, which alone may get an HTTP answer */
  private firstFrame: Frame | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: DaemonContext,
  ) {
    this.framer = new LineFramer(ctx.config.maxLineBytes);
    setMaxListeners(0, this.gone.signal); // one listener per request waiting on a task
    this.authenticated = ctx.config.token === undefined;
    if (!this.authenticated) {
      // Without this, clients that never authenticate could hold every connection slot.
      const timer = setTimeout(() => {
        if (!this.authenticated && !this.closing) {
          this.closeUnauthorized(undefined, `no auth within ${ctx.config.authTimeoutMs} ms`);
        }
      }, ctx.config.authTimeoutMs);
      socket.once('close', () => clearTimeout(timer));
    }
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(this.framer.push(chunk)));
    socket.on('end', () => {
      this.readEnded = true;
      this.receive(this.framer.end());
    });
    socket.on('drain', () => this.drained());
    socket.on('error', () => undefined); // resets are normal; 'close' follows
    socket.on('close', () => {
      this.unsubscribe?.();
      this.gone.abort();
    });
  }

  /** Reads nothing more and ends the connection once every request in flight is answered. */
  close(): void {
    this.closing = true;
    this.readEnded = true;
    this.waiting.length = 0;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.endIfIdle();
  }

  private receive(frames: Frame[]): void {
    this.firstFrame ??= frames[0];
    if (!this.closing) this.waiting.push(...frames);
    this.admit();
  }

  /** Takes on waiting lines in order while the connection has room, and reads more only when all are taken. */
  private admit(): void {
    while (this.waiting.length > 0 && !this.closing && !this.congested()) {
      const frame = this.waiting[0]!;
      const request = this.parse(frame);
      const cost = request ? this.outputCost(request) : 0;
      if (cost > 0 && this.inFlight > 0 && this.reservedOutput + cost > OUTPUT_BUDGET_BYTES) break;
      this.waiting.shift();
      if (request) this.handle(request, cost);
    }
    if (this.waiting.length > 0 || this.congested()) this.socket.pause();
    else if (!this.readEnded) this.socket.resume();
    this.endIfIdle();
  }

  private congested(): boolean {
    return this.held.length > 0 || this.socket.writableLength > UNSENT_BYTES_LIMIT;
  }

  /** A request, or undefined when the line was answered with an error (or ended the connection). */
  private parse(frame: Frame): ValidRequest | undefined {
    if (frame.kind === 'too_long') {
      return this.refuse(undefined, new RequestError('LINE_TOO_LONG', `the line is longer than ${this.ctx.config.maxLineBytes} bytes (--max-line-bytes); it was skipped`));
    }
    const http = looksLikeHttp(frame.line);
    if (http) return this.refuseHttp(http, frame === this.firstFrame);
    const decoded = decodeLine(frame.line);
    if (!decoded.ok) return this.refuse(undefined, new RequestError('BAD_JSON', decoded.message));
    try {
      return parseRequest(decoded.value);
    } catch (error) {
      return this.refuse(readableRef(decoded.value), error);
    }
  }

  /** Answers a line that is not a request. Before authentication the connection ends with it. */
  private refuse(ref: Ref | undefined, error: unknown): undefined {
    if (this.authenticated) this.fail(ref, error);
    else this.closeUnauthorized(ref, error instanceof RequestError ? `${NEEDS_AUTH} (this line: ${error.code}, ${error.message})` : NEEDS_AUTH);
    return undefined;
  }

  /** Ends a connection that speaks HTTP, before any later line of it is looked at. */
  private refuseHttp(line: HttpLine, first: boolean): undefined {
    const what = line === 'request-line' ? 'an HTTP request line' : 'an HTTP header line';
    this.ctx.config.log(`closed the connection from ${peerName(this.socket)}: it sent ${what}, and this port speaks newline-delimited JSON`);
    // Only a client that opened with a request line is known to expect an HTTP answer.
    this.closeAfter(first && line === 'request-line' ? HTTP_REFUSAL : '');
    return undefined;
  }

  /** The output an answer to this request may carry once its task has finished. */
  private outputCost(request: ValidRequest): number {
    if (request.op === 'run') return 2 * request.spec.max_output_bytes;
    if (request.op !== 'wait') return 0;
    try {
      return 2 * this.ctx.scheduler.get(request.id).spec.max_output_bytes;
    } catch {
      return 0; // NOT_FOUND is answered at once
    }
  }

  private handle(request: ValidRequest, cost: number): void {
    if (request.op === 'auth') {
      this.authenticate(request.ref, request.token);
    } else if (!this.authenticated) {
      this.closeUnauthorized(request.ref, NEEDS_AUTH);
    } else if (request.op === 'subscribe') {
      this.subscribe(request.ref, request.ids);
    } else {
      this.start(request, cost);
    }
  }

  /** Carries out a request that needs nothing of the connection, answering when it is done. */
  private start(request: Exclude<ValidRequest, { op: 'auth' | 'subscribe' }>, cost: number): void {
    this.inFlight++;
    this.reservedOutput += cost;
    const op: StatelessOp = request.op;
    const handler = handlers[op] as (request: ValidRequest, ctx: DaemonContext, gone: AbortSignal) => unknown;
    Promise.resolve()
      .then(() => handler(request, this.ctx, this.gone.signal))
      .then(
        (payload) => this.reply(request.ref, op, payload as object),
        (error: unknown) => this.fail(request.ref, error),
      )
      .finally(() => {
        this.inFlight--;
        this.reservedOutput -= cost;
        this.admit();
      });
  }

  private authenticate(ref: Ref | undefined, token: string): void {
    const expected = this.ctx.config.token;
    if (expected !== undefined && !timingSafeEqual(digest(token), digest(expected))) {
      this.closeUnauthorized(ref, 'the token is wrong');
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
        if (this.held.length > 0 || this.socket.writableLength > SKIP_EVENTS_BYTES) this.skippedEvents++;
        else this.write(line);
      },
    });
  }

  private reply(ref: Ref | undefined, op: string, payload: object): void {
    this.send({ ok: true, ...(ref === undefined ? {} : { ref }), op, ...payload });
  }

  private fail(ref: Ref | undefined, error: unknown): void {
    const known = error instanceof RequestError;
    if (!known) this.ctx.config.log(`internal error: ${(error as Error)?.stack ?? String(error)}`);
    this.send(errorResponse(ref, known ? error.code : 'INTERNAL', known ? error.message : 'the daemon failed to carry out the request'));
  }

  /** Refuses an unauthenticated connection: one UNAUTHORIZED line, then the end. */
  private closeUnauthorized(ref: Ref | undefined, message: string): void {
    this.closeAfter(encodeLine(errorResponse(ref, 'UNAUTHORIZED', message)));
  }

  /** Sends the last words at once and ends the connection; nothing more it sends is taken on. */
  private closeAfter(lastWords: string): void {
    this.closing = true;
    this.waiting.length = 0;
    this.socket.end(lastWords);
    // A peer that keeps its side open must not keep the slot for long.
    const linger = setTimeout(() => this.socket.destroy(), LINGER_MS);
    this.socket.once('close', () => clearTimeout(linger));
  }

  /** Every report waits until the journal holds what it reports. */
  private send(message: object): void {
    this.unsent++;
    this.ctx.journal
      .flushed()
      .then(
        () => this.deliver(message),
        (error: Error) => {
          this.ctx.config.log(error.message);
          this.deliver(errorResponse(undefined, 'INTERNAL', 'the journal could not be written'));
        },
      )
      .finally(() => {
        this.unsent--;
        this.endIfIdle();
      });
  }

  /** Writes an answer, or holds it (unserialized, so its output is not copied) while the peer is behind. */
  private deliver(message: object): void {
    if (this.congested()) this.held.push(message);
    else this.write(encodeLine(message));
  }

  private write(line: string): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(line);
  }

  private drained(): void {
    while (this.held.length > 0 && this.socket.writableLength <= UNSENT_BYTES_LIMIT) this.write(encodeLine(this.held.shift()!));
    if (this.skippedEvents > 0 && this.held.length === 0) {
      this.write(encodeLine({ event: 'dropped', count: this.skippedEvents }));
      this.skippedEvents = 0;
    }
    this.admit(); // and ends the connection if that was all
  }

  /** A peer that has closed its side gets all its answers, then the connection ends. */
  private endIfIdle(): void {
    const idle = this.waiting.length === 0 && this.inFlight === 0 && this.unsent === 0 && this.held.length === 0;
    if (this.readEnded && idle && !this.unsubscribe) this.socket.end(); // end() still sends what is buffered
  }

}

/** The peer's address as `host:port`, for the log. */
function peerName(socket: Socket): string {
  const host = socket.remoteFamily === 'IPv6' ? `[${socket.remoteAddress}]` : socket.remoteAddress;
  return `${host}:${socket.remotePort}`;
}

const errorResponse = (ref: Ref | undefined, code: RequestErrorCode, message: string) => ({
  ok: false,
  ...(ref === undefined ? {} : { ref }),
  error: { code, message },
});
