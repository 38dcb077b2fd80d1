import type { ErrorResponse, Ref, TaskError } from './types.js';

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
  NOT_FOUND: 'no task has that id (over HTTP: or no route has that path)',
  UNKNOWN_DEPENDENCY: 'a depends_on id names no task',
  ID_CONFLICT: 'a task with that id exists with a different spec',
  NOT_CANCELABLE: 'the task has already finished',
  UNKNOWN_GROUP: 'the group named does not exist (set_group makes it)',
  NOT_RESTARTABLE: 'the task has not finished, or a task it depends on failed',
  NOT_EDITABLE: 'the task has already started or finished',
  QUEUE_FULL: 'too many tasks are not yet finished',
  TOO_MANY_CONNECTIONS: 'the server has as many connections as it accepts',
  UNAUTHORIZED: 'the connection has not authenticated',
  SHUTTING_DOWN: 'the server is stopping',
  INTERNAL: 'the server failed; the request may be retried',
  FORBIDDEN: 'HTTP only: the request came by way of another site (its Host or Origin header)',
  METHOD_NOT_ALLOWED: 'HTTP only: the route does not take that method',
  PAYLOAD_TOO_LARGE: 'HTTP only: the body is longer than the server accepts',
  UNSUPPORTED_MEDIA_TYPE: 'HTTP only: the body is not application/json',
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

const taskErrorOf = (code: TaskErrorCode, message: string): TaskError => ({ code, message });

/** One constructor per task error code: each message is written here, once. */
export const taskError = {
  TIMEOUT: (timeoutMs: number) => taskErrorOf('TIMEOUT', `timed out after ${timeoutMs} ms`),
  SPAWN_FAILED: (why: string) => taskErrorOf('SPAWN_FAILED', why),
  NONZERO_EXIT: (code: number) => taskErrorOf('NONZERO_EXIT', `exited with code ${code}`),
  /** `how`: the signal, or why the daemon counts it as killed */
  KILLED: (how: { signal: string } | { executorLosses: number }) =>
    taskErrorOf(
      'KILLED',
      'signal' in how
        ? `ended by ${how.signal}`
        : `killed with its executor process, which ended during ${how.executorLosses} attempts in a row (does the task kill its parent process?)`,
    ),
  DEPENDENCY_FAILED: (dependency: string, state: string) => taskErrorOf('DEPENDENCY_FAILED', `dependency "${dependency}" ended ${state}`),
  CANCELED: (when: 'before it started' | 'while running') => taskErrorOf('CANCELED', `canceled ${when}`),
  /** `why` defaults to the daemon's stop */
  INTERRUPTED: (why = 'the daemon stopped during the attempt; it runs again') => taskErrorOf('INTERRUPTED', why),
} satisfies { [Code in TaskErrorCode]: (...details: never[]) => TaskError };

/** An error to be answered to the client as `{ok: false, error: {code, message}}`; made by `requestError`. */
export class RequestError extends Error {
  override readonly name = 'RequestError';
  constructor(
    readonly code: RequestErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The answer that refuses a request (`ref`: the request's, when it could be read). */
export const errorResponse = (ref: Ref | undefined, { code, message }: RequestError): ErrorResponse => ({
  ok: false,
  ...(ref === undefined ? {} : { ref }),
  error: { code, message },
});

/** Short rendering of a received value for error messages. */
export function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** What a received value is, for "got ..." in error messages. */
export function typeName(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${shown(value)}`;
}

const NEEDS_AUTH = 'this daemon needs a token: send {"op":"auth","token":"..."} first';

/** Why a connection is refused for want of authentication. */
export type Unauthenticated =
  | { sent: 'no auth' }
  /** the line before auth was not even a request */
  | { sent: 'no request'; error: RequestError }
  | { sent: 'a wrong token' }
  | { sent: 'nothing'; withinMs: number }
  /** an HTTP request without the token in its Authorization header or the dashboard's cookie */
  | { sent: 'no bearer' };

/** What failed when a request got INTERNAL: the details go to the daemon's log, not to the client. */
const INTERNAL_MESSAGES = {
  request: 'the daemon failed to carry out the request',
  journal: 'the journal could not be written',
  store: 'the task store (PostgreSQL) could not be reached in time; the request may be retried',
};

/** Which bound a submit would pass. */
export type QueueBound =
  | { bound: '--max-queue'; unfinished: number }
  | { bound: '--max-spec-bytes'; unfinishedSpecBytes: number; specBytes: number; most: number };

/**
 * One constructor per request error code: the one place where each code's
 * message is made, so that clients meet one wording. (BAD_REQUEST's message
 * is the schema's: it names the field and the rule it broke.)
 */
export const requestError = {
  /** `why`: what `decodeLine` found wrong with the line */
  BAD_JSON: (why: string) => new RequestError('BAD_JSON', why),
  LINE_TOO_LONG: (maxLineBytes: number) =>
    new RequestError('LINE_TOO_LONG', `the line is longer than ${maxLineBytes} bytes (--max-line-bytes); it was skipped`),
  BAD_REQUEST: (message: string) => new RequestError('BAD_REQUEST', message),
  UNKNOWN_OP: (op: string, ops: readonly string[], near?: string) =>
    new RequestError('UNKNOWN_OP', `op ${shown(op)} is not known${near ? ` (did you mean "${near}"?)` : ''}; ops are ${ops.join(', ')}`),
  NOT_FOUND: (what: string | { route: string }) =>
    new RequestError('NOT_FOUND', typeof what === 'string' ? `id "${what}" names no task` : `there is no route ${what.route} (docs/http.md lists the routes)`),
  UNKNOWN_DEPENDENCY: (id: string) => new RequestError('UNKNOWN_DEPENDENCY', `depends_on names "${id}", which is not a known task`),
  ID_CONFLICT: (id: string) => new RequestError('ID_CONFLICT', `id "${id}" is already used by a task with a different spec`),
  NOT_CANCELABLE: (id: string, state: string) => new RequestError('NOT_CANCELABLE', `task "${id}" is already ${state} and cannot be canceled`),
  UNKNOWN_GROUP: (group: string) =>
    new RequestError('UNKNOWN_GROUP', `group "${group}" does not exist; make it first with set_group (task-manager set-group ${group} N)`),
  /** `dependency`: a task it depends on that ended FAILED or CANCELED */
  NOT_RESTARTABLE: (id: string, why: { state: string } | { dependency: string; state: string }) =>
    new RequestError(
      'NOT_RESTARTABLE',
      'dependency' in why
        ? `task "${id}" depends on "${why.dependency}", which ended ${why.state}: restart that one first (its dependents restart with it)`
        : `task "${id}" is ${why.state}; only a finished task (COMPLETED, FAILED or CANCELED) can be restarted`,
    ),
  NOT_EDITABLE: (id: string, state: string) =>
    new RequestError('NOT_EDITABLE', `task "${id}" is ${state}; only a task that has not started (PENDING or QUEUED) can be edited`),
  QUEUE_FULL: (full: QueueBound) =>
    new RequestError(
      'QUEUE_FULL',
      full.bound === '--max-queue'
        ? `${full.unfinished} tasks are not yet finished, the most this daemon holds (--max-queue)`
        : `the specs of unfinished tasks hold ${full.unfinishedSpecBytes} bytes, and this one ${full.specBytes} more: that is over ${full.most}, the most this daemon holds (--max-spec-bytes)`,
    ),
  TOO_MANY_CONNECTIONS: (maxConnections: number) =>
    new RequestError('TOO_MANY_CONNECTIONS', `the daemon already has ${maxConnections} connections (--max-connections)`),
  UNAUTHORIZED: (why: Unauthenticated) => new RequestError('UNAUTHORIZED', unauthorizedMessage(why)),
  /** `waiting`: the request waited for a task, which goes on after the restart; otherwise it would have made one */
  SHUTTING_DOWN: (request: 'waiting' | 'new task') =>
    new RequestError(
      'SHUTTING_DOWN',
      request === 'waiting' ? 'the daemon is stopping; the task continues after it restarts' : 'the daemon is stopping and accepts no new tasks',
    ),
  /** the details go to the daemon's log, not to the client */
  INTERNAL: (failed: 'request' | 'journal' | 'store') =>
    new RequestError('INTERNAL', INTERNAL_MESSAGES[failed]),
  /** `header`: the one that gave the request away as coming from another site */
  FORBIDDEN: (header: 'Host' | 'Origin', value: string) =>
    new RequestError(
      'FORBIDDEN',
      header === 'Host'
        ? `Host ${shown(value)} is not an address of this daemon (a page of another site reaching it by DNS rebinding?)`
        : `Origin ${shown(value)} is another site's, and may not change anything here (serve --allow-origin names sites that may)`,
    ),
  METHOD_NOT_ALLOWED: (method: string, path: string, allowed: readonly string[]) =>
    new RequestError('METHOD_NOT_ALLOWED', `${method} ${path} is not a route; ${path} takes ${allowed.join(', ')}`),
  PAYLOAD_TOO_LARGE: (maxBytes: number) => new RequestError('PAYLOAD_TOO_LARGE', `the body is longer than ${maxBytes} bytes (--max-line-bytes)`),
  UNSUPPORTED_MEDIA_TYPE: (type: string) =>
    new RequestError('UNSUPPORTED_MEDIA_TYPE', `Content-Type ${shown(type)} is not accepted; send the body as application/json`),
} satisfies { [Code in RequestErrorCode]: (...details: never[]) => RequestError };

function unauthorizedMessage(why: Unauthenticated): string {
  switch (why.sent) {
    case 'no auth':
      return NEEDS_AUTH;
    case 'no request':
      return `${NEEDS_AUTH} (this line: ${why.error.code}, ${why.error.message})`;
    case 'a wrong token':
      return 'the token is wrong';
    case 'nothing':
      return `no auth within ${why.withinMs} ms`;
    case 'no bearer':
      return 'this daemon needs a token: send the header "Authorization: Bearer <token>"';
  }
}

/**
 * Runs `parse`; a BAD_REQUEST it throws names its field as the user gave it: `names` maps a field
 * as the schema names it (`depends_on`, `script.source_b64`) to that name (`dependencies`, `file`,
 * `--depends-on`). The field comes first in such a message; what was sent, quoted later, stays as sent.
 */
export function withFieldsNamed<T>(parse: () => T, names: Record<string, string>): T {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof RequestError) || error.code !== 'BAD_REQUEST') throw error;
    const { message } = error;
    const field = Object.keys(names).find((name) => message.startsWith(name) && !/\w/.test(message[name.length] ?? ''));
    throw field === undefined ? error : requestError.BAD_REQUEST(names[field] + message.slice(field.length));
  }
}
