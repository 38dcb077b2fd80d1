import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { isObject, requestError } from '../../protocol/index.js';
import type { DaemonContext } from '../context.js';
import { sameSecret } from '../secret.js';
import { sendJson } from './reply.js';
import { SESSION_COOKIE, sessionValue } from './session.js';

/** The dashboard's files, shipped beside dist/ and read once at start: a few small files. */
const DASHBOARD_DIR = fileURLToPath(new URL('../../../dashboard/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Nothing of another site is loaded or framed: the page needs no internet, and no page may wrap it. */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

/** A session lasts as long as a working week; the token is asked again after. */
const SESSION_SECONDS = 7 * 24 * 3600;

export function registerDashboard(app: FastifyInstance, ctx: DaemonContext): void {
  const files = new Map(
    readdirSync(DASHBOARD_DIR)
      .filter((name) => TYPES[extname(name)])
      .map((name) => [name, readFileSync(join(DASHBOARD_DIR, name))]),
  );
  const serve = (name: string) => (_request: unknown, reply: FastifyReply) => {
    const file = files.get(name);
    if (!file) throw requestError.NOT_FOUND({ route: `GET /dashboard/${name}` });
    return reply.headers(PAGE_HEADERS).type(TYPES[extname(name)]!).send(file);
  };
  app.get('/', serve('index.html'));
  app.get('/dashboard/:file', (request, reply) => serve((request.params as { file: string }).file)(request, reply));

  // The page asks for the token once and keeps a value made from it in a cookie that no script can read.
  app.post('/login', (request, reply) => {
    const token = isObject(request.body) ? request.body.token : undefined;
    if (typeof token !== 'string') throw requestError.BAD_REQUEST('token is required: a body {"token": "..."}');
    const expected = ctx.config.token;
    if (expected !== undefined && !sameSecret(token, expected)) throw requestError.UNAUTHORIZED({ sent: 'a wrong token' });
    const value = expected === undefined ? '' : sessionValue(expected);
    void reply.header('Set-Cookie', `${SESSION_COOKIE}=${value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_SECONDS}`);
    return sendJson(reply, 200, { ok: true });
  });
  app.post('/logout', (_request, reply) => {
    void reply.header('Set-Cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    return sendJson(reply, 200, { ok: true });
  });
}
