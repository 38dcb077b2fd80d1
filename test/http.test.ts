import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shellWords } from '../src/daemon/http/shell-words.js';
import { TaskManagerClient } from '../src/index.js';
import { execa } from 'execa';
import { CMD, eventually, TASK_MANAGER, untilExists, startDaemon, tasksAfterARun, tempDir, within, type TestDaemon } from './helpers.js';
import { EventStreamReader, http, rawExchange } from './http-client.js';

const dir = tempDir('tm-http-');

describe('HTTP on the daemon port', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--max-line-bytes', '65536']);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });
  const call = (method: string, path: string, options?: Parameters<typeof http>[3]) => http(daemon.port, method, path, options);

  it('runs a task and its dependent in order, as the curl examples do', async () => {
    const a = await call('POST', '/tasks', { body: { id: 'task-a', cmd: [CMD, '--sleep', '1000', '--stdout', 'a'] } });
    expect(a.status).toBe(201);
    expect(a.headers.location).toBe('/tasks/task-a');
    expect(a.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(a.json).toMatchObject({ ok: true, task: { id: 'task-a' } });
    const b = await call('POST', '/tasks', { body: { id: 'task-b', cmd: 'echo b', dependencies: ['task-a'] } });
    expect(b.status).toBe(201);
    expect(b.json.task).toMatchObject({ state: 'PENDING', depends_on: ['task-a'] });

    const waited = await call('GET', '/tasks/task-b/wait?timeout_ms=20000');
    expect(waited.status).toBe(200);
    expect(waited.json.task).toMatchObject({ state: 'COMPLETED', stdout: 'b\n' });
    const first = (await call('GET', '/tasks/task-a')).json.task;
    expect(first).toMatchObject({ state: 'COMPLETED', stdout: 'a' });
    expect(Date.parse(waited.json.task.started_at)).toBeGreaterThanOrEqual(Date.parse(first.finished_at));

    const again = await call('POST', '/tasks', { body: { id: 'task-b', cmd: 'echo b', dependencies: ['task-a'] } });
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ ok: true, duplicate: true, task: { id: 'task-b', state: 'COMPLETED' } });
  });

  it('answers every error with the status of its code and the line protocol body', async () => {
    const cases: [string, string, Parameters<typeof http>[3], number, string, RegExp?][] = [
      ['GET', '/tasks/nobody', {}, 404, 'NOT_FOUND', /nobody/],
      ['GET', '/no/such/route', {}, 404, 'NOT_FOUND', /GET \/no\/such\/route/],
      ['PUT', '/tasks', {}, 405, 'METHOD_NOT_ALLOWED', /GET, HEAD, POST/],
      ['TRACE', '/tasks', {}, 405, 'METHOD_NOT_ALLOWED', /TRACE \/tasks/],
      ['PROPFIND', '/tasks/task-a', {}, 405, 'METHOD_NOT_ALLOWED', /GET, HEAD, DELETE, PATCH/],
      ['POST', '/tasks', { body: { cmd: 'true', dependencies: 'task-a' } }, 400, 'BAD_REQUEST', /^dependencies must be/],
      ['POST', '/create_task', { body: { type: 'python' } }, 400, 'BAD_REQUEST', /^file must be the program/],
      ['POST', '/create_task', { body: { type: 'bin', file: '@@@@' } }, 400, 'BAD_REQUEST', /^file must be a base64 string/],
      ['GET', '/get_status', { body: '{"id":"task-a"}', headers: { 'Content-Type': 'text/plain' } }, 415, 'UNSUPPORTED_MEDIA_TYPE', /text\/plain/],
      ['POST', '/tasks', { body: '{"cmd": "true",', headers: { 'Content-Type': 'application/json' } }, 400, 'BAD_JSON', /not valid JSON/],
      ['POST', '/tasks', { body: { cmd: 'true', timout_ms: 5 } }, 400, 'BAD_REQUEST', /timout_ms/],
      ['POST', '/tasks', { body: { cmd: 'true', op: 'run' } }, 400, 'BAD_REQUEST', /\bop\b/],
      ['POST', '/tasks', { body: ['not', 'an', 'object'] }, 400, 'BAD_REQUEST', /object/],
      ['POST', '/tasks', { body: { cmd: 'true', depends_on: ['ghost'] } }, 400, 'UNKNOWN_DEPENDENCY', /ghost/],
      ['POST', '/tasks', { body: { id: 'task-a', cmd: 'other' } }, 409, 'ID_CONFLICT', /task-a/],
      ['POST', '/tasks/task-a/cancel', {}, 409, 'NOT_CANCELABLE', /COMPLETED/],
      ['POST', '/tasks', { body: { cmd: 'x'.repeat(70_000) } }, 413, 'PAYLOAD_TOO_LARGE', /65536/],
      ['POST', '/tasks', { body: '{"cmd":"true"}', headers: { 'Content-Type': 'text/plain' } }, 415, 'UNSUPPORTED_MEDIA_TYPE', /text\/plain/],
      ['GET', '/tasks?limit=lots', {}, 400, 'BAD_REQUEST', /limit/],
      ['GET', '/tasks?state=DONE', {}, 400, 'BAD_REQUEST', /state/],
    ];
    for (const [method, path, options, status, code, message] of cases) {
      const answer = await call(method, path, options);
      expect({ what: `${method} ${path}`, status: answer.status, body: answer.json }).toMatchObject({
        status,
        body: { ok: false, error: { code, message: expect.stringMatching(message ?? /./) } },
      });
      expect(answer.headers['content-type']).toBe('application/json; charset=utf-8');
    }
    expect((await call('PUT', '/tasks')).headers.allow).toBe('GET, HEAD, POST');
  });

  it('lists, counts, waits out, cancels and reports health and stats', async () => {
    const long = await call('POST', '/tasks', { body: { id: 'long', cmd: [CMD, '--sleep', '60000'] } });
    expect(long.status).toBe(201);
    const waited = await call('GET', '/tasks/long/wait?timeout_ms=50');
    expect(waited.json).toMatchObject({ ok: true, waited_out: true, task: { id: 'long' } });
    const listed = await call('GET', '/tasks?limit=2');
    expect(listed.json.tasks).toHaveLength(2);
    expect(listed.json.total).toBeGreaterThanOrEqual(3);
    expect(listed.json.tasks[0]).not.toHaveProperty('stdout');
    const after = await call('GET', `/tasks?after=${listed.json.tasks[1].id}&limit=100`);
    expect(after.json.tasks.map((task: { id: string }) => task.id)).toContain('long');
    expect((await call('GET', '/count')).json).toMatchObject({ ok: true, counts: { COMPLETED: 2 }, tasks: 1 });
    const canceled = await call('POST', '/tasks/long/cancel');
    expect(canceled.json).toMatchObject({ ok: true, task: { state: 'CANCELED', error: { code: 'CANCELED' } } });
    expect((await call('GET', '/health')).json).toMatchObject({ ok: true, version: expect.any(String), uptime_ms: expect.any(Number) });
    const stats = (await call('GET', '/stats')).json;
    expect(stats).toMatchObject({ ok: true, cpu: { cores: expect.any(Number) }, memory: { total_bytes: expect.any(Number) }, disk: { free_bytes: expect.any(Number) } });
  });

  it('keeps a connection alive across requests, pipelined ones too, and takes a chunked body', async () => {
    const body = JSON.stringify({ id: 'chunked', cmd: 'echo chunked' });
    const half = Math.floor(body.length / 2);
    const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;
    const requests =
      `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /count HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` +
      `POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `${chunk(body.slice(0, half))}${chunk(body.slice(half))}0\r\n\r\n`;
    const received = await within(
      rawExchange(daemon.port, requests, (text) => text.split('HTTP/1.1 ').length > 3 && text.includes('"chunked"')),
      10_000,
      'three answers',
    );
    expect(received.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 201']);
    expect(received.indexOf('"version"')).toBeLessThan(received.indexOf('"counts"'));
  });

  it('keeps the connection after a body that is not JSON, as after any other 400', async () => {
    const requests =
      'POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{bad' +
      'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const received = await within(
      rawExchange(daemon.port, requests, (text) => text.includes('"version"')),
      10_000,
      'the health answer on the same connection',
    );
    expect(received.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 400', 'HTTP/1.1 200']);
    expect(received).toContain('"BAD_JSON"');
    expect(received.toLowerCase()).not.toContain('connection: close');
  });

  it("answers a request Node's parser cannot read with the line protocol's body, and closes", async () => {
    for (const [head, status, message] of [
      ['FOO /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 400, /no method HTTP knows/],
      ['POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n', 400, /Content-Length/],
      // The malformed part is the request's own body: it is answered at once, not after itself.
      ['POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n', 400, /chunk/],
      [`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`, 431, /headers are larger/],
    ] as const) {
      const received = await within(rawExchange(daemon.port, head), 10_000, 'the close');
      const [statusLine, ...rest] = received.split('\r\n');
      expect(statusLine).toBe(`HTTP/1.1 ${status} ${status === 400 ? 'Bad Request' : 'Request Header Fields Too Large'}`);
      expect(rest).toContain('Content-Type: application/json; charset=utf-8');
      expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST', message: expect.stringMatching(message) } });
    }
  });

  it('answers a malformed request only after the answer still owed on its connection, never inside it', async () => {
    await call('POST', '/tasks', { body: { id: 'slow-to-wait-for', cmd: [CMD, '--sleep', '60000'] } });
    const exchange = rawExchange(daemon.port, 'GET /tasks/slow-to-wait-for/wait HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nFOO /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await eventually(async () => (await call('GET', '/tasks/slow-to-wait-for')).json.task.state === 'RUNNING');
    await call('POST', '/tasks/slow-to-wait-for/cancel'); // the wait is answered now
    const received = await within(exchange, 10_000, 'the close');
    expect(received.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
    expect(received.indexOf('"CANCELED"')).toBeLessThan(received.indexOf('no method HTTP knows'));
  });

  it('serves kept output as JSON, one stream or both', async () => {
    await call('POST', '/tasks', { body: { id: 'printer', cmd: 'echo out; echo err >&2' } });
    await call('GET', '/tasks/printer/wait');
    expect((await call('GET', '/tasks/printer/output')).json).toEqual({ ok: true, stdout: 'out\n', stderr: 'err\n' });
    expect((await call('GET', '/tasks/printer/output?stream=stderr')).json).toEqual({ ok: true, stderr: 'err\n' });
    expect((await call('GET', '/tasks/printer/output?stream=both')).json.error).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('stream') });
    // The stream not asked for is not held: once the task is removed, both of its files go.
    expect((await call('DELETE', '/tasks/printer')).status).toBe(200);
    await eventually(() => !readdirSync(join(daemon.dataDir, 'output')).some((file) => file.startsWith('printer.')));
  });

  it('follows output live as Server-Sent Events, then sends the record and ends the stream', async () => {
    const gate = join(dir, 'follow-gate');
    const script = `echo first; ${untilExists(gate)}; echo second; echo late >&2`;
    await call('POST', '/tasks', { body: { id: 'followed', cmd: script } });
    const stream = new EventStreamReader(daemon.port, '/tasks/followed/output?follow=1');
    const stderrOnly = new EventStreamReader(daemon.port, '/tasks/followed/output?follow=1&stream=stderr');
    const first = await within(stream.until((event) => event.event === 'output'), 10_000, 'the first output');
    expect(stream.status).toBe(200);
    expect(stream.contentType).toBe('text/event-stream; charset=utf-8');
    expect(first.at(-1)!.data).toMatchObject({ id: 'followed', stream: 'stdout', data: 'first\n' });
    writeFileSync(gate, '');
    const rest = await within(stream.until((event) => event.event === 'task'), 10_000, 'the final record');
    // In order within a stream, not across them; a write may come in more than one event.
    const text = (name: string) => rest.filter((event) => event.event === 'output' && event.data.stream === name).map((event) => event.data.data).join('');
    expect({ stdout: text('stdout'), stderr: text('stderr') }).toEqual({ stdout: 'second\n', stderr: 'late\n' });
    expect(rest.at(-1)!.data).toMatchObject({ id: 'followed', state: 'COMPLETED' });
    expect(rest.at(-1)!.data).not.toHaveProperty('stdout');
    await within(stream.ended, 10_000, 'the end of the stream');
    // ?stream= holds for a follow as well: stderr alone, then the record.
    const filtered = await within(stderrOnly.until((event) => event.event === 'task'), 10_000, 'the filtered follow');
    expect(filtered.filter((event) => event.event === 'output').map((event) => event.data.stream)).toEqual(expect.arrayContaining(['stderr']));
    expect(filtered.filter((event) => event.event === 'output').every((event) => event.data.stream === 'stderr')).toBe(true);
  });

  it('pushes task changes to /events, for the ids asked or for all', async () => {
    const some = new EventStreamReader(daemon.port, '/events?ids=watched');
    const all = new EventStreamReader(daemon.port, '/events');
    const client = await daemon.client();
    // The stream is open once its first comment arrived; a status round trip orders it before the submits.
    await client.health();
    await new Promise((resolve) => setTimeout(resolve, 100));
    await client.submit({ id: 'unwatched', cmd: ['true'] });
    await client.submit({ id: 'watched', cmd: [CMD, '--stdout', 'seen'] });
    const events = await within(some.until((event) => event.data.state === 'COMPLETED'), 10_000, 'the watched task completing');
    expect(new Set(events.map((event) => event.data.id))).toEqual(new Set(['watched']));
    expect(events.every((event) => event.event === 'task')).toBe(true);
    expect(events.at(-1)!.data).not.toHaveProperty('stdout');
    const everything = await within(all.until((event) => event.data.id === 'watched' && event.data.state === 'COMPLETED'), 10_000, 'all changes');
    expect(everything.map((event) => event.data.id)).toContain('unwatched');
    // A removal is pushed too, as `removed` with the id, to the streams that follow the task.
    expect((await call('DELETE', '/tasks/watched')).status).toBe(200);
    const removal = await within(some.until((event) => event.event === 'removed'), 10_000, 'the removal');
    expect(removal.at(-1)!.data).toEqual({ id: 'watched', created_at: expect.any(String) });
    some.stop();
    all.stop();
    await client.close();
  });

  it('survives connections reset or half-closed while it tells HTTP from lines, and answers what came before the end', async () => {
    for (const first of ['', 'G', 'GET / HTTP/1.1']) {
      const socket = connect(daemon.port, '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      if (first) socket.write(first);
      socket.resetAndDestroy();
    }
    // A first line without its newline, then the end of the peer's side: still read as a request.
    const half = connect(daemon.port, '127.0.0.1');
    let answer = '';
    half.setEncoding('utf8');
    half.on('data', (chunk: string) => (answer += chunk));
    const closed = new Promise((resolve) => half.once('close', resolve));
    half.end('{"op":"health","ref":"last"}');
    await within(closed, 10_000, 'the answer and the close');
    expect(JSON.parse(answer)).toMatchObject({ ok: true, ref: 'last', op: 'health' });
    expect((await call('GET', '/health')).status).toBe(200);
  });

  it('runs tasksolver-style clients unchanged: a base64 Python script, a binary, their status and count', async () => {
    const python = Buffer.from('import sys\nprint("args", sys.argv[1:])\n').toString('base64');
    const created = await call('POST', '/create_task', { body: { type: 'python', file: python, args: `one 'two words' "say \\"hi\\""` } });
    expect(created.status).toBe(200);
    expect(created.json).toEqual({ id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/) });
    const id = created.json.id as string;
    await call('GET', `/tasks/${id}/wait`);
    const status = await call('GET', `/get_status?id=${id}`);
    expect(status.json).toEqual({
      status: 'SUCCESS',
      meta: {
        created_at: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
        started_at: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
        finished_at: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
      },
      result: { stdout: "args ['one', 'two words', 'say \"hi\"']\n" },
    });
    // Clients of such servers send the id as the body of a GET.
    expect((await call('GET', '/get_status', { body: { id } })).json.status).toBe('SUCCESS');

    const binary = readFileSync('/bin/echo').toString('base64');
    const echo = (await call('POST', '/create_task', { body: { type: 'bin', file: binary, args: 'from a binary' } })).json.id as string;
    await call('GET', `/tasks/${echo}/wait`);
    expect((await call('GET', `/get_status?id=${echo}`)).json.result).toEqual({ stdout: 'from a binary\n' });

    const failing = Buffer.from('import sys\nsys.stderr.write("broken\\n")\nsys.exit(3)\n').toString('base64');
    const failed = (await call('POST', '/create_task', { body: { type: 'python', file: failing } })).json.id as string;
    await call('GET', `/tasks/${failed}/wait`);
    expect((await call('GET', `/get_status?id=${failed}`)).json).toMatchObject({ status: 'ERROR', result: { stdout: '', stderr: 'broken\n' } });

    await call('POST', '/tasks', { body: { id: 'counted', cmd: [CMD, '--sleep', '60000'] } });
    const waiting = await call('POST', '/create_task', { body: { type: 'python', file: python } });
    const early = (await call('GET', `/get_status?id=${waiting.json.id}`)).json;
    expect(['WAIT', 'RUNNING', 'SUCCESS']).toContain(early.status);
    expect((await call('GET', '/get_task_count')).json).toEqual({ tasks: expect.any(Number) });
    expect((await call('GET', '/get_task_count')).json.tasks).toBeGreaterThanOrEqual(1);
    await call('POST', '/tasks/counted/cancel');

    // Every character an id may hold (. _ : -) stands in a path as it is.
    expect((await call('POST', '/tasks', { body: { id: 'ns:job_1.a-b', cmd: 'true' } })).headers.location).toBe('/tasks/ns:job_1.a-b');

    const bad = await call('POST', '/create_task', { body: { type: 'ruby', file: python } });
    expect(bad).toMatchObject({ status: 400, json: { error: { code: 'BAD_REQUEST', message: expect.stringContaining('type') } } });
    const unclosed = await call('POST', '/create_task', { body: { type: 'python', file: python, args: "it's" } });
    expect(unclosed.json.error.message).toMatch(/args: the single quote at character 3 is not closed/);
    expect((await call('GET', '/get_status')).json.error.message).toMatch(/id is required/);
  });
});

describe('who may call over HTTP', () => {
  let daemon: TestDaemon;
  const token = randomBytes(24).toString('base64url');
  const bearer = { Authorization: `Bearer ${token}` };
  beforeAll(async () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, token);
    chmodSync(tokenFile, 0o600);
    daemon = await startDaemon(['--token-file', tokenFile, '--concurrency', '1']);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });
  const call = (method: string, path: string, options?: Parameters<typeof http>[3]) => http(daemon.port, method, path, options);

  /** A task that would leave a file behind; the test checks it never ran. */
  function marker(name: string) {
    const file = join(dir, `marker-${name}`);
    return { file, spec: { cmd: `touch ${file}` } };
  }
  async function expectNeverRan(file: string) {
    const client = await TaskManagerClient.connect({ port: daemon.port, token });
    expect(await tasksAfterARun(client)).not.toContain(file);
    expect(existsSync(file)).toBe(false);
  }

  it('refuses a request without the token, or with a wrong one, with 401', async () => {
    const { file, spec } = marker('no-token');
    const refused = await call('POST', '/tasks', { body: spec });
    expect(refused).toMatchObject({ status: 401, json: { ok: false, error: { code: 'UNAUTHORIZED', message: expect.stringContaining('Authorization: Bearer') } } });
    expect(refused.headers['www-authenticate']).toMatch(/^Bearer/);
    expect((await call('POST', '/tasks', { body: spec, headers: { Authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await call('GET', '/tasks')).status).toBe(401);
    await expectNeverRan(file);
    expect((await call('POST', '/tasks', { body: { cmd: 'true' }, headers: bearer })).status).toBe(201);
  });

  it('leaves /health and the dashboard page open, the page asking for the token itself', async () => {
    expect((await call('GET', '/health')).status).toBe(200);
    const page = await call('GET', '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(page.text).toContain('id="login"');
  });

  it('logs the dashboard in with an HttpOnly, SameSite=Strict cookie that stands for the token', async () => {
    expect((await call('POST', '/login', { body: { token: 'wrong' } })).status).toBe(401);
    const login = await call('POST', '/login', { body: { token } });
    expect(login.status).toBe(200);
    const cookie = String(login.headers['set-cookie']);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(token);
    const session = cookie.split(';')[0]!;
    expect((await call('GET', '/count', { headers: { Cookie: session } })).status).toBe(200);
    expect((await call('GET', '/count', { headers: { Cookie: 'task_manager_session=forged' } })).status).toBe(401);
  });

  it('refuses a Host of another name (DNS rebinding) and a change from another Origin with 403, and runs nothing', async () => {
    const rebinding = marker('rebinding');
    const host = await call('POST', '/tasks', { body: rebinding.spec, headers: { ...bearer, Host: 'attacker.example:3000' } });
    expect(host).toMatchObject({ status: 403, json: { error: { code: 'FORBIDDEN', message: expect.stringContaining('attacker.example') } } });
    const crossSite = marker('cross-site');
    const origin = await call('POST', '/tasks', { body: crossSite.spec, headers: { ...bearer, Origin: 'http://attacker.example' } });
    expect(origin).toMatchObject({ status: 403, json: { error: { code: 'FORBIDDEN', message: expect.stringContaining('Origin') } } });
    // A page's own origin is no other site.
    const own = await call('POST', '/tasks', { body: { cmd: 'true' }, headers: { ...bearer, Origin: `http://127.0.0.1:${daemon.port}`, Host: `127.0.0.1:${daemon.port}` } });
    expect(own.status).toBe(201);
    // Only the very origin the request was sent to: another server may listen on [::1] or localhost at the same port.
    const otherName = await call('POST', '/tasks', { body: { cmd: 'true' }, headers: { ...bearer, Origin: `http://[::1]:${daemon.port}`, Host: `127.0.0.1:${daemon.port}` } });
    expect(otherName.status).toBe(403);
    expect((await call('GET', '/health', { headers: { Host: `localhost:${daemon.port}` } })).status).toBe(200);
    await expectNeverRan(rebinding.file);
    await expectNeverRan(crossSite.file);
  });

  it('refuses a body that is not JSON with 415, so that no cross-site form can post a task', async () => {
    const form = marker('form');
    const answer = await call('POST', '/tasks', { body: `cmd=${encodeURIComponent(form.spec.cmd)}`, headers: { ...bearer, 'Content-Type': 'application/x-www-form-urlencoded' } });
    expect(answer).toMatchObject({ status: 415, json: { error: { code: 'UNSUPPORTED_MEDIA_TYPE' } } });
    await expectNeverRan(form.file);
  });

  it('sends no CORS headers', async () => {
    const answer = await call('GET', '/health', { headers: { Origin: 'http://attacker.example' } });
    expect(Object.keys(answer.headers).filter((name) => name.startsWith('access-control-'))).toEqual([]);
  });
});

describe('--allow-origin', () => {
  const site = 'http://app.example:8080';
  let daemon: TestDaemon;
  beforeAll(async () => {
    daemon = await startDaemon(['--allow-origin', `${site},HTTPS://Other.Example:443`]);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });
  const call = (method: string, path: string, options?: Parameters<typeof http>[3]) => http(daemon.port, method, path, options);
  const corsHeaders = (answer: { headers: Record<string, unknown> }) => Object.keys(answer.headers).filter((name) => name.startsWith('access-control-'));

  it("answers a named site's preflight, and lets its pages submit with CORS headers on the answer", async () => {
    const preflight = await call('OPTIONS', '/tasks', { headers: { Origin: site, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers).toMatchObject({
      'access-control-allow-origin': site,
      'access-control-allow-methods': expect.stringContaining('POST'),
      'access-control-allow-headers': expect.stringMatching(/Content-Type/i),
      vary: 'Origin',
    });
    const submitted = await call('POST', '/tasks', { body: { cmd: 'true' }, headers: { Origin: site } });
    expect(submitted.status).toBe(201);
    expect(submitted.headers['access-control-allow-origin']).toBe(site);
    expect(submitted.headers['access-control-expose-headers']).toContain('Location');
    // Named as the operator wrote it, matched as a browser sends it: lower case, the default port left out.
    const other = await call('OPTIONS', '/tasks', { headers: { Origin: 'https://other.example', 'Access-Control-Request-Method': 'DELETE' } });
    expect(other.status).toBe(204);
    expect(other.headers['access-control-allow-origin']).toBe('https://other.example');
    const events = new EventStreamReader(daemon.port, '/events', { Origin: site });
    await eventually(() => events.status === 200);
    expect(events.headers['access-control-allow-origin']).toBe(site);
    events.stop();
  });

  it('warns at start that, without a token, the scripts of those sites can run commands', () => {
    expect(daemon.stderr()).toContain('--allow-origin without --token-file: scripts of http://app.example:8080, https://other.example can run commands');
  });

  it('still refuses every other site, and gives it no CORS headers', async () => {
    const refused = await call('POST', '/tasks', { body: { cmd: 'true' }, headers: { Origin: 'http://evil.example' } });
    expect(refused.status).toBe(403);
    expect(corsHeaders(refused)).toEqual([]);
    const preflight = await call('OPTIONS', '/tasks', { headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' } });
    expect(corsHeaders(preflight)).toEqual([]);
    expect(preflight.status).toBe(405);
  });

  it('refuses "*" and what is not an origin, naming the flag, with exit code 2', async () => {
    for (const [value, said] of [['*', /not taken/], ['http://app.example/path', /not an origin/], ['app.example', /not an origin/]] as const) {
      const result = await execa(process.execPath, [TASK_MANAGER, 'serve', '--port', '0', '--data-dir', dir, '--allow-origin', value], { reject: false, timeout: 20_000 });
      expect({ value, exitCode: result.exitCode, timedOut: result.timedOut }).toEqual({ value, exitCode: 2, timedOut: false });
      expect(result.stderr).toContain('--allow-origin');
      expect(result.stderr).toMatch(said);
    }
  });
});

describe('shellWords', () => {
  it.each([
    ['a b  c', ['a', 'b', 'c']],
    [`'two words' "and \\"more\\"" plain`, ['two words', 'and "more"', 'plain']],
    [`a\\ b 'it''s' "x"y`, ['a b', 'its', 'xy']],
    [`"$HOME" '$HOME' \\$HOME`, ['$HOME', '$HOME', '$HOME']],
    [`"a\\\\b" "a\\nb" ''`, ['a\\b', 'a\\nb', '']],
    ['', []],
  ])('splits %j as a shell would, expanding nothing', (line, words) => {
    expect(shellWords(line)).toEqual(words);
  });

  it('names an unclosed quote', () => {
    expect(() => shellWords(`a "b`)).toThrow('the double quote at character 3 is not closed');
    expect(() => shellWords(`a 'b`)).toThrow('the single quote at character 3 is not closed');
  });
});
