import { decodeLine, type RequestError, requestError } from '../../protocol/index.js';

/**
 * A body that is not JSON, kept as the request's body and refused once parsing is over
 * (refuseUnreadableBody): fastify closes the connection on any error of a body parser,
 * where a body read to its end leaves nothing in the way of the connection's next request.
 */
class UnreadableBody {
  constructor(readonly error: RequestError) {}
}

/** A JSON body, read by the line protocol's rules (UTF-8, then JSON), with its messages; empty is no body. */
export function decodeBody(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  const decoded = decodeLine(body);
  if (!decoded.ok) throw requestError.BAD_JSON(decoded.message.replace('the line', 'the body'));
  return decoded.value;
}

/** decodeBody for the framework's parser: never throws. */
export function parseBody(body: Buffer): unknown {
  try {
    return decodeBody(body);
  } catch (error) {
    return new UnreadableBody(error as RequestError);
  }
}

/** A hook after parsing: the refusal of a body that is not JSON. */
export async function refuseUnreadableBody(request: { body: unknown }): Promise<void> {
  if (request.body instanceof UnreadableBody) throw request.body.error;
}
