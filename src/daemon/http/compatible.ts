import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isObject, parseRequest, requestError, type TaskState, type ValidRequest, withFieldsNamed } from '../../protocol/index.js';
import type { Task } from '../../scheduler/index.js';
import type { DaemonContext } from '../context.js';
import { letGo } from '../answer.js';
import { handle } from '../handlers.js';
import { decodeBody } from './body.js';
import { sendJson } from './reply.js';
import { shellWords } from './shell-words.js';

/**
 * The routes of `tasksolver`-style task servers, so that their clients work
 * unchanged: a base64 program and an argument string in, a uuid out, and a
 * status of their own words.
 */
export function registerCompatibleRoutes(app: FastifyInstance, ctx: DaemonContext): void {
  app.post('/create_task', async (request, reply) => {
    const body = request.body;
    if (!isObject(body)) throw requestError.BAD_REQUEST('the body must be a JSON object {"type", "file", "args"}');
    const { type, file, args = '', ...rest } = body;
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined) throw requestError.BAD_REQUEST(`${JSON.stringify(unknown)} is not a field of create_task; its fields are type, file, args`);
    if (type !== 'python' && type !== 'bin') throw requestError.BAD_REQUEST(`type must be "python" or "bin", got ${JSON.stringify(type) ?? 'nothing'}`);
    if (typeof file !== 'string' || file === '') throw requestError.BAD_REQUEST(`file must be the program, base64-encoded, got ${JSON.stringify(file) ?? 'nothing'}`);
    if (typeof args !== 'string') throw requestError.BAD_REQUEST('args must be a string of arguments, split as a shell would');
    let words: string[];
    try {
      words = shellWords(args);
    } catch (error) {
      throw requestError.BAD_REQUEST(`args: ${(error as Error).message}`);
    }
    const fields = { op: 'submit', id: randomUUID(), script: { lang: type, source_b64: file }, args: words };
    const submit = withFieldsNamed(() => parseRequest(fields), { 'script.source_b64': 'file' }) as ValidRequest<'submit'>;
    const { task } = await handle(submit, ctx, new AbortController().signal);
    return sendJson(reply, 200, { id: task.id });
  });

  app.get('/get_status', async (request, reply) => {
    const task = await ctx.scheduler.get(await statusId(request, ctx.config.maxLineBytes));
    return sendJson(reply, 200, compatibleStatus(task, ctx));
  });

  app.get('/get_task_count', async (_request, reply) => sendJson(reply, 200, { tasks: (await ctx.scheduler.countByState()).tasks }));
}

const STATUS_WORDS: Record<TaskState, string> = {
  PENDING: 'WAIT',
  QUEUED: 'WAIT',
  RUNNING: 'RUNNING',
  COMPLETED: 'SUCCESS',
  FAILED: 'ERROR',
  CANCELED: 'ERROR',
};

/** `2026-11-24T23:05:01.123Z` as `2026-11-24 23:05:01Z`. */
const compatibleTime = (iso: string | undefined) => iso && `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`;

function compatibleStatus(task: Task, ctx: DaemonContext) {
  const record = task.record();
  const status = STATUS_WORDS[task.state];
  const output = ctx.outputs.textOf(task);
  const meta = {
    created_at: compatibleTime(record.created_at),
    ...(record.started_at && { started_at: compatibleTime(record.started_at) }),
    ...(record.finished_at && { finished_at: compatibleTime(record.finished_at) }),
  };
  if (status === 'ERROR') return { status, meta, result: { stdout: output.stdout, stderr: output.stderr } };
  letGo(output.stderr);
  return { status, meta, result: { stdout: output.stdout } };
}

/** The id of `GET /get_status`: `?id=`, or `{"id"}` as the body of the GET, as such clients send it. */
async function statusId(request: FastifyRequest, maxBytes: number): Promise<string> {
  const query = (request.query as { id?: unknown }).id;
  const body = query !== undefined ? undefined : await getBody(request, maxBytes);
  const id = query ?? (isObject(body) ? body.id : undefined);
  if (typeof id !== 'string') throw requestError.BAD_REQUEST('id is required: give ?id= or a JSON body {"id": "..."}');
  return id;
}

/** A GET's body, which the framework leaves unread: JSON, as on every route (415 otherwise). */
async function getBody(request: FastifyRequest, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  // Read to its end even when too long (but not kept), so that the answer can still be sent.
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes <= maxBytes) chunks.push(chunk);
  }
  if (bytes > maxBytes) throw requestError.PAYLOAD_TOO_LARGE(maxBytes);
  const type = request.headers['content-type'] ?? '';
  if (bytes > 0 && !/^application\/json\s*(;|$)/i.test(type)) throw requestError.UNSUPPORTED_MEDIA_TYPE(type);
  return decodeBody(Buffer.concat(chunks));
}
