import { requestError, shown, typeName } from './errors.js';
import {
  field,
  integer,
  isObject,
  mustBe,
  nearest,
  oneOf,
  plainString,
  readFields,
  rejectUnknownFields,
  required,
  text,
  withDefault,
  type Fields,
  type ReadFields,
  type SentFields,
} from './fields.js';
import { SCRIPT_LANGS, TASK_STATES, type Ref, type Script } from './types.js';

/**
 * The one schema of the requests: a table of fields per op, from which both
 * the request types and their validation come. Each error names the field.
 */

const badRequest = requestError.BAD_REQUEST;

export const MAX_ID_LENGTH = 128;
export const ID_PATTERN = new RegExp(`^[A-Za-z0-9._:-]{1,${MAX_ID_LENGTH}}$`);
const MAX_TIMER_MS = 2_147_483_647; // the longest a Node timer can wait (about 24.8 days)
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
const MAX_LIST_LIMIT = 10_000;
const MAX_GROUP_CONCURRENCY = 100_000;
/** The orders `list` gives tasks in: of submission, or its reverse. */
export const LIST_ORDERS = ['oldest', 'newest'] as const;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Linux refuses to exec with a single argument or environment entry longer than this (MAX_ARG_STRLEN, less the NUL). */
const MAX_ARGUMENT_BYTES = 128 * 1024 - 1;
const MAX_ARGUMENTS = 10_000;
const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;
/** The last instant a JavaScript Date can hold (year 275760). */
const LATEST_DATE_MS = 8.64e15;

/** A string that becomes one exec argument or environment entry. */
function argument(value: unknown, name: string, extraBytes = 0): string {
  const text = plainString(value, name);
  if (Buffer.byteLength(text) + extraBytes > MAX_ARGUMENT_BYTES) {
    throw badRequest(`${name} is longer than ${MAX_ARGUMENT_BYTES} bytes, the most one program argument or variable can hold`);
  }
  return text;
}

function payloadText(value: unknown, name: string): string {
  const text = plainString(value, name);
  if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) throw badRequest(`${name} is larger than ${MAX_PAYLOAD_BYTES} bytes`);
  return text;
}

function argumentArray(value: unknown, name: string, { nonEmpty = false } = {}): string[] {
  if (!Array.isArray(value)) throw mustBe(name, 'an array of strings', value);
  if (nonEmpty && value.length === 0) throw badRequest(`${name} must not be an empty array`);
  if (value.length > MAX_ARGUMENTS) throw badRequest(`${name} has ${value.length} items; the most is ${MAX_ARGUMENTS}`);
  return value.map((item, i) => argument(item, `${name}[${i}]`));
}

/** A task id, as a field or within a list. */
function taskIdText(value: unknown, name: string): string {
  if (typeof value !== 'string') throw mustBe(name, 'a string', value);
  if (!ID_PATTERN.test(value)) {
    throw badRequest(`${name} must be 1 to ${MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -, got ${shown(value)}`);
  }
  return value;
}

const taskId = field<string>(taskIdText);

const priority = integer(-1_000_000_000, 1_000_000_000);

/** A group's name: the same characters as a task id. */
const groupName = field<string>(taskIdText);

export const DEFAULT_GROUP = 'default';

/** Task ids, each once. */
const idList = field<string[]>((value, name) => {
  if (!Array.isArray(value)) throw mustBe(name, 'an array of task ids', value);
  return [...new Set(value.map((item, i) => taskIdText(item, `${name}[${i}]`)))];
});

const payload = field<string>(payloadText);

const argumentList = field<string[]>(argumentArray);

const command = field<string | string[]>((value, name) => {
  if (typeof value === 'string') return argument(plainString(value, name, { nonEmpty: true }), name);
  if (Array.isArray(value)) {
    const argv = argumentArray(value, name, { nonEmpty: true });
    if (argv[0]!.trim() === '') throw badRequest(`${name}[0] must name a program, got an empty string`);
    return argv;
  }
  throw mustBe(name, 'a string or an array of strings', value);
});

const scriptLang = oneOf(SCRIPT_LANGS);

const script = field<Script>((value, name) => {
  if (!isObject(value)) throw mustBe(name, 'an object {lang, source} or {lang, source_b64}', value);
  rejectUnknownFields(value, ['lang', 'source', 'source_b64'], name);
  // Read even when absent: a missing lang is told as the list of langs.
  const lang = scriptLang.read(value.lang, `${name}.lang`);
  const hasSource = value.source !== undefined;
  if (hasSource === (value.source_b64 !== undefined)) throw badRequest(`${name} must have exactly one of source and source_b64`);
  if (hasSource) return { lang, source: payloadText(value.source, `${name}.source`) };
  const encoded = value.source_b64;
  if (typeof encoded === 'string' && encoded.length > MAX_PAYLOAD_BYTES) payloadText(encoded, `${name}.source_b64`);
  if (typeof encoded !== 'string' || encoded.length % 4 !== 0 || !BASE64.test(encoded)) {
    throw mustBe(`${name}.source_b64`, 'a base64 string', encoded);
  }
  return { lang, source_b64: encoded };
});

/** An environment variable's name, checked before it becomes a key. */
function variableName(key: string): string {
  if (key === '' || key.includes('=') || key.includes('\0')) {
    throw badRequest(`env key ${shown(key)} is not a valid variable name (empty, or has "=" or NUL)`);
  }
  // JSON.parse keeps "__proto__" as an ordinary key, but JavaScript that copies an object by
  // assignment (copy[key] = value) sets the prototype instead and the variable is lost without a word.
  if (key === '__proto__') {
    throw badRequest('env.__proto__ is not allowed: JavaScript reads "__proto__" as the object\'s prototype, so code copying env would silently drop it; use another variable name');
  }
  return key;
}

const environment = field<Record<string, string>>((value, name) => {
  if (!isObject(value)) throw mustBe(name, 'an object of string to string', value);
  const entries = Object.entries(value);
  if (entries.length > MAX_ARGUMENTS) throw badRequest(`${name} has ${entries.length} variables; the most is ${MAX_ARGUMENTS}`);
  // fromEntries defines each key as the object's own property: no key can reach a prototype setter.
  return Object.fromEntries(
    entries.map(([key, item]) => [variableName(key), argument(item, `${name}.${key}`, Buffer.byteLength(key) + 1)]),
  );
});

/** An instant, kept as epoch milliseconds. */
const instant = field<string | number, number>((value, name) => {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0 || value > LATEST_DATE_MS) {
      throw badRequest(`${name} must be epoch milliseconds (an integer from 0 to ${LATEST_DATE_MS}) or an ISO-8601 string, got ${value}`);
    }
    return value;
  }
  if (typeof value === 'string') {
    const time = isoTime(value);
    if (time === undefined || time > LATEST_DATE_MS) throw badRequest(`${name} must be an ISO-8601 date-time such as "2030-01-31T09:30:00Z", got ${shown(value)}`);
    return time;
  }
  throw mustBe(name, 'an ISO-8601 string or epoch milliseconds', value);
});

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** Epoch ms of a strict ISO-8601 date or date-time that names a real day and time, else undefined. */
function isoTime(text: string): number | undefined {
  const match = ISO_8601.exec(text);
  if (!match) return undefined;
  const [, year, month, day, hour = '0', minute = '0', second = '0'] = match.map((part) => part ?? undefined);
  const calendar = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  const realDay = calendar.getUTCMonth() === Number(month) - 1 && calendar.getUTCDate() === Number(day);
  if (!realDay || Number(hour) > 23 || Number(minute) > 59 || Number(second) > 59) return undefined;
  const time = Date.parse(text.replace(' ', 'T'));
  return Number.isNaN(time) ? undefined : time;
}

/**
 * The fields of `run` and `submit`, in the order of docs/protocol.md. A new
 * field of the task spec is one line here; its type, its check and its place
 * in the "did you mean" hints follow. `command` is read as `cmd`; `id` names
 * the task and is not part of its spec.
 */
export const TASK_SPEC_FIELDS = {
  cmd: command,
  command,
  script,
  args: argumentList,
  id: taskId,
  timeout_ms: integer(1, MAX_TIMER_MS, `from 1 to ${MAX_TIMER_MS}`),
  cwd: text({ nonEmpty: true }),
  env: environment,
  stdin: payload,
  depends_on: withDefault(idList, []),
  start_at: instant,
  delay_ms: integer(0, MAX_TIMER_MS),
  retries: withDefault(integer(0, 100), 0),
  retry_delay_ms: withDefault(integer(0, MAX_TIMER_MS), 1000),
  priority: withDefault(priority, 0),
  max_output_bytes: withDefault(integer(1, MAX_OUTPUT_BYTES, `from 1 to ${MAX_OUTPUT_BYTES}`), 1024 * 1024),
  group: groupName,
} satisfies Fields;

/** A task spec as a client may send it (see docs/protocol.md). */
export type TaskSpecInput = SentFields<typeof TASK_SPEC_FIELDS>;

/**
 * A validated spec with aliases folded and defaults filled in. Two submits
 * with equal TaskSpecs are the same task (idempotent ids).
 */
export type TaskSpec = Omit<ReadFields<typeof TASK_SPEC_FIELDS>, 'command' | 'id'>;

/** What a spec holds for the fields a client left out. */
export const SPEC_DEFAULTS = readFields(TASK_SPEC_FIELDS, {});

/** Validates the task spec fields of `run`/`submit` and fills in defaults. */
export function taskSpec(sent: Record<string, unknown>): { id?: string; spec: TaskSpec } {
  if (sent.cmd !== undefined && sent.command !== undefined) throw badRequest('give cmd or command, not both');
  const hasCmd = sent.cmd !== undefined || sent.command !== undefined;
  if (hasCmd && sent.script !== undefined) throw badRequest('give either cmd or script, not both');
  if (!hasCmd && sent.script === undefined) throw badRequest('cmd is required (a string or an array of strings), or script');
  if (sent.start_at !== undefined && sent.delay_ms !== undefined) throw badRequest('give start_at or delay_ms, not both');
  const { command: alias, id, ...spec } = readFields(TASK_SPEC_FIELDS, sent);
  if (alias !== undefined) spec.cmd = alias;
  // The default group is kept as no group: a spec means the same task with or without it, as before groups existed.
  if (spec.group === DEFAULT_GROUP) delete spec.group;
  return id === undefined ? { spec } : { id, spec };
}

/** The group a spec's task counts against. */
export const groupOf = (spec: { group?: string | undefined }): string => spec.group ?? DEFAULT_GROUP;

/** The fields `edit` may change in a task that has not started, and what reading them makes. */
const EDIT_FIELDS = {
  id: required(taskId),
  cmd: command,
  command,
  priority,
  start_at: instant,
  delay_ms: TASK_SPEC_FIELDS.delay_ms,
  group: groupName,
} satisfies Fields;

/** A validated `edit`: the task's id and the changes, `cmd` folded from its alias. */
export interface TaskEdit {
  id: string;
  cmd?: string | string[];
  priority?: number;
  /** epoch ms of the new start time (`start_at`, or `delay_ms` from now) */
  start_at?: number;
  group?: string;
}

function taskEdit(sent: Record<string, unknown>): TaskEdit {
  if (sent.cmd !== undefined && sent.command !== undefined) throw badRequest('give cmd or command, not both');
  if (sent.start_at !== undefined && sent.delay_ms !== undefined) throw badRequest('give start_at or delay_ms, not both');
  const { command: alias, delay_ms, ...read } = readFields(EDIT_FIELDS, sent);
  const edit: TaskEdit = read;
  if (alias !== undefined) edit.cmd = alias;
  if (delay_ms !== undefined) edit.start_at = Date.now() + delay_ms;
  if (Object.keys(edit).length === 1) throw badRequest('edit needs at least one of cmd, priority, start_at, delay_ms, group');
  return edit;
}

/** The fields an op takes besides `op` and `ref`, and what reading them makes. */
interface OpSchema<T extends Fields, Body> {
  fields: T;
  /** the fields' names, in order */
  names: readonly string[];
  read(sent: Record<string, unknown>): Body;
}

const opSchema = <T extends Fields, Body>(fields: T, read: (sent: Record<string, unknown>) => Body): OpSchema<T, Body> => ({
  fields,
  names: Object.keys(fields),
  read,
});

const plain = <T extends Fields>(fields: T) => opSchema(fields, (sent) => readFields(fields, sent));

const SPEC_OP = opSchema(TASK_SPEC_FIELDS, taskSpec);

const requiredId = required(taskId);

/** Every op, in the order error messages list them. */
const OP_SCHEMAS = {
  run: SPEC_OP,
  submit: SPEC_OP,
  status: plain({ id: requiredId }),
  wait: plain({ id: requiredId, timeout_ms: integer(0, MAX_TIMER_MS) }),
  list: plain({
    state: oneOf(TASK_STATES),
    limit: integer(1, MAX_LIST_LIMIT),
    after: taskId,
    order: oneOf(LIST_ORDERS),
    group: groupName,
  }),
  cancel: plain({ id: requiredId }),
  follow: plain({ id: requiredId }),
  remove: plain({ id: requiredId }),
  restart: plain({ id: requiredId }),
  edit: opSchema(EDIT_FIELDS, taskEdit),
  pause: plain({ group: groupName }),
  resume: plain({ group: groupName }),
  groups: plain({}),
  set_group: plain({ name: required(groupName), concurrency: required(integer(1, MAX_GROUP_CONCURRENCY)) }),
  count: plain({}),
  health: plain({}),
  stats: plain({}),
  subscribe: plain({ ids: idList }),
  auth: plain({ token: required(text()) }),
};

export type Op = keyof typeof OP_SCHEMAS;
const isOp = (op: string): op is Op => Object.hasOwn(OP_SCHEMAS, op);

type OpFields<O extends Op> = (typeof OP_SCHEMAS)[O]['fields'];

/** What each op's fields become once read (`run`/`submit`: a normalized spec). */
type Bodies = { [O in Op]: ReturnType<(typeof OP_SCHEMAS)[O]['read']> };

/** The same table, typed so that reading op O is known to give Bodies[O]. */
const SCHEMAS: { [O in Op]: OpSchema<OpFields<O>, Bodies[O]> } = OP_SCHEMAS;

/** The fields of op O as a client sends them, besides `op` and `ref`. */
export type RequestFields<O extends Op> = SentFields<OpFields<O>>;

/** A request as a client sends it. */
export type Request<O extends Op = Op> = { [P in O]: { op: P; ref?: Ref } & RequestFields<P> }[O];

/** A validated request: task specs are normalized, everything else is as sent. */
export type ValidRequest<O extends Op = Op> = { [P in O]: { op: P; ref?: Ref } & Bodies[P] }[O];

/** The `ref` to echo, if the request has a usable one. */
export function readableRef(value: unknown): Ref | undefined {
  if (!isObject(value)) return undefined;
  const ref = value.ref;
  return typeof ref === 'string' || (typeof ref === 'number' && Number.isFinite(ref)) ? ref : undefined;
}

/** Turns one parsed JSON line into a request, or throws a RequestError naming the field. */
export function parseRequest(value: unknown): ValidRequest {
  if (!isObject(value)) throw badRequest(`a request must be a JSON object, got ${typeName(value)}`);
  const { op: sentOp, ref: sentRef, ...sent } = value;
  const ref = readableRef(value);
  if (sentRef !== undefined && ref === undefined) throw badRequest(`ref must be a string or a number, got ${typeName(sentRef)}`);
  const op = opOf(sentOp, sent);
  rejectUnknownFields(sent, SCHEMAS[op].names, `op "${op}"`);
  return validRequest(op, ref, sent);
}

function opOf(sentOp: unknown, sent: Record<string, unknown>): Op {
  if (sentOp === undefined) {
    if (sent.cmd === undefined && sent.command === undefined) throw badRequest('op is required (or cmd, which means op "run")');
    return 'run';
  }
  if (typeof sentOp !== 'string') throw mustBe('op', 'a string', sentOp);
  if (!isOp(sentOp)) throw requestError.UNKNOWN_OP(sentOp, Object.keys(OP_SCHEMAS), nearest(sentOp, Object.keys(OP_SCHEMAS)));
  return sentOp;
}

function validRequest<O extends Op>(op: O, ref: Ref | undefined, sent: Record<string, unknown>): ValidRequest<O> {
  return { op, ...(ref === undefined ? {} : { ref }), ...SCHEMAS[op].read(sent) };
}

/** A canonical text of a spec, for deciding whether two submits are the same task. */
export function specKey(spec: TaskSpec): string {
  return JSON.stringify(spec, (_key, value: unknown) =>
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );
}
