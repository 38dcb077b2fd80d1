import { createServer, type IncomingMessage, METHODS, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { errorResponse, RequestError, requestError } from '../../protocol/index.js';
import type { DaemonContext } from '../context.js';
import { parseBody, refuseUnreadableBody } from './body.js';
import { registerCompatibleRoutes } from './compatible.js';
import { registerDashboard } from './dashboard.js';
import { guardOf } from './guard.js';
import { sendJson } from './reply.js';
import { registerRoutes } from './routes.js';
import { STATUS_OF } from './statuses.js';

/** HTTP on the daemon's port: the sockets that open with a request line are handed to it. */
export interface HttpFront {
  accept(socket: Socket): void;
  /**
   * Refuses new requests (503). Its sockets are the daemon's, ended with the others at its stop
   * (a server that never listens tracks no connections of its own to close); event streams end
   * with the daemon's stop.
   */
  close(): Promise<void>;
}

/** How long a new HTTP connection may take to send its first request's headers. */
const REQUEST_WITHIN_MS = 30_000;

export async function startHttpFront(ctx: DaemonContext): Promise<HttpFront> {
  let server: Server | undefined;
  const app = Fastify({
    // The daemon's own listener accepts the sockets; this server never listens.
    serverFactory: (handler) => (server = createServer(handler)),
    bodyLimit: ctx.config.maxLineBytes,
    return503OnClosing: true,
    clientErrorHandler: answerMalformed,
  });
  // Every method Node's parser takes (CONNECT is a tunnel, not a request) reaches the router, so
  // that a path some route has answers any other method with 405, not 404.
  // Their bodies are not read: such a request is refused whatever it carries.
  for (const method of METHODS) if (method !== 'CONNECT' && !app.supportedMethods.includes(method)) app.addHttpMethod(method);
  // Bodies are read as the line protocol reads a line: the same UTF-8 and JSON rules, the same messages.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (_request: FastifyRequest, body: Buffer) => parseBody(body));
  app.addHook('preValidation', refuseUnreadableBody);
  app.addHook('onRequest', guardOf(ctx.config));
  app.setErrorHandler((error: FastifyError, request, reply) => failed(ctx, request, reply, error));
  app.setNotFoundHandler((request, reply) => failed(ctx, request, reply, requestError.NOT_FOUND({ route: `${request.method} ${pathOf(request)}` })));
  const methodsOf = new Map<string, Set<string>>();
  app.addHook('onRoute', ({ url, method }) => {
    if (!methodsOf.has(url)) methodsOf.set(url, new Set());
    for (const one of [method].flat()) methodsOf.get(url)!.add(one);
  });
  registerRoutes(app, ctx);
  registerCompatibleRoutes(app, ctx);
  registerDashboard(app, ctx);
  refuseOtherMethods(app, methodsOf);
  const awaitingRequest = new WeakMap<Socket, NodeJS.Timeout>();
  server!.on('request', (request: IncomingMessage) => clearTimeout(awaitingRequest.get(request.socket)));
  await app.ready();
  return {
    accept: (socket) => {
      // The server never listens, so Node's own headers timeout is not armed: a connection that
      // sends no whole request in time would hold one of --max-connections for good.
      const timer = setTimeout(() => socket.destroy(), REQUEST_WITHIN_MS);
      awaitingRequest.set(socket, timer);
      socket.once('close', () => clearTimeout(timer));
      server!.emit('connection', socket);
      socket.resume(); // left paused by the port's protocol sniffing, the first bytes put back
    },
    close: () => app.close(),
  };
}

/** A path some route has answers the methods it does not take with 405, naming those it takes. */
function refuseOtherMethods(app: FastifyInstance, methodsOf: Map<string, Set<string>>): void {
  for (const [url, methods] of [...methodsOf]) {
    const allowed = app.supportedMethods.filter((method) => methods.has(method));
    const others = app.supportedMethods.filter((method) => !methods.has(method));
    app.route({
      method: others,
      url,
      handler: async (request, reply) => {
        void reply.header('Allow', allowed.join(', '));
        throw requestError.METHOD_NOT_ALLOWED(request.method, pathOf(request), allowed);
      },
    });
  }
}

/** Why Node's HTTP parser refused a request, in words; any other refusal is "malformed". */
const MALFORMED: Record<string, [status: number, why: string]> = {
  HPE_HEADER_OVERFLOW: [431, "the request's headers are larger than 16 KiB"],
  HPE_INVALID_METHOD: [400, 'the request line has no method HTTP knows'],
  HPE_INVALID_CONTENT_LENGTH: [400, 'Content-Length is not a number of bytes'],
  HPE_UNEXPECTED_CONTENT_LENGTH: [400, 'Content-Length and Transfer-Encoding: chunked were both given'],
  HPE_INVALID_CHUNK_SIZE: [400, 'a chunk of the body has no valid size'],
};

/**
 * A request Node's HTTP parser could not read, answered (after any answer still owed on the
 * connection) with the line protocol's failure body, not fastify's own, and the connection
 * closed: what follows on it cannot be told apart.
 */
function answerMalformed(error: NodeJS.ErrnoException, socket: Socket): void {
  // The parser stays failed: each later chunk on the connection is reported again, and is ignored.
  if (error.code === 'ECONNRESET' || socket.destroyed || malformed.has(socket)) return;
  malformed.add(socket);
  writeMalformedAnswer(error, socket);
}

/** Sockets whose bytes Node's parser has refused: answered once. */
const malformed = new WeakSet<Socket>();

function writeMalformedAnswer(error: NodeJS.ErrnoException, socket: Socket): void {
  if (socket.destroyed) return;
  // The answer to an earlier request still being made (a wait, a refusal not sent yet) goes first,
  // whole; but a request whose own body was malformed (a bad chunk) is answered now.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight && !inFlight.writableFinished && inFlight.req.complete) {
    inFlight.once('finish', () => writeMalformedAnswer(error, socket));
    return;
  }
  const [status, why] = MALFORMED[error.code ?? ''] ?? [400, `the request is not well-formed HTTP/1.1 (${error.code ?? error.message})`];
  const body = JSON.stringify(errorResponse(undefined, requestError.BAD_REQUEST(why)));
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

const pathOf = (request: FastifyRequest) => request.url.split('?')[0]!;

/** The line protocol's failure body, with the status of its code; fastify's own errors become the catalog's. */
function failed(ctx: DaemonContext, request: FastifyRequest, reply: FastifyReply, error: FastifyError | RequestError): FastifyReply {
  const failure = error instanceof RequestError ? error : fromFastify(error, request, ctx);
  if (failure.code === 'INTERNAL') ctx.config.log(`HTTP ${request.method} ${request.url} failed: ${error.stack ?? error.message}`);
  return sendJson(reply, STATUS_OF[failure.code], errorResponse(undefined, failure));
}

function fromFastify(error: FastifyError, request: FastifyRequest, ctx: DaemonContext): RequestError {
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return requestError.UNSUPPORTED_MEDIA_TYPE(request.headers['content-type'] ?? '');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return requestError.PAYLOAD_TOO_LARGE(ctx.config.maxLineBytes);
    default:
      return error.statusCode !== undefined && error.statusCode < 500 ? requestError.BAD_REQUEST(error.message) : requestError.INTERNAL('request');
  }
}
