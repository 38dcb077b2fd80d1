/**
 * HTTP seen by the line protocol. A connection that opens with an HTTP
 * request line is served by the HTTP front (see sniff.ts). One that sends
 * HTTP later, after a line of JSON, may be a web page's request smuggled in
 * by the user's browser (a no-cors fetch needs no permission): read as
 * lines, its header lines would be mere BAD_JSON, but a body line that is a
 * request would run. So, as Redis does, such a connection is closed before
 * anything more of it is read. This module is the one place that decides
 * what looks like HTTP.
 */

/** An RFC 9110 token character: what HTTP methods and header names are made of. */
const TOKEN_CHAR = "[!#$%&'*+.^_`|~0-9A-Za-z-]";
const TOKEN = `${TOKEN_CHAR}+`;
/** `POST /path HTTP/1.1`: method, space, target, space, version. */
const REQUEST_LINE = new RegExp(`^${TOKEN} [^ ]+ HTTP/\\d\\.\\d$`);
/**
 * `Host: ...`, which every request a browser sends carries (as Redis, which closes on `Host:` too).
 * No JSON text starts like that, so no request is lost; any other line, `Note: ...` say, is an
 * error like any other, answered with BAD_JSON on a connection that stays open.
 */
const HEADER_LINE = /^host:/i;
const STARTS_AS_TOKEN = new RegExp(`^${TOKEN_CHAR}`);

export type HttpLine = 'request-line' | 'header';

/** Whether a line (without its line ending) is an HTTP request line or a Host header line. */
export function looksLikeHttp(line: Buffer): HttpLine | undefined {
  // Requests start with "{" (or a blank), which no HTTP line does: they cost one byte's look.
  if (line.length === 0 || !STARTS_AS_TOKEN.test(String.fromCharCode(line[0]!))) return undefined;
  const text = line.toString('latin1'); // any bytes, one character each: no UTF-8 decoding can fail
  if (REQUEST_LINE.test(text)) return 'request-line';
  return HEADER_LINE.test(text) ? 'header' : undefined;
}

const REFUSAL_BODY =
  'An HTTP request line must come whole, within 2 seconds and 8 KiB of the connection opening, to be served as HTTP; ' +
  'this one did not, and the line protocol (newline-delimited JSON) does not take HTTP. See docs/http.md.\n';

/** The answer to a connection that opened with an HTTP request line too slow or too long for HTTP, so that curl or a browser shows why. */
export const HTTP_REFUSAL = [
  'HTTP/1.1 400 Bad Request',
  'Content-Type: text/plain; charset=utf-8',
  `Content-Length: ${Buffer.byteLength(REFUSAL_BODY)}`,
  'Connection: close',
  '',
  REFUSAL_BODY,
].join('\r\n');
