import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isObject, parseRequest, requestError, type ValidRequest, withFieldsNamed } from '../../protocol/index.js';
import type { DaemonContext } from '../context.js';
import { handle, type StatelessOp } from '../handlers.js';
import { letGo } from '../answer.js';
import { OUTPUT_STREAMS, type OutputStream } from '../output-files.js';
import { openEventStream, sendJson } from './reply.js';

type Fields = Record<string, unknown>;

/** Query values are text: these fields are numbers on the wire, and are read as such (a word stays a word, for the error). */
const NUMERIC_QUERY = new Set(['limit', 'timeout_ms']);

function queryFields(request: FastifyRequest, names: readonly string[]): Fields {
  const query = request.query as Record<string, string | string[] | undefined>;
  const fields: Fields = {};
  for (const name of names) {
    const value = query[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) throw requestError.BAD_REQUEST(`${name} is given ${value.length} times in the query; give it once`);
    fields[name] = NUMERIC_QUERY.has(name) && /^-?\d+$/.test(value) ? Number(value) : value;
  }
  return fields;
}

/** A request body as fields of an op: a JSON object, without the envelope's fields, which the route gives. */
function bodyFields(request: FastifyRequest): Fields {
  const body: unknown = request.body ?? {};
  if (!isObject(body)) throw requestError.BAD_REQUEST('the body must be a JSON object');
  for (const envelope of ['op', 'ref']) {
    if (envelope in body) throw requestError.BAD_REQUEST(`${envelope} is not a field of a body: the route says what to do`);
  }
  return body;
}

/** Aborts when the client goes before its answer is complete (a long `wait`). */
function whenGone(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  reply.raw.once('close', () => gone.abort());
  return gone.signal;
}

/** Carries out an op with the line protocol's handler and answers with its payload. */
async function answer(ctx: DaemonContext, reply: FastifyReply, fields: Fields, status = 200): Promise<FastifyReply> {
  const request = parseRequest(fields) as ValidRequest<StatelessOp>;
  const payload = await handle(request, ctx, whenGone(reply));
  return sendJson(reply, status, { ok: true, ...payload });
}

const idOf = (request: FastifyRequest) => (request.params as { id: string }).id;

/** The submit of `POST /tasks`: `dependencies` is another name for `depends_on`, and errors name the one sent. */
function submitRequest(request: FastifyRequest): ValidRequest<'submit'> {
  const { dependencies, ...spec } = bodyFields(request);
  if (dependencies === undefined) return parseRequest({ ...spec, op: 'submit' }) as ValidRequest<'submit'>;
  if (spec.depends_on !== undefined) throw requestError.BAD_REQUEST('give depends_on or dependencies (its other name), not both');
  return withFieldsNamed(() => parseRequest({ ...spec, depends_on: dependencies, op: 'submit' }), { depends_on: 'dependencies' }) as ValidRequest<'submit'>;
}

/** The REST routes: each one op of the line protocol, answered by the same handler. */
export function registerRoutes(app: FastifyInstance, ctx: DaemonContext): void {
  app.get('/health', (_request, reply) => answer(ctx, reply, { op: 'health' }));
  app.get('/count', (_request, reply) => answer(ctx, reply, { op: 'count' }));
  app.get('/stats', (_request, reply) => answer(ctx, reply, { op: 'stats' }));

  app.post('/tasks', async (request, reply) => {
    const payload = await handle(submitRequest(request), ctx, whenGone(reply));
    if ('duplicate' in payload) return sendJson(reply, 200, { ok: true, ...payload });
    // An id is of letters, digits and . _ : - (ID_PATTERN), all of which a path takes as they are.
    void reply.header('Location', `/tasks/${payload.task.id}`);
    return sendJson(reply, 201, { ok: true, ...payload });
  });
  app.get('/tasks', (request, reply) => answer(ctx, reply, { op: 'list', ...queryFields(request, ['state', 'limit', 'after', 'order', 'group']) }));
  app.get('/tasks/:id', (request, reply) => answer(ctx, reply, { op: 'status', id: idOf(request) }));
  app.get('/tasks/:id/wait', (request, reply) => answer(ctx, reply, { op: 'wait', id: idOf(request), ...queryFields(request, ['timeout_ms']) }));
  app.post('/tasks/:id/cancel', (request, reply) => answer(ctx, reply, { op: 'cancel', id: idOf(request) }));
  app.delete('/tasks/:id', (request, reply) => answer(ctx, reply, { op: 'remove', id: idOf(request) }));
  app.post('/tasks/:id/restart', (request, reply) => answer(ctx, reply, { op: 'restart', id: idOf(request) }));
  app.patch('/tasks/:id', (request, reply) => answer(ctx, reply, { ...bodyFields(request), op: 'edit', id: idOf(request) }));

  app.get('/groups', (_request, reply) => answer(ctx, reply, { op: 'groups' }));
  app.put('/groups/:name', (request, reply) =>
    answer(ctx, reply, { ...bodyFields(request), op: 'set_group', name: (request.params as { name: string }).name }),
  );
  app.post('/pause', (request, reply) => answer(ctx, reply, { ...bodyFields(request), op: 'pause' }));
  app.post('/resume', (request, reply) => answer(ctx, reply, { ...bodyFields(request), op: 'resume' }));

  app.get('/tasks/:id/output', async (request, reply) => {
    const { stream, follow } = queryFields(request, ['stream', 'follow']);
    const streams = stream === undefined ? OUTPUT_STREAMS : OUTPUT_STREAMS.filter((name) => name === stream);
    if (streams.length === 0) throw requestError.BAD_REQUEST(`stream must be one of ${OUTPUT_STREAMS.join(', ')}, got ${JSON.stringify(stream)}`);
    const task = await ctx.scheduler.get(idOf(request));
    if (follow !== undefined && follow !== '0' && follow !== 'false') return followEvents(ctx, reply, task.id, streams);
    const output = ctx.outputs.textOf(task);
    for (const name of OUTPUT_STREAMS) if (!streams.includes(name)) letGo(output[name]);
    return sendJson(reply, 200, { ok: true, ...Object.fromEntries(streams.map((name) => [name, output[name]])) });
  });

  app.get('/events', (request, reply) => {
    const { ids } = queryFields(request, ['ids']);
    const parsed = parseRequest({ op: 'subscribe', ...(typeof ids === 'string' ? { ids: ids.split(',').filter(Boolean) } : {}) }) as ValidRequest<'subscribe'>;
    const events = openEventStream(reply);
    const unsubscribe = ctx.subscribers.add({
      ids: parsed.ids && new Set(parsed.ids),
      deliver: ({ record }) => events.push('task', record),
      removed: (removal) => events.push('removed', removal),
    });
    const until = AbortSignal.any([events.closed, ctx.stopping]);
    const stop = () => {
      unsubscribe();
      events.end();
    };
    if (until.aborted) stop(); // opened while the daemon stops
    else until.addEventListener('abort', stop, { once: true });
  });
}

/** `?follow=1`: the task's output (of `streams`) as `output` events while it is written, then its record as a `task` event. */
async function followEvents(ctx: DaemonContext, reply: FastifyReply, id: string, streams: readonly OutputStream[]): Promise<void> {
  const task = await ctx.scheduler.get(id);
  const events = openEventStream(reply);
  const until = AbortSignal.any([events.closed, ctx.stopping]);
  try {
    const ended = await ctx.outputs.follow(task, until, async (stream, data) =>
      streams.includes(stream) ? events.send('output', { event: 'output', id, stream, data }) : true,
    );
    if (!until.aborted) await events.send('task', ended.record());
  } finally {
    events.end(); // the answer is the stream's: an error can only end it
  }
}
