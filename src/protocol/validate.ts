import { RequestError, badRequest } from './errors.js';
import {
  SCRIPT_LANGS,
  SPEC_DEFAULTS,
  TASK_STATES,
  type Op,
  type Ref,
  type Script,
  type TaskSpec,
  type ValidRequest,
} from './types.js';

export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const MAX_TIMER_MS = 2_147_483_647; // the longest a Node timer can wait (about 24.8 days)
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
const MAX_LIST_LIMIT = 10_000;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Linux refuses to exec with a single argument or environment entry longer than this (MAX_ARG_STRLEN, less the NUL). */
const MAX_ARGUMENT_BYTES = 128 * 1024 - 1;
const MAX_ARGUMENTS = 10_000;
const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;
/** The last instant a JavaScript Date can hold (year 275760). */
const LATEST_DATE_MS = 8.64e15;

type Fields = Record<string, unknown>;

const SPEC_FIELDS = [
  'cmd', 'command', 'script', 'args', 'id', 'timeout_ms', 'cwd', 'env', 'stdin', 'depends_on',
  'start_at', 'delay_ms', 'retries', 'retry_delay_ms', 'priority', 'max_output_bytes',
];

/** The fields each op takes besides `op` and `ref`. */
const OP_FIELDS: Record<Op, readonly string[]> = {
  run: SPEC_FIELDS,
  submit: SPEC_FIELDS,
  status: ['id'],
  wait: ['id', 'timeout_ms'],
  list: ['state', 'limit', 'after'],
  cancel: ['id'],
  follow: ['id'],
  count: [],
  health: [],
  stats: [],
  subscribe: ['ids'],
  auth: ['token'],
};

const isOp = (op: string): op is Op => Object.hasOwn(OP_FIELDS, op);

/** Short rendering of a received value for error messages. */
function shown(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function typeName(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${shown(value)}`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

function rejectUnknownFields(fields: Fields, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(fields)) {
    if (allowed.includes(key)) continue;
    // Only names of about the right length are compared: the distance costs |key| x |name|.
    const near = allowed.find((name) => Math.abs(name.length - key.length) <= 2 && editDistance(key, name) <= 2);
    const hint = near ? ` (did you mean "${near}"?)` : `; ${where} takes ${allowed.map((f) => `"${f}"`).join(', ') || 'no fields'}`;
    throw badRequest(`unknown field ${shown(key)}${hint}`);
  }
}

function integer(fields: Fields, name: string, min: number, max: number, what?: string): number | undefined {
  const value = fields[name];
  if (value === undefined) return undefined;
  const range = what ?? `between ${min} and ${max}`;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw badRequest(`${name} must be an integer ${range}, got ${typeName(value)}`);
  }
  if (value < min || value > max) throw badRequest(`${name} must be an integer ${range}, got ${value}`);
  return value;
}

function plainString(value: unknown, name: string, { nonEmpty = false } = {}): string {
  if (typeof value !== 'string') throw badRequest(`${name} must be a string, got ${typeName(value)}`);
  if (nonEmpty && value.trim() === '') throw badRequest(`${name} must not be empty`);
  if (value.includes('\0')) throw badRequest(`${name} must not contain a NUL character`);
  return value;
}

/** A string that becomes one exec argument or environment entry. */
function argument(value: unknown, name: string, extraBytes = 0): string {
  const text = plainString(value, name);
  if (Buffer.byteLength(text) + extraBytes > MAX_ARGUMENT_BYTES) {
    throw badRequest(`${name} is longer than ${MAX_ARGUMENT_BYTES} bytes, the most one program argument or variable can hold`);
  }
  return text;
}

function payload(value: unknown, name: string): string {
  const text = plainString(value, name);
  if (Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) throw badRequest(`${name} is larger than ${MAX_PAYLOAD_BYTES} bytes`);
  return text;
}

function optionalString(fields: Fields, name: string, options?: { nonEmpty?: boolean }): string | undefined {
  return fields[name] === undefined ? undefined : plainString(fields[name], name, options);
}

function argumentArray(value: unknown, name: string, { nonEmpty = false } = {}): string[] {
  if (!Array.isArray(value)) throw badRequest(`${name} must be an array of strings, got ${typeName(value)}`);
  if (nonEmpty && value.length === 0) throw badRequest(`${name} must not be an empty array`);
  if (value.length > MAX_ARGUMENTS) throw badRequest(`${name} has ${value.length} items; the most is ${MAX_ARGUMENTS}`);
  return value.map((item, i) => argument(item, `${name}[${i}]`));
}

export function taskId(value: unknown, name = 'id'): string {
  if (value === undefined) throw badRequest(`${name} is required`);
  if (typeof value !== 'string') throw badRequest(`${name} must be a string, got ${typeName(value)}`);
  if (!ID_PATTERN.test(value)) {
    throw badRequest(`${name} must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got ${shown(value)}`);
  }
  return value;
}

function idList(value: unknown, name: string): string[] {
  if (!Array.isArray(value)) throw badRequest(`${name} must be an array of task ids, got ${typeName(value)}`);
  return [...new Set(value.map((item, i) => taskId(item, `${name}[${i}]`)))];
}

function command(value: unknown, name: string): string | string[] {
  if (typeof value === 'string') return argument(plainString(value, name, { nonEmpty: true }), name);
  if (Array.isArray(value)) {
    const argv = argumentArray(value, name, { nonEmpty: true });
    if (argv[0]!.trim() === '') throw badRequest(`${name}[0] must name a program, got an empty string`);
    return argv;
  }
  throw badRequest(`${name} must be a string or an array of strings, got ${typeName(value)}`);
}

function script(value: unknown): Script {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw badRequest(`script must be an object {lang, source} or {lang, source_b64}, got ${typeName(value)}`);
  }
  const fields = value as Fields;
  rejectUnknownFields(fields, ['lang', 'source', 'source_b64'], 'script');
  const lang = fields.lang;
  if (!SCRIPT_LANGS.includes(lang as never)) {
    throw badRequest(`script.lang must be one of ${SCRIPT_LANGS.join(', ')}, got ${typeName(lang)}`);
  }
  const hasSource = fields.source !== undefined;
  if (hasSource === (fields.source_b64 !== undefined)) {
    throw badRequest('script must have exactly one of source and source_b64');
  }
  if (hasSource) return { lang: lang as Script['lang'], source: payload(fields.source, 'script.source') };
  const encoded = fields.source_b64;
  if (typeof encoded === 'string' && encoded.length > MAX_PAYLOAD_BYTES) payload(encoded, 'script.source_b64');
  if (typeof encoded !== 'string' || encoded.length % 4 !== 0 || !BASE64.test(encoded)) {
    throw badRequest(`script.source_b64 must be a base64 string, got ${typeName(encoded)}`);
  }
  return { lang: lang as Script['lang'], source_b64: encoded };
}

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

function environment(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw badRequest(`env must be an object of string to string, got ${typeName(value)}`);
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_ARGUMENTS) throw badRequest(`env has ${entries.length} variables; the most is ${MAX_ARGUMENTS}`);
  // fromEntries defines each key as the object's own property: no key can reach a prototype setter.
  return Object.fromEntries(
    entries.map(([key, item]) => [variableName(key), argument(item, `env.${key}`, Buffer.byteLength(key) + 1)]),
  );
}

function startAt(value: unknown): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0 || value > LATEST_DATE_MS) {
      throw badRequest(`start_at must be epoch milliseconds (an integer from 0 to ${LATEST_DATE_MS}) or an ISO-8601 string, got ${value}`);
    }
    return value;
  }
  if (typeof value === 'string') {
    const time = isoTime(value);
    if (time === undefined || time > LATEST_DATE_MS) throw badRequest(`start_at must be an ISO-8601 date-time such as "2030-01-31T09:30:00Z", got ${shown(value)}`);
    return time;
  }
  throw badRequest(`start_at must be an ISO-8601 string or epoch milliseconds, got ${typeName(value)}`);
}

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

/** Validates the task spec fields of `run`/`submit` and fills in defaults. */
export function taskSpec(fields: Fields): { id?: string; spec: TaskSpec } {
  if (fields.cmd !== undefined && fields.command !== undefined) throw badRequest('give cmd or command, not both');
  const cmdField = fields.cmd !== undefined ? 'cmd' : 'command';
  const cmdValue = fields[cmdField];
  if (cmdValue !== undefined && fields.script !== undefined) throw badRequest('give either cmd or script, not both');
  if (cmdValue === undefined && fields.script === undefined) throw badRequest('cmd is required (a string or an array of strings), or script');
  if (fields.start_at !== undefined && fields.delay_ms !== undefined) throw badRequest('give start_at or delay_ms, not both');

  const spec: TaskSpec = {
    depends_on: fields.depends_on === undefined ? [] : idList(fields.depends_on, 'depends_on'),
    retries: integer(fields, 'retries', 0, 100) ?? SPEC_DEFAULTS.retries,
    retry_delay_ms: integer(fields, 'retry_delay_ms', 0, MAX_TIMER_MS) ?? SPEC_DEFAULTS.retry_delay_ms,
    priority: integer(fields, 'priority', -1_000_000_000, 1_000_000_000) ?? SPEC_DEFAULTS.priority,
    max_output_bytes:
      integer(fields, 'max_output_bytes', 1, MAX_OUTPUT_BYTES, `from 1 to ${MAX_OUTPUT_BYTES}`) ?? SPEC_DEFAULTS.max_output_bytes,
  };
  if (cmdValue !== undefined) spec.cmd = command(cmdValue, cmdField);
  if (fields.script !== undefined) spec.script = script(fields.script);
  if (fields.args !== undefined) spec.args = argumentArray(fields.args, 'args');
  const timeout = integer(fields, 'timeout_ms', 1, MAX_TIMER_MS, `from 1 to ${MAX_TIMER_MS}`);
  if (timeout !== undefined) spec.timeout_ms = timeout;
  const cwd = optionalString(fields, 'cwd', { nonEmpty: true });
  if (cwd !== undefined) spec.cwd = cwd;
  if (fields.env !== undefined) spec.env = environment(fields.env);
  if (fields.stdin !== undefined) spec.stdin = payload(fields.stdin, 'stdin');
  if (fields.start_at !== undefined) spec.start_at = startAt(fields.start_at);
  const delay = integer(fields, 'delay_ms', 0, MAX_TIMER_MS);
  if (delay !== undefined) spec.delay_ms = delay;
  const id = fields.id === undefined ? undefined : taskId(fields.id);
  return id === undefined ? { spec } : { id, spec };
}

/** The `ref` to echo, if the request has a usable one. */
export function readableRef(value: unknown): Ref | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const ref = (value as Fields).ref;
  return typeof ref === 'string' || (typeof ref === 'number' && Number.isFinite(ref)) ? ref : undefined;
}

/** Turns one parsed JSON line into a request, or throws a RequestError naming the field. */
export function parseRequest(value: unknown): ValidRequest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw badRequest(`a request must be a JSON object, got ${typeName(value)}`);
  }
  const { op: rawOp, ref, ...fields } = value as Fields;
  if (ref !== undefined && readableRef(value) === undefined) {
    throw badRequest(`ref must be a string or a number, got ${typeName(ref)}`);
  }
  let op: Op;
  if (rawOp === undefined) {
    if (fields.cmd === undefined && fields.command === undefined) {
      throw badRequest('op is required (or cmd, which means op "run")');
    }
    op = 'run';
  } else if (typeof rawOp !== 'string') {
    throw badRequest(`op must be a string, got ${typeName(rawOp)}`);
  } else if (!isOp(rawOp)) {
    throw new RequestError('UNKNOWN_OP', `op ${shown(rawOp)} is not known; ops are ${Object.keys(OP_FIELDS).join(', ')}`);
  } else {
    op = rawOp;
  }
  rejectUnknownFields(fields, OP_FIELDS[op], `op "${op}"`);
  const envelope = ref === undefined ? {} : { ref: ref as Ref };

  switch (op) {
    case 'run':
    case 'submit':
      return { op, ...envelope, ...taskSpec(fields) };
    case 'status':
    case 'cancel':
    case 'follow':
      return { op, ...envelope, id: taskId(fields.id) };
    case 'wait': {
      const timeout = integer(fields, 'timeout_ms', 0, MAX_TIMER_MS);
      return { op, ...envelope, id: taskId(fields.id), ...(timeout === undefined ? {} : { timeout_ms: timeout }) };
    }
    case 'list': {
      const request: ValidRequest = { op, ...envelope };
      if (fields.state !== undefined) {
        if (!TASK_STATES.includes(fields.state as never)) {
          throw badRequest(`state must be one of ${TASK_STATES.join(', ')}, got ${typeName(fields.state)}`);
        }
        request.state = fields.state as (typeof TASK_STATES)[number];
      }
      const limit = integer(fields, 'limit', 1, MAX_LIST_LIMIT);
      if (limit !== undefined) request.limit = limit;
      if (fields.after !== undefined) request.after = taskId(fields.after, 'after');
      return request;
    }
    case 'subscribe':
      return fields.ids === undefined ? { op, ...envelope } : { op, ...envelope, ids: idList(fields.ids, 'ids') };
    case 'auth':
      if (fields.token === undefined) throw badRequest('token is required');
      return { op, ...envelope, token: plainString(fields.token, 'token') };
    default:
      return { op, ...envelope };
  }
}

/** A canonical text of a spec, for deciding whether two submits are the same task. */
export function specKey(spec: TaskSpec): string {
  return JSON.stringify(spec, (_key, value: unknown) =>
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );
}
