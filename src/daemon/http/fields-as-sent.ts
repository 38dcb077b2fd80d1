import { RequestError, requestError } from '../../protocol/index.js';

/**
 * Runs `parse`, its BAD_REQUEST messages naming the field as the client sent it (`sent`) where they
 * name the field it became (`became`): `dependencies` for `depends_on`, a tasksolver client's `file`
 * for `script.source_b64`.
 */
export function withFieldAsSent<T>(parse: () => T, became: string, sent: string): T {
  try {
    return parse();
  } catch (error) {
    // The field a message names comes first in it; what the client sent, quoted later, stays as sent.
    if (error instanceof RequestError && error.code === 'BAD_REQUEST' && error.message.startsWith(became)) {
      throw requestError.BAD_REQUEST(sent + error.message.slice(became.length));
    }
    throw error;
  }
}
