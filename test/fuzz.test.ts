import fc from 'fast-check';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { looksLikeHttp } from '../src/daemon/http-guard.js';
import { CMD, startDaemon, type TestDaemon } from './helpers.js';

/**
 * Hostile input over many connections at once: random bytes, mutated and
 * truncated requests, huge lines, with valid requests interleaved. The daemon
 * must answer every line once, run the valid requests correctly, never run
 * anything hidden past a line limit, and keep its memory bounded.
 *
 * Replay a failure with FUZZ_SEED=<seed printed in the failure>.
 */

const MAX_LINE = 64 * 1024;
const CONNECTIONS = 12;
const RSS_LIMIT = 300 * 1024 * 1024;
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2_147_483_647;

const CONTRACT_CODES = new Set([
  'BAD_JSON', 'LINE_TOO_LONG', 'BAD_REQUEST', 'UNKNOWN_OP', 'NOT_FOUND', 'UNKNOWN_DEPENDENCY', 'ID_CONFLICT',
  'NOT_CANCELABLE', 'QUEUE_FULL', 'UNAUTHORIZED', 'SHUTTING_DOWN', 'INTERNAL',
]);

type Expectation = { ref: string; op: 'run'; stdout: string } | { ref: string; op: 'health' };
interface Item {
  kind: string;
  bytes: Buffer;
  expect?: Expectation;
}
/** Items are made once the connection and position are known (valid ones need a unique ref). */
type MakeItem = (ref: string) => Item;

// ---------------------------------------------------------------------------
// Making hostile requests harmless to the machine (never to the daemon): the
// fuzzer must not run arbitrary shell text or programs, nor tasks that would
// wait for a long time. Only values the daemon would accept are rewritten.

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const MAX_TIMER_MS = 2_147_483_647;
const validDelay = (value: unknown): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_TIMER_MS;

function defang(value: unknown): unknown {
  if (!isObject(value)) return value;
  const request: Record<string, unknown> = { ...value };
  for (const key of ['cmd', 'command']) {
    const cmd = request[key];
    const runnableString = typeof cmd === 'string' && cmd.trim() !== '' && !cmd.includes('\0');
    const runnableArray = Array.isArray(cmd) && cmd.length > 0 && cmd.every((arg) => typeof arg === 'string');
    if (runnableString || runnableArray) request[key] = ['true'];
  }
  if (isObject(request.script)) {
    const script = { ...request.script };
    if (typeof script.source === 'string') script.source = 'exit 0';
    if (typeof script.source_b64 === 'string') script.source_b64 = 'ZXhpdCAw';
    request.script = script;
  }
  if (validDelay(request.delay_ms)) request.delay_ms = Math.min(request.delay_ms, 20);
  if (validDelay(request.retry_delay_ms)) request.retry_delay_ms = Math.min(request.retry_delay_ms, 20);
  if (typeof request.retries === 'number' && request.retries > 1) request.retries = 1;
  if (typeof request.start_at === 'number' && request.start_at > 0) request.start_at = 0;
  if (typeof request.start_at === 'string' && !Number.isNaN(Date.parse(request.start_at))) request.start_at = '2001-01-01T00:00:00Z';
  if (request.op === 'wait' && validDelay(request.timeout_ms)) request.timeout_ms = Math.min(request.timeout_ms, 50);
  if (request.op === 'subscribe') request.op = 'count'; // a subscription never ends: it has its own tests
  if (typeof request.ref === 'string' && /^(valid|smuggled)/.test(request.ref)) request.ref = `x${request.ref}`;
  return request;
}

/**
 * For byte-level items: any line that happens to parse as JSON is replaced by its defanged form, and one
 * that happens to look like HTTP gets a leading space (the daemon ends such a connection on purpose:
 * test/cross-protocol.test.ts).
 */
function defangLines(bytes: Buffer): Buffer {
  const pieces: Buffer[] = [];
  let start = 0;
  for (;;) {
    const newline = bytes.indexOf(0x0a, start);
    const piece = bytes.subarray(start, newline === -1 ? bytes.length : newline);
    let replaced = piece;
    try {
      const text = new TextDecoder('utf-8', { fatal: true }).decode(piece);
      const parsed: unknown = JSON.parse(text);
      if (isObject(parsed)) replaced = Buffer.from(JSON.stringify(defang(parsed)));
    } catch {
      if (looksLikeHttp(piece)) replaced = Buffer.concat([Buffer.from(' '), piece]);
    }
    pieces.push(replaced);
    if (newline === -1) break;
    pieces.push(Buffer.from('\n'));
    start = newline + 1;
  }
  return Buffer.concat(pieces);
}

// ---------------------------------------------------------------------------
// Generators.

const SPECIAL_BYTES = [
  0x00, 0x0a, 0x0d, 0x09, 0x0b, 0x0c, 0x20, 0x7b, 0x7d, 0x5b, 0x5d, 0x22, 0x5c, 0x3a, 0x2c,
  0x80, 0xbf, 0xc0, 0xc1, 0xc3, 0xe2, 0xed, 0xa0, 0xef, 0xbb, 0xf0, 0xf4, 0xf5, 0xfe, 0xff,
];
const byte = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(...SPECIAL_BYTES));

const TEMPLATES: Record<string, unknown>[] = [
  { op: 'run', cmd: ['true'] },
  { op: 'submit', cmd: ['true'], priority: 1 },
  { cmd: ['true'], timeout_ms: 5000 },
  { op: 'run', script: { lang: 'sh', source: 'exit 0' }, args: ['a'] },
  { op: 'run', cmd: ['true'], env: { A: 'b' }, stdin: 'x', max_output_bytes: 10, retries: 0 },
  { op: 'submit', id: 'fuzz-id', cmd: ['true'], depends_on: [] },
  { op: 'status', id: 'fuzz-id' },
  { op: 'wait', id: 'fuzz-id', timeout_ms: 10 },
  { op: 'cancel', id: 'fuzz-nope' },
  { op: 'list', state: 'COMPLETED', limit: 3, after: 'x' },
  { op: 'count' },
  { op: 'health' },
  { op: 'stats' },
  { op: 'auth', token: 'not-needed-here-0123' },
];
const FIELDS = [
  'op', 'ref', 'cmd', 'command', 'script', 'args', 'id', 'timeout_ms', 'cwd', 'env', 'stdin', 'depends_on', 'start_at',
  'delay_ms', 'retries', 'retry_delay_ms', 'priority', 'max_output_bytes', 'state', 'limit', 'after', 'ids', 'token',
  'timout_ms', '__proto__', 'constructor', 'hasOwnProperty', '',
];
/** Number literals JSON.stringify cannot write: out of double range, beyond 2^53, -0, tiny. */
const RAW_NUMBERS = [
  '1e999', '-1e999', '123456789012345678901234567890', '1.0', '-0', '1E+2', '9007199254740993', '1e-400', '0.5',
  '-1', '4294967296', '18446744073709551616',
];
/** Fields a raw literal may land in (not the timing fields, where 1E+2 would be valid and slow). */
const RAW_FIELDS = ['ref', 'op', 'cmd', 'args', 'id', 'timeout_ms', 'env', 'stdin', 'depends_on', 'priority', 'max_output_bytes', 'limit', 'token', 'zzz'];

const deepText = fc.tuple(fc.integer({ min: 10, max: 9000 }), fc.constantFrom('array', 'object', 'mixed')).map(([depth, shape]) => {
  if (shape === 'array') return '['.repeat(depth) + ']'.repeat(depth);
  if (shape === 'object') return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
  return `${'[{"a":'.repeat(depth)}[]${'}]'.repeat(depth)}`;
});

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' }),
  fc.constantFrom(
    null, true, false, '', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff', -1, 0, 1.5, -0, 2 ** 31, 2 ** 53, 2 ** 63,
    1e21, 1e308, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, [], {}, [[]], [null], [''], { '': '' },
    { __proto__: null, constructor: 'x' }, 'COMPLETED', 'run', 'subscribe',
  ),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.array(fc.constant('a'), { minLength: 9_990, maxLength: 10_010 }), // around the 10,000 argument limit
  fc.dictionary(fc.string({ maxLength: 3 }), fc.constant('v'), { minKeys: 0, maxKeys: 5 }),
  fc.constantFrom('x'.repeat(30_000), 'é'.repeat(20_000)), // long, but within the 64 KiB line
);

type Mutation = { kind: 'set'; field: string; value: unknown } | { kind: 'delete'; field: string };
const fieldName = fc.oneof(fc.constantFrom(...FIELDS), fc.string({ unit: 'binary', maxLength: 12 }));
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), field: fieldName, value: hostileValue }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), field: fc.constantFrom(...FIELDS) }) },
);

function mutated(template: Record<string, unknown>, mutations: Mutation[]): Record<string, unknown> {
  const request: Record<string, unknown> = { ...template, ref: 'm' };
  for (const change of mutations) {
    if (change.kind === 'delete') delete request[change.field];
    else Object.defineProperty(request, change.field, { value: change.value, enumerable: true, writable: true, configurable: true });
  }
  return request;
}

const line = (kind: string, text: string | Buffer, ending = '\n'): Item => ({
  kind,
  bytes: Buffer.concat([typeof text === 'string' ? Buffer.from(text) : text, Buffer.from(ending)]),
});

const randomBytesItem = fc.array(byte, { maxLength: 300 }).map((bytes): MakeItem => () => line('random-bytes', defangLines(Buffer.from(bytes))));

const jsonValueItem = fc.jsonValue({ maxDepth: 4 }).map((value): MakeItem => () => line('json-value', JSON.stringify(defang(value)) ?? 'null'));

const mutatedItem = fc
  .tuple(fc.constantFrom(...TEMPLATES), fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.constantFrom('\n', '\r\n'))
  .map(([template, changes, ending]): MakeItem => () => line('mutated', JSON.stringify(defang(mutated(template, changes))), ending));

const rawNumberItem = fc
  .tuple(fc.constantFrom(...TEMPLATES), fc.constantFrom(...RAW_FIELDS), fc.constantFrom(...RAW_NUMBERS))
  .map(([template, field, raw]): MakeItem => () => {
    const text = JSON.stringify(defang({ ...template, ref: 'n', [field]: '@RAW@' })).replace('"@RAW@"', raw);
    return line('raw-number', text);
  });

const deepItem = fc
  .tuple(fc.constantFrom(...TEMPLATES), fc.constantFrom(...RAW_FIELDS, 'whole'), deepText, fc.boolean())
  .map(([template, field, deep, closed]): MakeItem => () => {
    let text = field === 'whole' ? deep : JSON.stringify(defang({ ...template, ref: 'd', [field]: '@RAW@' })).replace('"@RAW@"', deep);
    if (!closed) text = text.slice(0, Math.ceil(text.length / 2)); // unbalanced nesting
    return line('deep', text);
  });

const truncatedItem = fc
  .tuple(fc.constantFrom(...TEMPLATES), fc.double({ min: 0, max: 1, noNaN: true }))
  .map(([template, at]): MakeItem => () => {
    const text = JSON.stringify(defang({ ...template, ref: 't' }));
    return line('truncated', defangLines(Buffer.from(text.slice(0, Math.max(1, Math.floor(at * text.length))))));
  });

const byteMutatedItem = fc
  .tuple(
    fc.constantFrom(...TEMPLATES),
    fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), how: fc.constantFrom('replace', 'insert', 'delete'), byte }), { minLength: 1, maxLength: 3 }),
  )
  .map(([template, edits]): MakeItem => () => {
    const bytes = [...Buffer.from(JSON.stringify(defang({ ...template, ref: 'b' })))];
    for (const edit of edits) {
      const at = Math.min(bytes.length - 1, Math.floor(edit.at * bytes.length));
      if (edit.how === 'replace') bytes[at] = edit.byte;
      else if (edit.how === 'insert') bytes.splice(at, 0, edit.byte);
      else bytes.splice(at, 1);
    }
    return line('byte-mutated', defangLines(Buffer.from(bytes)));
  });

const SPECIAL_LINES = [
  '', ' ', '\t', '\r', '\r\r', ' \t \r', '\u000b', '\f', '\u0000', '\ufeff{"op":"health"}', '{"op":"health"}\u0000',
  '{"op":"health","ref":"smuggled-cr1"}\r{"op":"health","ref":"smuggled-cr2"}',
  '{"op":"health","ref":"smuggled-cr3"}\r{"op":"run","ref":"smuggled-cr4","cmd":["true"]}\r',
  '{"op":"health"}\r\r', '{"op":"health","op":"count"}', '{"op":"run","cmd":["true"],"env":{"__proto__":"x","constructor":"y"}}',
  '{"op":"__proto__"}', '{"op":"constructor"}', '{"op":"toString"}', '{"op":"hasOwnProperty"}', '{"op":"HEALTH"}',
  '"{\\"op\\":\\"health\\"}"', '[{"op":"health"}]', '{"op":"health"}{"op":"health"}', '{"op":"health"} x', '01', '-',
  '{"op":"health","ref":{"deep":true}}', '{"op":"health","ref":1e999}', '{"op":"health","ref":null}', 'null', 'true', '1e999',
  '{"op":"he\u0000alth"}', '{"ref":"only-a-ref"}', '{"op":"run"}', '{"op":"list","state":"completed"}',
];
const specialItem = fc.constantFrom(...SPECIAL_LINES).map((text): MakeItem => () => line('special', text));
const invalidUtf8Item = fc
  .constantFrom(
    [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xff], [0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x98],
  )
  .map((bad): MakeItem => () => line('invalid-utf8', Buffer.concat([Buffer.from('{"op":"health","ref":"x'), Buffer.from(bad), Buffer.from('"}')])));

/** A fast deterministic byte source for the huge lines (fast-check would be slow at 300 KB). */
function noise(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const b = x & 0xff;
    out[i] = b === 0x0a ? 0x0b : b; // one line: no newline inside
  }
  return out;
}

const hugeItem = fc
  .tuple(fc.integer({ min: 100_000, max: 300_000 }), fc.constantFrom('json-string', 'random', 'smuggled-tail', 'spaces', 'crlf'), fc.integer())
  .map(([size, style, seed]): MakeItem => () => {
    switch (style) {
      case 'json-string':
        return line('huge', `{"op":"run","ref":"smuggled-h","cmd":["true"],"stdin":"${'x'.repeat(size)}"}`);
      case 'random':
        return line('huge', noise(size, seed));
      case 'smuggled-tail':
        return line('huge', `${'x'.repeat(size)}\r{"op":"run","ref":"smuggled-tail","cmd":["true"]}`);
      case 'spaces':
        return line('huge', `${' '.repeat(size)}{"op":"health","ref":"smuggled-spaces"}`);
      default:
        return line('huge', `{"op":"health","ref":"smuggled-crlf","pad":"${'y'.repeat(size)}"}`, '\r\n');
    }
  });

const validItem = fc
  .tuple(fc.integer(), fc.constantFrom('run', 'run-implicit', 'run-crlf', 'run-padded', 'health'))
  .map(([n, style]): MakeItem => (ref) => {
    // One word: bin/cmd reads its options with parseArgs, which takes "-5" after --stdout for an option.
    const cmd = [CMD, `--stdout=${n}`];
    const run: Expectation = { ref, op: 'run', stdout: String(n) };
    switch (style) {
      case 'run':
        return { ...line('valid', JSON.stringify({ op: 'run', ref, cmd })), expect: run };
      case 'run-implicit':
        return { ...line('valid', JSON.stringify({ cmd, ref })), expect: run };
      case 'run-crlf':
        return { ...line('valid', JSON.stringify({ ref, op: 'run', cmd }), '\r\n'), expect: run };
      case 'run-padded':
        return { ...line('valid', ` \t${JSON.stringify({ op: 'run', cmd, ref })}\t `), expect: run };
      default:
        return { ...line('valid', JSON.stringify({ op: 'health', ref })), expect: { ref, op: 'health' } };
    }
  });

const noiseItem = fc.oneof(
  { weight: 20, arbitrary: randomBytesItem },
  { weight: 10, arbitrary: jsonValueItem },
  { weight: 25, arbitrary: mutatedItem },
  { weight: 8, arbitrary: rawNumberItem },
  { weight: 4, arbitrary: deepItem },
  { weight: 8, arbitrary: truncatedItem },
  { weight: 12, arbitrary: byteMutatedItem },
  { weight: 6, arbitrary: specialItem },
  { weight: 4, arbitrary: invalidUtf8Item },
);

const chunkSize = fc.oneof(
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 16 }) },
  { weight: 3, arbitrary: fc.integer({ min: 17, max: 4096 }) },
  { weight: 2, arbitrary: fc.integer({ min: 4097, max: 65_536 }) },
);

const connectionScript = fc.record({
  noise: fc.array(noiseItem, { minLength: 150, maxLength: 220 }),
  huge: fc.array(fc.tuple(hugeItem, fc.nat()), { minLength: 2, maxLength: 3 }),
  valid: fc.array(fc.tuple(validItem, fc.nat()), { minLength: 6, maxLength: 10 }),
  last: validItem,
  chunks: fc.array(chunkSize, { minLength: 16, maxLength: 48 }),
});

type Script = typeof connectionScript extends fc.Arbitrary<infer T> ? T : never;

function materialize(script: Script, conn: number): Item[] {
  const items: Item[] = script.noise.map((make) => make(''));
  for (const [make, at] of script.huge) items.splice(at % (items.length + 1), 0, make(''));
  script.valid.forEach(([make, at], k) => {
    items.splice(at % (items.length + 1), 0, make(`valid-${conn}-${k}`));
  });
  items.push(script.last(`valid-${conn}-last`));
  return items;
}

function sampleScripts(): Script[] {
  return fc.sample(connectionScript, { seed: SEED, numRuns: CONNECTIONS });
}

// ---------------------------------------------------------------------------
// What the server must answer: one answer per line as it will see the bytes.

const JSON_BLANK = new Set([0x20, 0x09, 0x0d]);
/** \v and \f: "whitespace" to some readings; such a line may be ignored or answered BAD_JSON. */
const LOOSE_BLANK = new Set([0x20, 0x09, 0x0d, 0x0b, 0x0c]);

function expectedAnswers(payload: Buffer): { min: number; max: number; tooLong: number; lines: number } {
  let min = 0;
  let max = 0;
  let tooLong = 0;
  let lines = 0;
  let start = 0;
  for (;;) {
    const newline = payload.indexOf(0x0a, start);
    if (newline === -1) break;
    let piece = payload.subarray(start, newline);
    start = newline + 1;
    lines++;
    if (piece.length > 0 && piece[piece.length - 1] === 0x0d) piece = piece.subarray(0, -1);
    if (piece.length > MAX_LINE) {
      tooLong++;
      min++;
      max++;
    } else if (piece.every((b) => JSON_BLANK.has(b))) {
      // ignored
    } else if (piece.every((b) => LOOSE_BLANK.has(b))) {
      max++;
    } else {
      min++;
      max++;
    }
  }
  if (start !== payload.length) throw new Error('every item ends with a newline');
  return { min, max, tooLong, lines };
}

// ---------------------------------------------------------------------------
// Driving a connection.

interface Outcome {
  conn: number;
  items: Item[];
  received: string;
  error?: string | undefined;
  closedByServer: boolean;
}

async function drive(port: number, conn: number, items: Item[], chunks: number[]): Promise<Outcome> {
  const payload = Buffer.concat(items.map((item) => item.bytes));
  const socket = connect({ port, host: '127.0.0.1' });
  socket.setNoDelay(true);
  const received: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('error', (e) => (error = e.message));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  let ended = false;
  socket.once('end', () => (ended = true));
  await once(socket, 'connect');
  let offset = 0;
  for (let i = 0; offset < payload.length && !socket.destroyed; i++) {
    const size = chunks[i % chunks.length]!;
    const ok = socket.write(payload.subarray(offset, offset + size));
    offset += size;
    if (!ok) await once(socket, 'drain');
    else await new Promise((resolve) => setImmediate(resolve)); // let answers interleave with the stream
  }
  socket.end(); // half-close: the daemon answers what it has read, then ends the connection
  const timer = setTimeout(() => {
    error ??= 'the daemon did not end the connection within 60 s of the last line';
    socket.destroy();
  }, 60_000);
  await closed;
  clearTimeout(timer);
  return { conn, items, received: Buffer.concat(received).toString('utf8'), error, closedByServer: ended };
}

function check(outcome: Outcome): string[] {
  const problems: string[] = [];
  const where = `connection ${outcome.conn}`;
  const payload = Buffer.concat(outcome.items.map((item) => item.bytes));
  const expected = expectedAnswers(payload);
  if (outcome.error) problems.push(`${where}: ${outcome.error}`);
  if (!outcome.closedByServer) problems.push(`${where}: the daemon never ended the connection after the client half-closed`);
  if (!outcome.received.endsWith('\n') && outcome.received !== '') problems.push(`${where}: the last answer line is cut`);
  const messages: Record<string, unknown>[] = [];
  for (const text of outcome.received.split('\n').filter((l) => l !== '')) {
    try {
      const message: unknown = JSON.parse(text);
      if (!isObject(message) || typeof message.ok !== 'boolean') problems.push(`${where}: answer without a boolean ok: ${text.slice(0, 200)}`);
      else messages.push(message);
    } catch {
      problems.push(`${where}: an answer line is not JSON: ${text.slice(0, 200)}`);
    }
  }
  if (messages.length < expected.min || messages.length > expected.max) {
    const range = expected.min === expected.max ? `${expected.min}` : `${expected.min}..${expected.max}`;
    problems.push(`${where}: ${messages.length} answers for ${range} non-blank lines (${expected.lines} lines sent)`);
  }
  const tooLong = messages.filter((m) => isObject(m.error) && m.error.code === 'LINE_TOO_LONG').length;
  if (tooLong !== expected.tooLong) problems.push(`${where}: ${tooLong} LINE_TOO_LONG answers for ${expected.tooLong} lines over ${MAX_LINE} bytes`);
  for (const message of messages) {
    const ref = message.ref;
    if (typeof ref === 'string' && ref.startsWith('smuggled')) {
      problems.push(`${where}: a request hidden in a rejected line was carried out: ${JSON.stringify(message).slice(0, 300)}`);
    }
    if (message.ok === false) {
      const error = message.error;
      if (!isObject(error) || typeof error.code !== 'string' || !CONTRACT_CODES.has(error.code)) {
        problems.push(`${where}: error answer without a contract code: ${JSON.stringify(message).slice(0, 300)}`);
      } else if (typeof error.message !== 'string' || error.message.trim() === '') {
        problems.push(`${where}: error ${error.code} without a message`);
      } else if (error.code === 'INTERNAL') {
        problems.push(`${where}: INTERNAL error (the daemon failed on some input): ${JSON.stringify(message)}`);
      }
    } else if (typeof message.op !== 'string') {
      problems.push(`${where}: success answer without op: ${JSON.stringify(message).slice(0, 300)}`);
    }
  }
  for (const { expect: want } of outcome.items) {
    if (!want) continue;
    const answers = messages.filter((m) => m.ref === want.ref);
    if (answers.length !== 1) {
      problems.push(`${where}: valid request ${want.ref} got ${answers.length} answers`);
      continue;
    }
    const answer = answers[0]!;
    const task = answer.task as Record<string, unknown> | undefined;
    const good =
      answer.ok === true &&
      answer.op === want.op &&
      (want.op === 'health' || (task?.state === 'COMPLETED' && task.exit_code === 0 && task.stdout === want.stdout));
    if (!good) problems.push(`${where}: valid request ${want.ref} answered wrongly: ${JSON.stringify(answer).slice(0, 400)}`);
  }
  return problems;
}

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match![1]) * 1024;
}

const MB = 1024 * 1024;

describe('fuzzing the wire protocol', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--max-line-bytes', String(MAX_LINE)]);
  });
  afterAll(async () => {
    await daemon?.stop();
  });

  it(`answers every hostile line once, runs the valid ones right and stays small (seed ${SEED})`, async () => {
    const started = Date.now();
    const pid = daemon.process.pid!;
    const scripts = sampleScripts();
    const plans = scripts.map((script, conn) => ({ items: materialize(script, conn), chunks: script.chunks }));

    let maxRss = rssBytes(pid);
    const baseline = maxRss;
    const sampler = setInterval(() => {
      try {
        maxRss = Math.max(maxRss, rssBytes(pid));
      } catch {
        // the daemon is gone: reported below
      }
    }, 50);
    let outcomes: Outcome[];
    try {
      outcomes = await Promise.all(plans.map(({ items, chunks }, conn) => drive(daemon.port, conn, items, chunks)));
    } finally {
      clearInterval(sampler);
    }

    const problems = outcomes.flatMap(check);
    const tally: Record<string, number> = {};
    for (const { received } of outcomes) {
      for (const text of received.split('\n')) {
        const code = /"code":"([A-Z_]+)"/.exec(text)?.[1] ?? (text.startsWith('{"ok":true') ? 'ok' : undefined);
        if (code) tally[code] = (tally[code] ?? 0) + 1;
      }
    }
    expect(daemon.process.exitCode, `the daemon exited; stderr: ${daemon.stderr()}`).toBeNull();
    expect(daemon.process.signalCode).toBeNull();

    // Still healthy, and its own figure agrees that memory stayed bounded.
    const raw = await daemon.raw();
    raw.send('{"op":"stats","ref":"after"}\n');
    const stats = await raw.next();
    raw.close();
    expect(stats).toMatchObject({ ok: true, ref: 'after', op: 'stats' });
    const reportedRss: number = stats.memory.daemon_rss_bytes;

    const sent = plans.reduce((sum, plan) => sum + plan.items.reduce((s, item) => s + item.bytes.length, 0), 0);
    const lines = plans.reduce((sum, plan) => sum + plan.items.length, 0);
    const huge = plans.reduce((sum, plan) => sum + plan.items.filter((item) => item.kind === 'huge').length, 0);
    const valid = plans.reduce((sum, plan) => sum + plan.items.filter((item) => item.expect).length, 0);
    console.log(
      `fuzz seed ${SEED}: ${CONNECTIONS} connections, ${lines} items (${huge} huge, ${valid} valid), ${(sent / MB).toFixed(1)} MB sent, ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s; daemon RSS ${(baseline / MB).toFixed(0)} MB before, max ${(maxRss / MB).toFixed(0)} MB, ` +
        `stats says ${(reportedRss / MB).toFixed(0)} MB; answers ${JSON.stringify(tally)}`,
    );
    expect(problems, `seed ${SEED} (replay with FUZZ_SEED=${SEED})`).toEqual([]);
    expect(huge).toBeGreaterThanOrEqual(2 * CONNECTIONS);
    expect(maxRss).toBeLessThan(RSS_LIMIT);
    expect(reportedRss).toBeLessThan(RSS_LIMIT);
    expect(daemon.stderr()).not.toMatch(/internal error/i);
  }, 120_000);
});
