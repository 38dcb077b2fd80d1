import { decodeLine, requestError } from '../../protocol/index.js';

/** A JSON body, read by the line protocol's rules (UTF-8, then JSON), with its messages; empty is no body. */
export function decodeBody(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  const decoded = decodeLine(body);
  if (!decoded.ok) throw requestError.BAD_JSON(decoded.message.replace('the line', 'the body'));
  return decoded.value;
}
