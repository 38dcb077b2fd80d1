/**
 * The one catalog of error codes. Request errors answer a request with
 * `ok: false`; task errors describe why a task did not complete and appear in
 * the task record's `error` field.
 */
export const REQUEST_ERRORS = {
  BAD_JSON: 'the line is not valid UTF-8 JSON',
  LINE_TOO_LONG: 'the line is longer than the server accepts',
  BAD_REQUEST: 'a field is missing, of the wrong type or out of range',
  UNKNOWN_OP: 'the op is not one the server knows',
  NOT_FOUND: 'no task has that id',
  UNKNOWN_DEPENDENCY: 'a depends_on id names no task',
  ID_CONFLICT: 'a task with that id exists with a different spec',
  NOT_CANCELABLE: 'the task has already finished',
  QUEUE_FULL: 'too many tasks are not yet finished',
  TOO_MANY_CONNECTIONS: 'the server has as many connections as it accepts',
  UNAUTHORIZED: 'the connection has not authenticated',
  SHUTTING_DOWN: 'the server is stopping',
  INTERNAL: 'the server failed; the request may be retried',
} as const;

export type RequestErrorCode = keyof typeof REQUEST_ERRORS;

export const TASK_ERRORS = {
  TIMEOUT: 'the attempt ran past timeout_ms and was killed',
  SPAWN_FAILED: 'the program could not be started',
  NONZERO_EXIT: 'the program exited with a non-zero code',
  KILLED: 'the program was ended by a signal',
  DEPENDENCY_FAILED: 'a task it depends on failed or was canceled',
  CANCELED: 'the task was canceled',
  INTERRUPTED: 'the daemon stopped, or lost the process supervising it, while the attempt ran; it runs again',
} as const;

export type TaskErrorCode = keyof typeof TASK_ERRORS;

/** An error to be answered to the client as `{ok: false, error: {code, message}}`. */
export class RequestError extends Error {
  override readonly name = 'RequestError';
  constructor(
    readonly code: RequestErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new RequestError('BAD_REQUEST', message);
