import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { requestError } from '../../protocol/index.js';
import { ConfigError, type DaemonConfig } from '../config.js';
import { sameSecret } from '../secret.js';
import { cookieOf, SESSION_COOKIE, sessionValue } from './session.js';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARDS = new Set(['0.0.0.0', '::']);
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Routes anyone may reach: a liveness probe, and the dashboard's page and login, which ask for the token themselves. */
export const OPEN_ROUTES = new Set(['GET /health', 'HEAD /health', 'GET /', 'HEAD /', 'GET /dashboard/:file', 'HEAD /dashboard/:file', 'POST /login', 'POST /logout']);

/**
 * The host names a request may name in its Host header. A page of another
 * site can make the user's browser reach 127.0.0.1 under a name of its own
 * (DNS rebinding); such a request carries that name, and is refused. A
 * daemon listening on every address cannot know its names: it answers any,
 * and relies on its token, which it must have there.
 */
function hostNames(config: DaemonConfig): Set<string> | undefined {
  if (WILDCARDS.has(config.host)) return undefined;
  const own = isIP(config.host) === 6 ? `[${config.host}]` : config.host;
  const loopback = own === 'localhost' || own === '[::1]' || own.startsWith('127.');
  return new Set([own.toLowerCase(), ...(loopback ? LOOPBACK_NAMES : [])]);
}

/** `example:3000` → `example`, `[::1]:3000` → `[::1]`. */
const hostName = (host: string) => (host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, '')).toLowerCase();

/** Whether a request carries the token: as a bearer, or as the dashboard's session cookie. */
function authenticated(request: FastifyRequest, token: string): boolean {
  const bearer = /^Bearer +(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1];
  if (bearer !== undefined) return sameSecret(bearer, token);
  const session = cookieOf(request.headers.cookie, SESSION_COOKIE);
  return session !== undefined && sameSecret(session, sessionValue(token));
}

/**
 * An origin of --allow-origin as browsers send it in `Origin` (`https://app.example`, the default
 * port left out, the host in lower case); ConfigError, naming the flag, for anything else.
 */
export function originOf(text: string): string {
  if (text === '*') throw new ConfigError('--allow-origin "*" is not taken: name each site (scheme://host:port), or a page of any site could run commands');
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  const bare = url && url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && url.password === '';
  if (!url || !bare || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new ConfigError(`--allow-origin ${JSON.stringify(text)} is not an origin: expected scheme://host or scheme://host:port (http or https, no path)`);
  }
  return url.origin;
}

/** What a page of an allowed origin may send: the methods of the routes, and the headers of a JSON request with a token. */
const CORS_PREFLIGHT = {
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type',
  'Access-Control-Max-Age': '600',
};

/**
 * A request from a page of an origin the operator allowed (--allow-origin): CORS headers on its
 * answer, whatever the route does with it (event streams write their own head), and a preflight
 * answered at once, before any token is asked for (a browser sends none with it). True if answered.
 */
function allowCrossOrigin(origin: string, request: FastifyRequest, reply: FastifyReply): boolean {
  reply.raw.setHeader('Access-Control-Allow-Origin', origin);
  reply.raw.setHeader('Access-Control-Expose-Headers', 'Location, WWW-Authenticate');
  if (request.method !== 'OPTIONS' || request.headers['access-control-request-method'] === undefined) return false;
  void reply.code(204).headers(CORS_PREFLIGHT).send();
  return true;
}

/**
 * Runs before every route: who may call. Refused, in this order: a Host of
 * another name (403), a change asked by a page of another Origin (403) that
 * the operator did not allow, no token where one is needed (401). Bodies
 * that are not JSON are refused by the body parser (415), so no cross-site
 * form can post one.
 */
export function guardOf(config: DaemonConfig) {
  const names = hostNames(config);
  const allowed = new Set(config.allowOrigins);
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const host = request.headers.host ?? '';
    if (names && !names.has(hostName(host))) throw requestError.FORBIDDEN('Host', host);
    const origin = request.headers.origin;
    // Answers differ by Origin once some are allowed: caches must keep them apart.
    if (allowed.size > 0) reply.raw.setHeader('Vary', 'Origin');
    if (origin !== undefined && allowed.has(origin)) {
      if (allowCrossOrigin(origin, request, reply)) return reply;
    } else if (origin !== undefined && !SAFE_METHODS.has(request.method) && origin !== `http://${host}`) {
      throw requestError.FORBIDDEN('Origin', origin);
    }
    if (config.token === undefined || OPEN_ROUTES.has(`${request.method} ${request.routeOptions.url}`)) return;
    if (!authenticated(request, config.token)) {
      void reply.header('WWW-Authenticate', 'Bearer realm="task-manager"');
      throw requestError.UNAUTHORIZED({ sent: 'no bearer' });
    }
  };
}
