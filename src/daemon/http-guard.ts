/**
 * What this port does with HTTP. A web page can make the user's browser send
 * `POST / HTTP/1.1` with a body of its choosing to 127.0.0.1:3000 (a no-cors
 * fetch needs no permission). Read as lines, the header lines would be mere
 * BAD_JSON, but a body line that is a request would run. So, as Redis does, a
 * connection that shows HTTP is closed before anything more of it is read.
 * An HTTP front end on this port would take over here: this module is the one
 * place that decides what is HTTP.
 */

/** An RFC 9110 token character: what HTTP methods and header names are made of. */
const TOKEN_CHAR = "[!#$%&'*+.^_`|~0-9A-Za-z-]";
const TOKEN = `${TOKEN_CHAR}+`;
/** `POST /path HTTP/1.1`: method, space, target, space, version. */
const REQUEST_LINE = new RegExp(`^${TOKEN} [^ ]+ HTTP/\\d\\.\\d$`);
/** `Host: ...`: a header name and its colon. No JSON text starts like that, so no request is lost. */
const HEADER_LINE = new RegExp(`^${TOKEN}:`);
const STARTS_AS_TOKEN = new RegExp(`^${TOKEN_CHAR}`);

export type HttpLine = 'request-line' | 'header';

/** Whether a line (without its line ending) is an HTTP request line or header line. */
export function looksLikeHttp(line: Buffer): HttpLine | undefined {
  // Requests start with "{" (or a blank), which no HTTP line does: they cost one byte's look.
  if (line.length === 0 || !STARTS_AS_TOKEN.test(String.fromCharCode(line[0]!))) return undefined;
  const text = line.toString('latin1'); // any bytes, one character each: no UTF-8 decoding can fail
  if (REQUEST_LINE.test(text)) return 'request-line';
  return HEADER_LINE.test(text) ? 'header' : undefined;
}

const REFUSAL_BODY = 'This port speaks task-manager\'s protocol, newline-delimited JSON, not HTTP. See docs/protocol.md.\n';

/** The answer to a connection that opened with an HTTP request line, so that curl or a browser shows why. */
export const HTTP_REFUSAL = [
  'HTTP/1.1 400 Bad Request',
  'Content-Type: text/plain; charset=utf-8',
  `Content-Length: ${Buffer.byteLength(REFUSAL_BODY)}`,
  'Connection: close',
  '',
  REFUSAL_BODY,
].join('\r\n');
