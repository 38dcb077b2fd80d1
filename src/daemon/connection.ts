import { setMaxListeners } from 'node:events';
import type { Socket } from 'node:net';
import {
  decodeLine,
  encodeLine,
  errorResponse,
  type Frame,
  isTerminal,
  LineFramer,
  type Op,
  parseRequest,
  type Ref,
  RequestError,
  readableRef,
  requestError,
  type ValidRequest,
} from '../protocol/index.js';
import { Answer, PIECE_BYTES } from './answer.js';
import type { DaemonContext } from './context.js';
import { handle, type Payload, type StatelessOp } from './handlers.js';
import { HTTP_REFUSAL, type HttpLine, looksLikeHttp } from './http-guard.js';
import { sameSecret } from './secret.js';

/** Bytes handed to the socket and not yet taken by the kernel past which nothing more is written until it drains. */
const UNSENT_BYTES_LIMIT = 256 * 1024;
/** Answers waiting to be written past which no new request is read: a client that does not read gets back-pressure. */
const QUEUED_ANSWERS_LIMIT = 64;
/**
 * Requests taken on and not yet answered (a `run` waits for its task) past
 * which no new request is read: each one holds only a reference to its
 * task, but a client must not make the daemon hold them without bound.
 */
const IN_FLIGHT_LIMIT = 1024;
/**
 * How long a connection the daemon has ended still reads (and drops) what the
 * peer sends: closing with unread input makes the kernel reset the connection,
 * which can destroy the last answer before the peer has read it.
 */
const LINGER_MS = 2000;

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
  /** what waits to be written, in order: answers (read from files as they are written) and event lines */
  private readonly outbox: Outgoing[] = [];
  private writing = false;
  private inFlight = 0;
  /** answers on their way through the journal flush, not yet in the outbox */
  private unsent = 0;
  /** aborted when the connection closes: requests still waiting on tasks let go of them */
  private readonly gone = new AbortController();
  private readEnded = false;
  private unsubscribe: (() => void) | undefined;
  private skippedEvents = 0;
  /** set once the connection is to be closed: nothing more is read */
  private closing = false;
  /** the connection's first line, which alone may get an HTTP answer */
  private firstFrame: Frame | undefined;

  /** `endedAfter`: the bytes a peer sent before it ended its side while the port was still telling HTTP from lines */
  constructor(
    private readonly socket: Socket,
    private readonly ctx: DaemonContext,
    endedAfter?: Buffer,
  ) {
    this.framer = new LineFramer(ctx.config.maxLineBytes);
    setMaxListeners(0, this.gone.signal); // one listener per request waiting on a task
    this.authenticated = ctx.config.token === undefined;
    if (!this.authenticated) {
      // Without this, clients that never authenticate could hold every connection slot.
      const timer = setTimeout(() => {
        if (!this.authenticated && !this.closing) {
          this.closeUnauthorized(undefined, requestError.UNAUTHORIZED({ sent: 'nothing', withinMs: ctx.config.authTimeoutMs }));
        }
      }, ctx.config.authTimeoutMs);
      socket.once('close', () => clearTimeout(timer));
    }
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(this.framer.push(chunk)));
    const ended = () => {
      this.readEnded = true;
      this.receive(this.framer.end());
    };
    // A peer that ended its side while the port was still telling HTTP from lines: its 'end' has
    // passed, and its lines are read and the connection ends all the same.
    if (socket.readableEnded) {
      queueMicrotask(() => {
        if (endedAfter && endedAfter.length > 0) this.receive(this.framer.push(endedAfter));
        ended();
      });
    } else {
      socket.on('end', ended);
    }
    socket.resume(); // left paused by the port's protocol sniffing, the first bytes put back
    socket.on('error', () => undefined); // resets are normal; 'close' follows
    socket.on('close', () => {
      this.unsubscribe?.();
      this.gone.abort();
      for (const { line, done } of this.outbox.splice(0)) {
        if (line instanceof Answer) line.release();
        done(false);
      }
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
      const request = this.parse(this.waiting.shift()!);
      if (request) this.handle(request);
    }
    if (this.waiting.length > 0 || this.congested()) this.socket.pause();
    else if (!this.readEnded) this.socket.resume();
    this.endIfIdle();
  }

  private congested(): boolean {
    const queued = this.outbox.length + this.unsent;
    return queued >= QUEUED_ANSWERS_LIMIT || this.inFlight >= IN_FLIGHT_LIMIT || this.socket.writableLength > UNSENT_BYTES_LIMIT;
  }

  /** A request, or undefined when the line was answered with an error (or ended the connection). */
  private parse(frame: Frame): ValidRequest | undefined {
    if (frame.kind === 'too_long') {
      return this.refuse(undefined, requestError.LINE_TOO_LONG(this.ctx.config.maxLineBytes));
    }
    const http = looksLikeHttp(frame.line);
    if (http) return this.refuseHttp(http, frame === this.firstFrame);
    const decoded = decodeLine(frame.line);
    if (!decoded.ok) return this.refuse(undefined, requestError.BAD_JSON(decoded.message));
    try {
      return parseRequest(decoded.value);
    } catch (error) {
      return this.refuse(readableRef(decoded.value), error);
    }
  }

  /** Answers a line that is not a request. Before authentication the connection ends with it. */
  private refuse(ref: Ref | undefined, error: unknown): undefined {
    if (this.authenticated) this.fail(ref, error);
    else this.closeUnauthorized(ref, requestError.UNAUTHORIZED(error instanceof RequestError ? { sent: 'no request', error } : { sent: 'no auth' }));
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

  private handle(request: ValidRequest): void {
    if (request.op === 'auth') {
      this.authenticate(request.ref, request.token);
    } else if (!this.authenticated) {
      this.closeUnauthorized(request.ref, requestError.UNAUTHORIZED({ sent: 'no auth' }));
    } else if (request.op === 'subscribe') {
      this.subscribe(request.ref, request.ids);
    } else if (request.op === 'follow') {
      this.track(request.ref, (ref) => this.follow(ref, request.id));
    } else {
      this.start(request);
    }
  }

  /** Carries out a request that needs nothing of the connection, answering when it is done. */
  private start<O extends StatelessOp>(request: ValidRequest<O>): void {
    this.track(request.ref, async (ref) => this.reply(ref, request.op, await handle(request, this.ctx, this.gone.signal)));
  }

  /** Counts a request in flight until `work` is done; what it throws is answered as an error. */
  private track(ref: Ref | undefined, work: (ref: Ref | undefined) => Promise<void> | void): void {
    this.inFlight++;
    void (async () => {
      try {
        await work(ref);
      } catch (error) {
        this.fail(ref, error);
      } finally {
        this.inFlight--;
        this.admit();
      }
    })();
  }

  /** The output of a task as it is written, then its record once it is terminal. */
  private async follow(ref: Ref | undefined, id: string): Promise<void> {
    const until = AbortSignal.any([this.gone.signal, this.ctx.stopping]);
    const task = await this.ctx.outputs.follow(await this.ctx.scheduler.get(id), until, (stream, data) =>
      this.enqueue(encodeLine({ event: 'output', ...(ref === undefined ? {} : { ref }), id, stream, data })),
    );
    if (this.gone.signal.aborted) return;
    // Like a wait, a follow the daemon's stop cuts short is answered so; the task goes on after the restart.
    if (!isTerminal(task.state)) throw requestError.SHUTTING_DOWN('waiting');
    this.reply(ref, 'follow', { task: task.record() });
  }

  private authenticate(ref: Ref | undefined, token: string): void {
    const expected = this.ctx.config.token;
    if (expected !== undefined && !sameSecret(token, expected)) {
      this.closeUnauthorized(ref, requestError.UNAUTHORIZED({ sent: 'a wrong token' }));
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
      deliver: ({ line }) => {
        if (this.congested()) this.skippedEvents++;
        else void this.enqueue(line);
      },
    });
  }

  private reply<O extends Op>(ref: Ref | undefined, op: O, payload: Payload<O>): void {
    this.send({ ok: true, ...(ref === undefined ? {} : { ref }), op, ...payload });
  }

  private fail(ref: Ref | undefined, error: unknown): void {
    const known = error instanceof RequestError;
    if (!known) this.ctx.config.log(`internal error: ${(error as Error)?.stack ?? String(error)}`);
    this.send(errorResponse(ref, known ? error : requestError.INTERNAL('request')));
  }

  /** Refuses an unauthenticated connection: one UNAUTHORIZED line, then the end. */
  private closeUnauthorized(ref: Ref | undefined, error: RequestError): void {
    this.closeAfter(encodeLine(errorResponse(ref, error)));
  }

  /** Sends the last words at once and ends the connection; nothing more it sends is taken on. */
  private closeAfter(lastWords: string): void {
    this.closing = true;
    this.waiting.length = 0;
    // Last words must not land inside an answer being written: then the connection just ends.
    if (this.writing) this.socket.destroy();
    else this.socket.end(lastWords);
    // A peer that keeps its side open must not keep the slot for long.
    const linger = setTimeout(() => this.socket.destroy(), LINGER_MS);
    this.socket.once('close', () => clearTimeout(linger));
  }

  /** Every report waits until the journal holds what it reports. */
  private send(message: object): void {
    this.unsent++;
    const answer = new Answer(message);
    // Out of `unsent` and into the outbox in one step: a writeOut that runs at once must see it there, not in both.
    this.ctx.journal.flushed().then(
      () => {
        this.unsent--;
        void this.enqueue(answer);
      },
      (error: Error) => {
        this.unsent--;
        answer.release();
        this.ctx.config.log(error.message);
        void this.enqueue(encodeLine(errorResponse(undefined, requestError.INTERNAL('journal'))));
      },
    );
  }

  /** Queues a line to write; resolves once it is written (true) or the connection is gone (false). */
  private enqueue(line: Answer | string): Promise<boolean> {
    return new Promise((done) => {
      if (this.socket.destroyed) {
        if (line instanceof Answer) line.release();
        return done(false);
      }
      this.outbox.push({ line, done });
      void this.writeOut();
    });
  }

  /** Writes the outbox in order, a piece at a time, each after the socket has taken the one before. */
  private async writeOut(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    // The pieces written in this turn (many answers, in a burst) go out in one system call.
    this.socket.cork();
    process.nextTick(() => this.socket.uncork());
    while (this.outbox.length > 0) {
      const { line, done } = this.outbox[0]!;
      let written = true;
      const whole = typeof line === 'string' ? line : line.whole();
      try {
        if (whole !== undefined && whole.length <= PIECE_BYTES) {
          // Most answers: one short line, written without a turn of async iteration.
          const taken = this.write(whole);
          written = typeof taken === 'boolean' ? taken : await taken;
        } else {
          for await (const piece of typeof line === 'string' ? [line] : line.pieces()) {
            written = await this.write(piece);
            if (!written) break;
          }
        }
      } catch (error) {
        // Never a half line: a client could not tell where the next one starts.
        this.ctx.config.log(`internal error while writing an answer: ${(error as Error).message}`);
        this.socket.destroy();
        written = false;
      } finally {
        if (line instanceof Answer) line.release();
      }
      if (this.outbox[0]?.line === line) this.outbox.shift();
      done(written);
      if (this.outbox.length === 0 && this.skippedEvents > 0) {
        this.outbox.push({ line: encodeLine({ event: 'dropped', count: this.skippedEvents }), done: () => undefined });
        this.skippedEvents = 0;
      }
    }
    this.writing = false;
    this.admit(); // and ends the connection if that was all
  }

  /** Whether the socket can take more (true) or is gone (false): at once, or once it has drained. */
  private write(piece: string): boolean | Promise<boolean> {
    if (this.socket.destroyed || !this.socket.writable) return false;
    if (this.socket.write(piece) || this.socket.writableLength <= UNSENT_BYTES_LIMIT) return true;
    return new Promise((resolve) => {
      const settle = (drained: boolean) => {
        this.socket.off('drain', onDrain).off('close', onClose);
        resolve(drained);
      };
      const onDrain = () => settle(true);
      const onClose = () => settle(false);
      this.socket.on('drain', onDrain).on('close', onClose);
    });
  }

  /** A peer that has closed its side gets all its answers, then the connection ends. */
  private endIfIdle(): void {
    const idle = this.waiting.length === 0 && this.inFlight === 0 && this.unsent === 0 && this.outbox.length === 0;
    if (this.readEnded && idle && !this.unsubscribe) this.socket.end(); // end() still sends what is buffered
  }

}

/** The peer's address as `host:port`, for the log. */
function peerName(socket: Socket): string {
  const host = socket.remoteFamily === 'IPv6' ? `[${socket.remoteAddress}]` : socket.remoteAddress;
  return `${host}:${socket.remotePort}`;
}

interface Outgoing {
  line: Answer | string;
  done: (written: boolean) => void;
}

