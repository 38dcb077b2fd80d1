import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  REQUEST_ERRORS,
  SPEC_DEFAULTS,
  TASK_SPEC_FIELDS,
  parseRequest,
  requestError,
  taskSpec,
  type Op,
  type Request,
  type TaskSpecInput,
  withFieldsNamed,
} from '../src/protocol/index.js';
import { CMD, startDaemon, within, type TestDaemon } from './helpers.js';

type Row = [name: string, request: Record<string, unknown>, code: string, field: string];

/**
 * One row per validation rule of the contract: the request, the error code it
 * must get, and a word the message must contain (the field it is about).
 */
const SPEC_ROWS: Row[] = [
  // envelope
  ['op of the wrong type', { op: 5 }, 'BAD_REQUEST', 'op'],
  ['op null', { op: null, cmd: 'true' }, 'BAD_REQUEST', 'op'],
  ['unknown op', { op: 'explode' }, 'UNKNOWN_OP', 'explode'],
  ['unknown op even with a cmd', { op: 'execute', cmd: 'true' }, 'UNKNOWN_OP', 'execute'],
  ['op in the wrong case', { op: 'HEALTH' }, 'UNKNOWN_OP', 'HEALTH'],
  ['no op and no cmd', { id: 'x' }, 'BAD_REQUEST', 'op'],
  ['an empty object', {}, 'BAD_REQUEST', 'op'],

  // misspelt and unknown fields
  ['misspelt timeout_ms', { cmd: 'true', timout_ms: 1000 }, 'BAD_REQUEST', 'timout_ms'],
  ['misspelt depends_on', { cmd: 'true', depend_on: [] }, 'BAD_REQUEST', 'depend_on'],
  ['an unknown field on run', { op: 'run', cmd: 'true', colour: 'red' }, 'BAD_REQUEST', 'colour'],
  ['an unknown field on submit', { op: 'submit', cmd: 'true', nice: 5 }, 'BAD_REQUEST', 'nice'],
  ['an unknown field on health', { op: 'health', verbose: true }, 'BAD_REQUEST', 'verbose'],
  ['an unknown field in script', { op: 'run', script: { lang: 'sh', source: 'true', interpreter: 'x' } }, 'BAD_REQUEST', 'interpreter'],

  // cmd / command
  ['cmd a number', { cmd: 42 }, 'BAD_REQUEST', 'cmd'],
  ['cmd an object', { cmd: { program: 'ls' } }, 'BAD_REQUEST', 'cmd'],
  ['cmd null', { op: 'run', cmd: null }, 'BAD_REQUEST', 'cmd'],
  ['cmd an empty string', { cmd: '' }, 'BAD_REQUEST', 'cmd'],
  ['cmd only spaces', { cmd: '   ' }, 'BAD_REQUEST', 'cmd'],
  ['cmd an empty array', { cmd: [] }, 'BAD_REQUEST', 'cmd'],
  ['cmd array with an empty program', { cmd: ['', 'x'] }, 'BAD_REQUEST', 'cmd'],
  ['cmd array with a number', { cmd: ['echo', 5] }, 'BAD_REQUEST', 'cmd'],
  ['cmd array with null', { cmd: ['echo', null] }, 'BAD_REQUEST', 'cmd'],
  ['cmd with a NUL character', { cmd: 'echo a\u0000b' }, 'BAD_REQUEST', 'cmd'],
  ['command empty', { command: '' }, 'BAD_REQUEST', 'command'],
  ['command an empty array', { command: [] }, 'BAD_REQUEST', 'command'],
  ['cmd and command together', { cmd: 'true', command: 'true' }, 'BAD_REQUEST', 'command'],
  ['run without cmd or script', { op: 'run' }, 'BAD_REQUEST', 'cmd'],
  ['submit without cmd or script', { op: 'submit', id: 'no-cmd' }, 'BAD_REQUEST', 'cmd'],
  ['cmd together with script', { cmd: 'true', script: { lang: 'sh', source: 'true' } }, 'BAD_REQUEST', 'script'],

  // script
  ['script a string', { op: 'run', script: 'echo hi' }, 'BAD_REQUEST', 'script'],
  ['script an array', { op: 'run', script: ['sh', 'echo hi'] }, 'BAD_REQUEST', 'script'],
  ['script without source', { op: 'run', script: { lang: 'sh' } }, 'BAD_REQUEST', 'source'],
  ['script with source and source_b64', { op: 'run', script: { lang: 'sh', source: 'true', source_b64: 'dHJ1ZQ==' } }, 'BAD_REQUEST', 'source_b64'],
  ['script without lang', { op: 'run', script: { source: 'true' } }, 'BAD_REQUEST', 'lang'],
  ['script with a bad lang', { op: 'run', script: { lang: 'ruby', source: 'puts 1' } }, 'BAD_REQUEST', 'lang'],
  ['script lang in the wrong case', { op: 'run', script: { lang: 'SH', source: 'true' } }, 'BAD_REQUEST', 'lang'],
  ['script source a number', { op: 'run', script: { lang: 'sh', source: 1 } }, 'BAD_REQUEST', 'source'],
  ['script source_b64 not base64', { op: 'run', script: { lang: 'sh', source_b64: 'not base64!' } }, 'BAD_REQUEST', 'source_b64'],
  ['script source_b64 badly padded', { op: 'run', script: { lang: 'sh', source_b64: 'dHJ1ZQ' } }, 'BAD_REQUEST', 'source_b64'],
  ['script source_b64 a number', { op: 'run', script: { lang: 'bin', source_b64: 12 } }, 'BAD_REQUEST', 'source_b64'],

  // args
  ['args a string', { cmd: ['echo'], args: 'a b' }, 'BAD_REQUEST', 'args'],
  ['args with a number', { cmd: ['echo'], args: ['a', 1] }, 'BAD_REQUEST', 'args'],
  ['args an object', { cmd: ['echo'], args: { a: 'b' } }, 'BAD_REQUEST', 'args'],

  // id
  ['id a number', { cmd: 'true', id: 5 }, 'BAD_REQUEST', 'id'],
  ['id empty', { cmd: 'true', id: '' }, 'BAD_REQUEST', 'id'],
  ['id with a space', { cmd: 'true', id: 'a b' }, 'BAD_REQUEST', 'id'],
  ['id with a slash', { cmd: 'true', id: 'a/b' }, 'BAD_REQUEST', 'id'],
  ['id with a non-ASCII letter', { cmd: 'true', id: 'tâche' }, 'BAD_REQUEST', 'id'],
  ['id with a newline', { cmd: 'true', id: 'a\nb' }, 'BAD_REQUEST', 'id'],
  ['id of 129 characters', { cmd: 'true', id: 'a'.repeat(129) }, 'BAD_REQUEST', 'id'],

  // timeout_ms
  ['timeout_ms 0', { cmd: 'true', timeout_ms: 0 }, 'BAD_REQUEST', 'timeout_ms'],
  ['timeout_ms negative', { cmd: 'true', timeout_ms: -5 }, 'BAD_REQUEST', 'timeout_ms'],
  ['timeout_ms a float', { cmd: 'true', timeout_ms: 1.5 }, 'BAD_REQUEST', 'timeout_ms'],
  ['timeout_ms a string', { cmd: 'true', timeout_ms: '1000' }, 'BAD_REQUEST', 'timeout_ms'],
  ['timeout_ms huge', { cmd: 'true', timeout_ms: 1e300 }, 'BAD_REQUEST', 'timeout_ms'],
  ['timeout_ms null', { cmd: 'true', timeout_ms: null }, 'BAD_REQUEST', 'timeout_ms'],

  // cwd, env, stdin
  ['cwd a number', { cmd: 'true', cwd: 1 }, 'BAD_REQUEST', 'cwd'],
  ['cwd empty', { cmd: 'true', cwd: '' }, 'BAD_REQUEST', 'cwd'],
  ['cwd an array', { cmd: 'true', cwd: ['/tmp'] }, 'BAD_REQUEST', 'cwd'],
  ['env a string', { cmd: 'true', env: 'A=1' }, 'BAD_REQUEST', 'env'],
  ['env an array', { cmd: 'true', env: ['A=1'] }, 'BAD_REQUEST', 'env'],
  ['env with a number value', { cmd: 'true', env: { A: 1 } }, 'BAD_REQUEST', 'env'],
  ['env with a null value', { cmd: 'true', env: { A: null } }, 'BAD_REQUEST', 'env'],
  ['env with a boolean value', { cmd: 'true', env: { A: true } }, 'BAD_REQUEST', 'env'],
  ['env with an object value', { cmd: 'true', env: { A: { b: 'c' } } }, 'BAD_REQUEST', 'env'],
  ['env with an empty name', { cmd: 'true', env: { '': 'x' } }, 'BAD_REQUEST', 'env'],
  ['env with "=" in a name', { cmd: 'true', env: { 'A=B': 'x' } }, 'BAD_REQUEST', 'env'],
  ['stdin a number', { cmd: 'cat', stdin: 5 }, 'BAD_REQUEST', 'stdin'],
  ['stdin an array', { cmd: 'cat', stdin: ['a'] }, 'BAD_REQUEST', 'stdin'],

  // depends_on
  ['depends_on a string', { cmd: 'true', depends_on: 'a' }, 'BAD_REQUEST', 'depends_on'],
  ['depends_on with a number', { cmd: 'true', depends_on: [1] }, 'BAD_REQUEST', 'depends_on'],
  ['depends_on with a bad id', { cmd: 'true', depends_on: ['a b'] }, 'BAD_REQUEST', 'depends_on'],
  ['depends_on an unknown task', { cmd: 'true', depends_on: ['no-such-task-anywhere'] }, 'UNKNOWN_DEPENDENCY', 'no-such-task-anywhere'],

  // start_at, delay_ms
  ['start_at unparsable', { op: 'submit', cmd: 'true', start_at: 'tomorrow' }, 'BAD_REQUEST', 'start_at'],
  ['start_at a month 13', { op: 'submit', cmd: 'true', start_at: '2030-13-01T00:00:00Z' }, 'BAD_REQUEST', 'start_at'],
  ['start_at text that only ends in a digit', { op: 'submit', cmd: 'true', start_at: 'soon 1' }, 'BAD_REQUEST', 'start_at'],
  ['start_at February 30', { op: 'submit', cmd: 'true', start_at: '2030-02-30T00:00:00Z' }, 'BAD_REQUEST', 'start_at'],
  ['start_at negative epoch', { op: 'submit', cmd: 'true', start_at: -1 }, 'BAD_REQUEST', 'start_at'],
  ['start_at a float epoch', { op: 'submit', cmd: 'true', start_at: 1.5 }, 'BAD_REQUEST', 'start_at'],
  ['start_at a huge epoch', { op: 'submit', cmd: 'true', start_at: 1e300 }, 'BAD_REQUEST', 'start_at'],
  ['start_at a boolean', { op: 'submit', cmd: 'true', start_at: true }, 'BAD_REQUEST', 'start_at'],
  ['start_at an object', { op: 'submit', cmd: 'true', start_at: {} }, 'BAD_REQUEST', 'start_at'],
  ['delay_ms negative', { op: 'submit', cmd: 'true', delay_ms: -1 }, 'BAD_REQUEST', 'delay_ms'],
  ['delay_ms a float', { op: 'submit', cmd: 'true', delay_ms: 0.5 }, 'BAD_REQUEST', 'delay_ms'],
  ['delay_ms a string', { op: 'submit', cmd: 'true', delay_ms: '10' }, 'BAD_REQUEST', 'delay_ms'],
  ['delay_ms huge', { op: 'submit', cmd: 'true', delay_ms: 1e300 }, 'BAD_REQUEST', 'delay_ms'],

  // retries, retry_delay_ms
  ['retries 101', { cmd: 'true', retries: 101 }, 'BAD_REQUEST', 'retries'],
  ['retries negative', { cmd: 'true', retries: -1 }, 'BAD_REQUEST', 'retries'],
  ['retries a float', { cmd: 'true', retries: 2.5 }, 'BAD_REQUEST', 'retries'],
  ['retries a string', { cmd: 'true', retries: '3' }, 'BAD_REQUEST', 'retries'],
  ['retries a boolean', { cmd: 'true', retries: true }, 'BAD_REQUEST', 'retries'],
  ['retry_delay_ms negative', { cmd: 'true', retry_delay_ms: -1 }, 'BAD_REQUEST', 'retry_delay_ms'],
  ['retry_delay_ms a float', { cmd: 'true', retry_delay_ms: 10.25 }, 'BAD_REQUEST', 'retry_delay_ms'],
  ['retry_delay_ms a string', { cmd: 'true', retry_delay_ms: '100' }, 'BAD_REQUEST', 'retry_delay_ms'],
  ['retry_delay_ms huge', { cmd: 'true', retry_delay_ms: 1e300 }, 'BAD_REQUEST', 'retry_delay_ms'],

  // priority
  ['priority a float', { cmd: 'true', priority: 1.5 }, 'BAD_REQUEST', 'priority'],
  ['priority a string', { cmd: 'true', priority: 'high' }, 'BAD_REQUEST', 'priority'],
  ['priority huge', { cmd: 'true', priority: 1e300 }, 'BAD_REQUEST', 'priority'],
  ['priority hugely negative', { cmd: 'true', priority: -1e300 }, 'BAD_REQUEST', 'priority'],

  // max_output_bytes
  ['max_output_bytes 0', { cmd: 'true', max_output_bytes: 0 }, 'BAD_REQUEST', 'max_output_bytes'],
  ['max_output_bytes negative', { cmd: 'true', max_output_bytes: -100 }, 'BAD_REQUEST', 'max_output_bytes'],
  ['max_output_bytes a float', { cmd: 'true', max_output_bytes: 10.5 }, 'BAD_REQUEST', 'max_output_bytes'],
  ['max_output_bytes a string', { cmd: 'true', max_output_bytes: '1000' }, 'BAD_REQUEST', 'max_output_bytes'],
  ['max_output_bytes huge', { cmd: 'true', max_output_bytes: 1e300 }, 'BAD_REQUEST', 'max_output_bytes'],

  // other ops
  ['status without id', { op: 'status' }, 'BAD_REQUEST', 'id'],
  ['status with a number id', { op: 'status', id: 7 }, 'BAD_REQUEST', 'id'],
  ['status with a bad id', { op: 'status', id: 'a b' }, 'BAD_REQUEST', 'id'],
  ['status of an unknown task', { op: 'status', id: 'never-submitted' }, 'NOT_FOUND', 'never-submitted'],
  ['wait of an unknown task', { op: 'wait', id: 'never-submitted' }, 'NOT_FOUND', 'never-submitted'],
  ['wait with a negative timeout_ms', { op: 'wait', id: 'x', timeout_ms: -1 }, 'BAD_REQUEST', 'timeout_ms'],
  ['wait with a string timeout_ms', { op: 'wait', id: 'x', timeout_ms: '5' }, 'BAD_REQUEST', 'timeout_ms'],
  ['cancel without id', { op: 'cancel' }, 'BAD_REQUEST', 'id'],
  ['cancel of an unknown task', { op: 'cancel', id: 'never-submitted' }, 'NOT_FOUND', 'never-submitted'],
  ['list with a bad state', { op: 'list', state: 'DONE' }, 'BAD_REQUEST', 'state'],
  ['list with limit 0', { op: 'list', limit: 0 }, 'BAD_REQUEST', 'limit'],
  ['list with a string limit', { op: 'list', limit: '10' }, 'BAD_REQUEST', 'limit'],
  ['list with a bad after', { op: 'list', after: 'a b' }, 'BAD_REQUEST', 'after'],
  ['subscribe with ids a string', { op: 'subscribe', ids: 'abc' }, 'BAD_REQUEST', 'ids'],
  ['auth without token', { op: 'auth' }, 'BAD_REQUEST', 'token'],
  ['auth with a number token', { op: 'auth', token: 1234 }, 'BAD_REQUEST', 'token'],
];

describe('request validation over a real socket', () => {
  let daemon: TestDaemon;
  let n = 0;

  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  /**
   * Sends a line and then a `health` on the same (fresh) connection; returns
   * the answer to the line after checking the connection still answers.
   */
  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  async function sendThenHealth(line: string): Promise<any> {
    const raw = await daemon.raw();
    try {
      const healthRef = `health-${++n}`;
      raw.send(`${line}\n{"op":"health","ref":"${healthRef}"}\n`);
      const answers = await within(raw.take(2), 10_000, line);
      const health = answers.find((a) => a.ref === healthRef);
      expect(health, `the connection must still answer after ${line}`).toMatchObject({ ok: true, op: 'health' });
      return answers.find((a) => a !== health);
    } finally {
      raw.close();
    }
  }

  /** One request on a fresh connection, its answer. */
  // biome-ignore lint/suspicious/noExplicitAny: wire JSON as parsed; the assertions check its shape
  async function exchange(request: object): Promise<any> {
    const raw = await daemon.raw();
    try {
      raw.send(`${JSON.stringify(request)}\n`);
      return await within(raw.next(), 20_000, JSON.stringify(request));
    } finally {
      raw.close();
    }
  }

  it.each(SPEC_ROWS)('%s → %s naming the field', async (_name, request, code, field) => {
    const ref = `ref-${n + 1}`;
    const response = await sendThenHealth(JSON.stringify({ ...request, ref }));
    expect(response.ok).toBe(false);
    expect(response.ref).toBe(ref);
    expect(response.error.code).toBe(code);
    expect(typeof response.error.message).toBe('string');
    expect(response.error.message).toContain(field);
  });

  it('suggests timeout_ms for timout_ms, and runs nothing', async () => {
    const response = await sendThenHealth('{"cmd":"true","id":"typo-task","timout_ms":1000,"ref":"typo"}');
    expect(response).toMatchObject({ ok: false, ref: 'typo', error: { code: 'BAD_REQUEST' } });
    expect(response.error.message).toContain('timout_ms');
    expect(response.error.message).toContain('timeout_ms');
    const status = await sendThenHealth('{"op":"status","id":"typo-task","ref":"typo-status"}');
    expect(status).toMatchObject({ ok: false, ref: 'typo-status', error: { code: 'NOT_FOUND' } });
  });

  it.each([
    ['an array', '[{"op":"health"}]'],
    ['a number', '42'],
    ['null', 'null'],
    ['a string', '"health"'],
    ['true', 'true'],
  ])('answers a JSON value that is not an object (%s) with BAD_REQUEST', async (_name, line) => {
    const response = await sendThenHealth(line);
    expect(response.ok).toBe(false);
    expect(response.error.code).toBe('BAD_REQUEST');
    expect(response.error.message).toMatch(/object/);
    expect(response).not.toHaveProperty('ref');
  });

  it.each([
    ['an object', { a: 1 }],
    ['an array', ['r']],
    ['a boolean', true],
    ['null', null],
  ])('refuses a ref that is %s, naming ref, without echoing it', async (_name, ref) => {
    const response = await sendThenHealth(JSON.stringify({ op: 'health', ref }));
    expect(response.ok).toBe(false);
    expect(response.error.code).toBe('BAD_REQUEST');
    expect(response.error.message).toContain('ref');
    expect(response).not.toHaveProperty('ref');
  });

  it.each([
    ['a string', 'abc'],
    ['an empty string', ''],
    ['a number', 17],
    ['zero', 0],
    ['a negative float', -2.5],
  ])('echoes a ref that is %s, on errors and on success', async (_name, ref) => {
    const error = await sendThenHealth(JSON.stringify({ op: 'bogus', ref }));
    expect(error).toMatchObject({ ok: false, error: { code: 'UNKNOWN_OP' } });
    expect(error).toHaveProperty('ref', ref);
    const ok = await exchange({ op: 'health', ref });
    expect(ok).toMatchObject({ ok: true, op: 'health' });
    expect(ok).toHaveProperty('ref', ref);
  });

  it('echoes the ref of a request that fails later, in the handler (NOT_FOUND)', async () => {
    const response = await sendThenHealth('{"op":"wait","id":"missing-42","ref":99}');
    expect(response).toMatchObject({ ok: false, ref: 99, error: { code: 'NOT_FOUND' } });
  });

  it('does not echo a ref on BAD_JSON (it cannot be read)', async () => {
    const response = await sendThenHealth('{"op":"health","ref":"broken",');
    expect(response.ok).toBe(false);
    expect(response.error.code).toBe('BAD_JSON');
    expect(response).not.toHaveProperty('ref');
  });

  it('runs a request with cmd and no op as op "run"', async () => {
    const response = await exchange({ cmd: 'printf %s no-op', ref: 'no-op' });
    expect(response).toMatchObject({ ok: true, ref: 'no-op', op: 'run', task: { state: 'COMPLETED', exit_code: 0, stdout: 'no-op' } });
  });

  it('accepts command as an alias of cmd, with and without op', async () => {
    expect(await exchange({ command: 'printf %s alias', ref: 'alias' })).toMatchObject({
      ok: true, ref: 'alias', op: 'run', task: { state: 'COMPLETED', stdout: 'alias' },
    });
    expect(await exchange({ op: 'run', command: [CMD, '--stdout', 'alias-array'], ref: 'alias-array' })).toMatchObject({
      ok: true, ref: 'alias-array', op: 'run', task: { state: 'COMPLETED', stdout: 'alias-array' },
    });
  });

  it('accepts a spec using every field with valid values (the rules above are not over-strict)', async () => {
    expect(await exchange({ op: 'submit', id: 'dep-ok_1.a:b-c', cmd: 'true', ref: 'dep' })).toMatchObject({
      ok: true, ref: 'dep', task: { id: 'dep-ok_1.a:b-c' },
    });
    const response = await exchange({
      op: 'run',
      ref: 'full',
      id: 'x'.repeat(128),
      cmd: [CMD, '--print-env', 'FULL_VAR', '--echo-stdin'],
      args: ['--stdout', 'arg'],
      timeout_ms: 20_000,
      cwd: '/',
      env: { FULL_VAR: 'v' },
      stdin: 'in|',
      depends_on: ['dep-ok_1.a:b-c'],
      start_at: new Date(Date.now() - 1000).toISOString(),
      retries: 100,
      retry_delay_ms: 0,
      priority: -5,
      max_output_bytes: 1,
    });
    expect(response).toMatchObject({
      ok: true, ref: 'full', op: 'run', task: { id: 'x'.repeat(128), state: 'COMPLETED', stdout: 'i', stdout_truncated: true },
    });
  });

  it('accepts start_at as epoch milliseconds and delay_ms 0', async () => {
    expect(await exchange({ cmd: 'printf epoch', start_at: Date.now() - 10, ref: 'epoch' })).toMatchObject({
      ok: true, ref: 'epoch', task: { state: 'COMPLETED', stdout: 'epoch' },
    });
    expect(await exchange({ cmd: 'printf delay', delay_ms: 0, ref: 'delay0' })).toMatchObject({
      ok: true, ref: 'delay0', task: { state: 'COMPLETED', stdout: 'delay' },
    });
  });

  it('answers each request of a burst of bad ones on one connection once, with its ref, and keeps the connection', async () => {
    const raw = await daemon.raw();
    const rows = SPEC_ROWS.filter(([, , code]) => code === 'BAD_REQUEST' || code === 'UNKNOWN_OP');
    const lines = rows.map(([, request], i) => JSON.stringify({ ...request, ref: `burst-${i}` }));
    raw.send(`${lines.join('\n')}\n{"op":"health","ref":"burst-end"}\n`);
    const answers = await within(raw.take(lines.length + 1), 20_000, 'the burst');
    const end = answers.find((a) => a.ref === 'burst-end');
    expect(end).toMatchObject({ ok: true, op: 'health' });
    // one answer per request (whether each is right is the table's business)
    expect(answers.filter((a) => a !== end).map((a) => a.ref).sort()).toEqual(lines.map((_, i) => `burst-${i}`).sort());
    raw.close();
  });

  it('answers a start_at beyond what a date can hold with BAD_REQUEST, registering nothing', async () => {
    const answer = await sendThenHealth(JSON.stringify({ op: 'submit', ref: 'far', id: 'too-far', cmd: 'true', start_at: 9e15 }));
    expect(answer).toMatchObject({ ok: false, ref: 'far', error: { code: 'BAD_REQUEST' } });
    expect(answer.error.message).toContain('start_at');
    const status = await sendThenHealth('{"op":"status","ref":"s","id":"too-far"}');
    expect(status).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
    expect(await sendThenHealth('{"op":"list","ref":"l"}')).toMatchObject({ ok: true, ref: 'l' });
  });

  it('refuses an env variable named __proto__ with BAD_REQUEST saying why, registering nothing', async () => {
    // Written as text: in a JavaScript object literal, __proto__ would set the prototype instead of a key.
    const line = `{"op":"submit","ref":"proto","id":"proto-env","cmd":["true"],"env":{"A":"1","__proto__":"x"}}`;
    const answer = await sendThenHealth(line);
    expect(answer).toMatchObject({ ok: false, ref: 'proto', error: { code: 'BAD_REQUEST' } });
    expect(answer.error.message).toContain('env.__proto__');
    expect(answer.error.message).toContain('prototype');
    expect(await sendThenHealth('{"op":"status","ref":"s","id":"proto-env"}')).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
  });

  it('passes env variables named like other Object.prototype members to the task unchanged', async () => {
    for (const name of ['constructor', 'toString', 'hasOwnProperty', '__defineSetter__', 'valueOf']) {
      const response = await exchange({ op: 'run', ref: name, cmd: [CMD, '--print-env', name], env: { [name]: `value of ${name}` } });
      expect(response, name).toMatchObject({ ok: true, ref: name, task: { state: 'COMPLETED', stdout: `value of ${name}\n` } });
    }
  });

  it('answers an unknown field with a very long name at once, with a short message', async () => {
    const key = 'k'.repeat(500_000);
    const started = Date.now();
    const answer = await sendThenHealth(`{"op":"health","ref":"long-key","${key}":1}`);
    expect(answer).toMatchObject({ ok: false, ref: 'long-key', error: { code: 'BAD_REQUEST' } });
    expect(answer.error.message.length).toBeLessThan(1000);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe("the daemon's own environment", () => {
  it('reaches the task whole, a variable named __proto__ included', async () => {
    // A computed key: an own property named __proto__, as the operating system would hand it to Node.
    const daemon = await startDaemon([], { env: { ['__proto__']: 'inherited' } });
    try {
      const raw = await daemon.raw();
      raw.send(`${JSON.stringify({ op: 'run', ref: 'inherit', cmd: [CMD, '--print-env', '__proto__'] })}\n`);
      expect(await within(raw.next(), 20_000, 'run')).toMatchObject({ ok: true, task: { state: 'COMPLETED', stdout: 'inherited\n' } });
      raw.close();
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
  });
});

/** The error a request gets from the schema alone (no daemon), as `CODE: message`. */
function refusal(request: unknown): string {
  try {
    parseRequest(request);
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return `${code}: ${message}`;
  }
  throw new Error(`${JSON.stringify(request)} was accepted`);
}

/** One valid value of every spec field: a field added to the type and not here does not compile. */
const VALID_SPEC: { [Field in keyof TaskSpecInput]-?: Exclude<TaskSpecInput[Field], undefined> } = {
  cmd: ['true'],
  command: 'true',
  script: { lang: 'sh', source: 'true' },
  args: ['a'],
  id: 'every-field',
  timeout_ms: 1000,
  cwd: '/',
  env: { A: 'b' },
  stdin: 'in',
  depends_on: ['dep'],
  start_at: '2030-01-31T09:30:00Z',
  delay_ms: 10,
  retries: 2,
  retry_delay_ms: 0,
  priority: -5,
  max_output_bytes: 100,
  group: 'gpu',
};

/** A spec that holds `field` and whatever else it needs to be valid (a command, unless the field is one). */
const specWith = (field: keyof TaskSpecInput): Record<string, unknown> => ({
  ...(['cmd', 'command', 'script'].includes(field) ? {} : { cmd: 'true' }),
  [field]: VALID_SPEC[field],
});

/** One valid request of every op: an op added to the schema and not here does not compile. */
const VALID_REQUESTS: { [O in Op]: Request<O> } = {
  run: { op: 'run', cmd: 'true' },
  submit: { op: 'submit', cmd: ['true'], id: 'a' },
  status: { op: 'status', id: 'a' },
  wait: { op: 'wait', id: 'a', timeout_ms: 0 },
  list: { op: 'list', state: 'QUEUED', limit: 5, after: 'a', order: 'newest', group: 'gpu' },
  cancel: { op: 'cancel', id: 'a' },
  follow: { op: 'follow', id: 'a' },
  remove: { op: 'remove', id: 'a' },
  restart: { op: 'restart', id: 'a' },
  edit: { op: 'edit', id: 'a', cmd: 'true', priority: 1, start_at: 0, group: 'g' },
  pause: { op: 'pause', group: 'g' },
  resume: { op: 'resume' },
  groups: { op: 'groups' },
  set_group: { op: 'set_group', name: 'g', concurrency: 2 },
  count: { op: 'count' },
  health: { op: 'health' },
  stats: { op: 'stats' },
  subscribe: { op: 'subscribe', ids: ['a'] },
  auth: { op: 'auth', token: 't' },
};

/** Each rule of the schema and the exact message it gives (clients and people read these). */
const MESSAGES: [name: string, request: unknown, refusal: string][] = [
  ['not an object', 'health', 'BAD_REQUEST: a request must be a JSON object, got string "health"'],
  ['an array', [1], 'BAD_REQUEST: a request must be a JSON object, got an array'],
  ['a ref of the wrong type', { op: 'health', ref: {} }, 'BAD_REQUEST: ref must be a string or a number, got an object'],
  ['op of the wrong type', { op: 5 }, 'BAD_REQUEST: op must be a string, got number 5'],
  ['no op and no cmd', { id: 'x' }, 'BAD_REQUEST: op is required (or cmd, which means op "run")'],
  ['an unknown op', { op: 'explode' }, 'UNKNOWN_OP: op "explode" is not known; ops are run, submit, status, wait, list, cancel, follow, remove, restart, edit, pause, resume, groups, set_group, count, health, stats, subscribe, auth'],
  ['an op in capitals', { op: 'RUN' }, 'UNKNOWN_OP: op "RUN" is not known (did you mean "run"?); ops are run, submit, status, wait, list, cancel, follow, remove, restart, edit, pause, resume, groups, set_group, count, health, stats, subscribe, auth'],
  ['a group with a space', { cmd: 'true', group: 'my group' }, 'BAD_REQUEST: group must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got "my group"'],
  ['set_group with no limit', { op: 'set_group', name: 'g' }, 'BAD_REQUEST: concurrency is required'],
  ['set_group with a limit of 0', { op: 'set_group', name: 'g', concurrency: 0 }, 'BAD_REQUEST: concurrency must be an integer between 1 and 100000, got 0'],
  ['edit with nothing to change', { op: 'edit', id: 'a' }, 'BAD_REQUEST: edit needs at least one of cmd, priority, start_at, delay_ms, group'],
  ['edit of a field it cannot change', { op: 'edit', id: 'a', retries: 2 }, 'BAD_REQUEST: unknown field "retries"; op "edit" takes "id", "cmd", "command", "priority", "start_at", "delay_ms", "group"'],
  ['list in an unknown order', { op: 'list', order: 'random' }, 'BAD_REQUEST: order must be one of oldest, newest, got string "random"'],
  ['a misspelt field', { cmd: 'true', timout_ms: 1000 }, 'BAD_REQUEST: unknown field "timout_ms" (did you mean "timeout_ms"?)'],
  ['a field far from every name', { cmd: 'true', colour: 'red' }, 'BAD_REQUEST: unknown field "colour"; op "run" takes "cmd", "command", "script", "args", "id", "timeout_ms", "cwd", "env", "stdin", "depends_on", "start_at", "delay_ms", "retries", "retry_delay_ms", "priority", "max_output_bytes", "group"'],
  ['a field on an op without fields', { op: 'health', verbose: true }, 'BAD_REQUEST: unknown field "verbose"; op "health" takes no fields'],
  ['a field far from those of wait', { op: 'wait', id: 'a', tiemout: 1 }, 'BAD_REQUEST: unknown field "tiemout"; op "wait" takes "id", "timeout_ms"'],
  ['an unknown field in script', { op: 'run', script: { lang: 'sh', source: 'true', interpreter: 'x' } }, 'BAD_REQUEST: unknown field "interpreter"; script takes "lang", "source", "source_b64"'],
  ['cmd and command', { cmd: 'true', command: 'true' }, 'BAD_REQUEST: give cmd or command, not both'],
  ['cmd and script', { cmd: 'true', script: { lang: 'sh', source: 'true' } }, 'BAD_REQUEST: give either cmd or script, not both'],
  ['neither cmd nor script', { op: 'run' }, 'BAD_REQUEST: cmd is required (a string or an array of strings), or script'],
  ['start_at and delay_ms', { cmd: 'true', start_at: 0, delay_ms: 0 }, 'BAD_REQUEST: give start_at or delay_ms, not both'],
  ['cmd a number', { cmd: 42 }, 'BAD_REQUEST: cmd must be a string or an array of strings, got number 42'],
  ['cmd blank', { cmd: '   ' }, 'BAD_REQUEST: cmd must not be empty'],
  ['command an empty array', { command: [] }, 'BAD_REQUEST: command must not be an empty array'],
  ['cmd an empty program', { cmd: ['', 'x'] }, 'BAD_REQUEST: cmd[0] must name a program, got an empty string'],
  ['cmd with a number', { cmd: ['echo', 5] }, 'BAD_REQUEST: cmd[1] must be a string, got number 5'],
  ['cmd with NUL', { cmd: 'echo a\u0000b' }, 'BAD_REQUEST: cmd must not contain a NUL character'],
  ['cmd too long for exec', { cmd: 'x'.repeat(131_072) }, 'BAD_REQUEST: cmd is longer than 131071 bytes, the most one program argument or variable can hold'],
  ['script a string', { op: 'run', script: 'echo hi' }, 'BAD_REQUEST: script must be an object {lang, source} or {lang, source_b64}, got string "echo hi"'],
  ['script without lang', { op: 'run', script: { source: 'true' } }, 'BAD_REQUEST: script.lang must be one of sh, bash, python, node, bin, got nothing'],
  ['script without source', { op: 'run', script: { lang: 'sh' } }, 'BAD_REQUEST: script must have exactly one of source and source_b64'],
  ['script source_b64 not base64', { op: 'run', script: { lang: 'sh', source_b64: 'dHJ1ZQ' } }, 'BAD_REQUEST: script.source_b64 must be a base64 string, got string "dHJ1ZQ"'],
  ['args a string', { cmd: ['echo'], args: 'a b' }, 'BAD_REQUEST: args must be an array of strings, got string "a b"'],
  ['id with a space', { cmd: 'true', id: 'a b' }, 'BAD_REQUEST: id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got "a b"'],
  ['id a number', { cmd: 'true', id: 5 }, 'BAD_REQUEST: id must be a string, got number 5'],
  ['timeout_ms 0', { cmd: 'true', timeout_ms: 0 }, 'BAD_REQUEST: timeout_ms must be an integer from 1 to 2147483647, got 0'],
  ['timeout_ms a float', { cmd: 'true', timeout_ms: 1.5 }, 'BAD_REQUEST: timeout_ms must be an integer from 1 to 2147483647, got number 1.5'],
  ['cwd empty', { cmd: 'true', cwd: '' }, 'BAD_REQUEST: cwd must not be empty'],
  ['env an array', { cmd: 'true', env: ['A=1'] }, 'BAD_REQUEST: env must be an object of string to string, got an array'],
  ['env with a number', { cmd: 'true', env: { A: 1 } }, 'BAD_REQUEST: env.A must be a string, got number 1'],
  ['env with "=" in a name', { cmd: 'true', env: { 'A=B': 'x' } }, 'BAD_REQUEST: env key "A=B" is not a valid variable name (empty, or has "=" or NUL)'],
  ['stdin a number', { cmd: 'cat', stdin: 5 }, 'BAD_REQUEST: stdin must be a string, got number 5'],
  ['depends_on a string', { cmd: 'true', depends_on: 'a' }, 'BAD_REQUEST: depends_on must be an array of task ids, got string "a"'],
  ['depends_on a bad id', { cmd: 'true', depends_on: ['a b'] }, 'BAD_REQUEST: depends_on[0] must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got "a b"'],
  ['start_at no date', { cmd: 'true', start_at: 'tomorrow' }, 'BAD_REQUEST: start_at must be an ISO-8601 date-time such as "2030-01-31T09:30:00Z", got "tomorrow"'],
  ['start_at negative', { cmd: 'true', start_at: -1 }, 'BAD_REQUEST: start_at must be epoch milliseconds (an integer from 0 to 8640000000000000) or an ISO-8601 string, got -1'],
  ['start_at a boolean', { cmd: 'true', start_at: true }, 'BAD_REQUEST: start_at must be an ISO-8601 string or epoch milliseconds, got boolean true'],
  ['delay_ms negative', { cmd: 'true', delay_ms: -1 }, 'BAD_REQUEST: delay_ms must be an integer between 0 and 2147483647, got -1'],
  ['retries 101', { cmd: 'true', retries: 101 }, 'BAD_REQUEST: retries must be an integer between 0 and 100, got 101'],
  ['retry_delay_ms a string', { cmd: 'true', retry_delay_ms: '100' }, 'BAD_REQUEST: retry_delay_ms must be an integer between 0 and 2147483647, got string "100"'],
  ['priority huge', { cmd: 'true', priority: 1e300 }, 'BAD_REQUEST: priority must be an integer between -1000000000 and 1000000000, got 1e+300'],
  ['max_output_bytes 0', { cmd: 'true', max_output_bytes: 0 }, 'BAD_REQUEST: max_output_bytes must be an integer from 1 to 16777216, got 0'],
  ['status without id', { op: 'status' }, 'BAD_REQUEST: id is required'],
  ['wait with a negative timeout_ms', { op: 'wait', id: 'x', timeout_ms: -1 }, 'BAD_REQUEST: timeout_ms must be an integer between 0 and 2147483647, got -1'],
  ['list with a bad state', { op: 'list', state: 'DONE' }, 'BAD_REQUEST: state must be one of PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, got string "DONE"'],
  ['list with limit 0', { op: 'list', limit: 0 }, 'BAD_REQUEST: limit must be an integer between 1 and 10000, got 0'],
  ['list with a bad after', { op: 'list', after: 'a b' }, 'BAD_REQUEST: after must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, got "a b"'],
  ['subscribe with ids a string', { op: 'subscribe', ids: 'abc' }, 'BAD_REQUEST: ids must be an array of task ids, got string "abc"'],
  ['auth without token', { op: 'auth' }, 'BAD_REQUEST: token is required'],
  ['auth with a number token', { op: 'auth', token: 1234 }, 'BAD_REQUEST: token must be a string, got number 1234'],
  // With several faults, the first field in the order of the schema (and of docs/protocol.md) is named.
  ['two bad fields', { cmd: 5, retries: -1 }, 'BAD_REQUEST: cmd must be a string or an array of strings, got number 5'],
];

describe('the schema (no daemon)', () => {
  it('validates every field of the TaskSpecInput type, and has no field the type lacks', () => {
    expect(Object.keys(VALID_SPEC)).toEqual(Object.keys(TASK_SPEC_FIELDS));
    for (const field of Object.keys(VALID_SPEC) as (keyof TaskSpecInput)[]) {
      expect(() => taskSpec(specWith(field)), field).not.toThrow();
      expect(() => taskSpec({ ...specWith(field), [field]: true }), field).toThrow(new RegExp(`^${field}\\b`));
    }
  });

  it('accepts one request of every op, as the Request type describes it', () => {
    for (const [op, request] of Object.entries(VALID_REQUESTS)) expect(parseRequest(request), op).toMatchObject({ op });
  });

  it.each(MESSAGES)('%s', (_name, request, expected) => {
    expect(refusal(request)).toBe(expected);
  });

  it('folds command into cmd, fills in the defaults, removes duplicate dependencies and reads start_at as epoch ms', () => {
    expect(parseRequest({ op: 'submit', ref: 7, id: 'x', command: ['ls'], depends_on: ['a', 'a'], start_at: '2030-01-31T09:30:00Z' })).toEqual({
      op: 'submit',
      ref: 7,
      id: 'x',
      spec: { ...SPEC_DEFAULTS, cmd: ['ls'], depends_on: ['a'], start_at: Date.UTC(2030, 0, 31, 9, 30) },
    });
    expect(SPEC_DEFAULTS).toEqual({ depends_on: [], retries: 0, retry_delay_ms: 1000, priority: 0, max_output_bytes: 1024 * 1024 });
  });

  it('has a constructor for every request error code, and no other', () => {
    expect(Object.keys(requestError).sort()).toEqual(Object.keys(REQUEST_ERRORS).sort());
    expect(requestError.NOT_FOUND('x')).toMatchObject({ code: 'NOT_FOUND', message: 'id "x" names no task' });
  });
});

describe('withFieldsNamed', () => {
  const refusal = (parse: () => unknown, names: Record<string, string>) => {
    try {
      withFieldsNamed(parse, names);
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error('the parse succeeded');
  };

  it('names the field a message starts with as the user gave it, and leaves what was sent as it was', () => {
    const request = { op: 'submit', cmd: 'true', depends_on: 'depends_on' };
    expect(refusal(() => parseRequest(request), { depends_on: 'dependencies' })).toBe('dependencies must be an array of task ids, got string "depends_on"');
    expect(refusal(() => parseRequest({ op: 'submit', cmd: 'true', retry_delay_ms: -1 }), { retries: '--retries' })).toMatch(/^retry_delay_ms /);
    expect(refusal(() => parseRequest({ op: 'submit', cmd: 'true', depends_on: [5] }), { depends_on: '--depends-on' })).toMatch(/^--depends-on\[0\] /);
  });
});
