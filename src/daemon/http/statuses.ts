import type { RequestErrorCode } from '../../protocol/index.js';

/** The HTTP status of each request error: a failed task is no error (200 with its record). */
export const STATUS_OF: Record<RequestErrorCode, number> = {
  BAD_JSON: 400,
  BAD_REQUEST: 400,
  UNKNOWN_DEPENDENCY: 400,
  UNKNOWN_GROUP: 400,
  UNKNOWN_OP: 400,
  LINE_TOO_LONG: 413,
  PAYLOAD_TOO_LARGE: 413,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  ID_CONFLICT: 409,
  NOT_CANCELABLE: 409,
  NOT_RESTARTABLE: 409,
  NOT_EDITABLE: 409,
  UNSUPPORTED_MEDIA_TYPE: 415,
  QUEUE_FULL: 503,
  SHUTTING_DOWN: 503,
  TOO_MANY_CONNECTIONS: 503,
  INTERNAL: 500,
};
