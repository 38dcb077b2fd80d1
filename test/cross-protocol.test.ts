import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { looksLikeHttp } from '../src/daemon/http-guard.js';
import { TaskManagerClient } from '../src/index.js';
import { CMD, eventually, startDaemon, tasksAfterARun, tempDir, within, type TestDaemon } from './helpers.js';

/**
 * A web page can make the user's browser POST to 127.0.0.1:3000 with a body of
 * its choosing. HTTP on this port refuses it (another Origin, not JSON), and
 * the line protocol never reads a line that follows HTTP: these tests send
 * what a browser would, and prove that the task in the body never ran.
 */

const dir = tempDir('tm-cross-');
let markers = 0;

/** A task line that would create a new file when run; the file's path, to check it never appears. */
function markerTask(): { line: string; marker: string } {
  const marker = join(dir, `marker-${++markers}`);
  return { line: `${JSON.stringify({ cmd: [CMD, '--record', marker] })}\n`, marker };
}

/** A plain socket that keeps everything the daemon sends, as text. */
class Peer {
  received = '';
  readonly closed: Promise<void>;
  private readonly listeners: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('error', () => undefined); // the daemon may end the connection while this one still writes
    socket.on('data', (chunk: string) => {
      this.received += chunk;
      this.listeners.forEach((listener) => {
        listener();
      });
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  static open(port: number): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host: '127.0.0.1' }, () => resolve(new Peer(socket)));
      socket.once('error', reject);
    });
  }

  /** Resolves once the daemon has sent `text`. */
  sent(text: string): Promise<void> {
    return new Promise((resolve) => {
      const check = () => this.received.includes(text) && resolve();
      this.listeners.push(check);
      check();
    });
  }

  /** Sends the bytes and resolves with all the daemon sent once it has closed the connection. */
  async exchange(bytes: string): Promise<string> {
    this.socket.write(bytes);
    await within(this.closed, 10_000, 'the daemon closing the connection');
    return this.received;
  }
}

interface HttpOutcome {
  status?: number | undefined;
  body?: string;
  error?: string;
}

/** A POST as a page's `fetch(url, {method: 'POST', mode: 'no-cors', body})` sends it. */
function browserPost(port: number, body: string): Promise<HttpOutcome> {
  return new Promise((resolve) => {
    const headers = { 'Content-Type': 'text/plain;charset=UTF-8', Origin: 'http://evil.example', 'Sec-Fetch-Mode': 'no-cors' };
    const post = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers, agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode, body: text }));
      response.on('error', (error) => resolve({ status: response.statusCode, error: error.message }));
    });
    post.on('error', (error) => resolve({ error: error.message }));
    post.end(body);
  });
}

const httpRequest = (port: number, body: string) =>
  `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe('looksLikeHttp', () => {
  it.each([
    ['POST / HTTP/1.1', 'request-line'],
    ['GET /tasks?state=RUNNING HTTP/1.0', 'request-line'],
    ['OPTIONS * HTTP/1.1', 'request-line'],
    ['PRI * HTTP/2.0', 'request-line'],
    ['Host: 127.0.0.1:3000', 'header'],
    ['host:127.0.0.1', 'header'],
    ['HOST: x', 'header'],
  ])('takes %j for HTTP (%s)', (line, kind) => {
    expect(looksLikeHttp(Buffer.from(line))).toBe(kind);
  });

  it.each([
    '{"op":"health"}',
    ' {"op":"health"}',
    '{"cmd":"curl -H \'Host: x\' http://example.com/ HTTP/1.1"}',
    'true',
    '123',
    '-1',
    '"Host: x"',
    'GET /',
    'hello there',
    ' Host: x',
    'Content-Type: text/plain',
    'Note: this is not json',
    'op: health',
    '',
  ])('leaves %j to the line protocol', (line) => {
    expect(looksLikeHttp(Buffer.from(line))).toBeUndefined();
  });

  it('is never true of a line that is valid JSON', () => {
    for (const text of ['{"Host": "x"}', '["POST / HTTP/1.1"]', 'null', '1e5', '"a:b"']) {
      JSON.parse(text);
      expect(looksLikeHttp(Buffer.from(text)), text).toBeUndefined();
    }
  });
});

describe('HTTP sent to the line protocol port (no token, as on loopback by default)', () => {
  let daemon: TestDaemon;
  beforeAll(async () => {
    // One task at a time: a later task that has finished proves that an earlier one would have run.
    daemon = await startDaemon(['--concurrency', '1']);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  /** With one task at a time, a task that would have been registered before has also run by then. */
  async function expectNeverRan(marker: string): Promise<void> {
    expect(await tasksAfterARun(await daemon.client())).not.toContain(marker);
    expect(existsSync(marker), `${marker} was created: the task in the HTTP body ran`).toBe(false);
  }

  it('refuses a browser-style POST from another site (text/plain, a task as its body) with 403, and runs nothing', async () => {
    const { line, marker } = markerTask();
    const outcome = await within(browserPost(daemon.port, line), 10_000, 'the HTTP answer');
    expect(outcome).toMatchObject({ status: 403 });
    expect(JSON.parse(outcome.body!)).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    await expectNeverRan(marker);
  });

  it('reads no line after an HTTP request as the line protocol, even in the same write: only HTTP answers come back', async () => {
    const { line, marker } = markerTask();
    const peer = await Peer.open(daemon.port);
    const received = await peer.exchange(`${httpRequest(daemon.port, line)}{"op":"health","ref":"after"}\n`);
    // The text/plain body is refused (415), and the JSON line after it is no HTTP request (400, once the 415
    // is out, though the HTTP parser reads both at once; then the connection ends).
    expect(received.match(/^HTTP\/1\.1 \d+/gm), received).toEqual(['HTTP/1.1 415', 'HTTP/1.1 400']);
    expect(received).not.toContain('"ok":true');
    await expectNeverRan(marker);
  });

  it('closes, without answering, a connection whose header lines follow a JSON-looking first line', async () => {
    const { line, marker } = markerTask();
    const peer = await Peer.open(daemon.port);
    const received = await peer.exchange(`{"op":"health","ref":"first"}\nHost: 127.0.0.1:${daemon.port}\r\nContent-Type: text/plain\r\n\r\n${line}`);
    expect(received).not.toContain('HTTP/');
    // The first line may have been answered before the close; no other line is.
    for (const answer of received.split('\n').filter((text) => text !== '')) expect(JSON.parse(answer)).toMatchObject({ ref: 'first' });
    await expectNeverRan(marker);
  });

  it('serves requests until a Host: line comes, then closes the connection and runs nothing after it', async () => {
    const { line, marker } = markerTask();
    const peer = await Peer.open(daemon.port);
    peer.socket.write('{"op":"health","ref":"before"}\n');
    await within(peer.sent('"ref":"before"'), 10_000, 'the health answer');
    const received = await peer.exchange(`Host: 127.0.0.1\n${line}{"op":"health","ref":"after"}\n`);
    expect(received.split('\n').filter((text) => text !== '')).toHaveLength(1);
    await expectNeverRan(marker);
  });

  it('answers a line that only looks like a header (Note: ...) with BAD_JSON, and the connection goes on', async () => {
    const peer = await Peer.open(daemon.port);
    peer.socket.write('Note: this is not json\n{"op":"health","ref":"after"}\n');
    await within(peer.sent('"ref":"after"'), 10_000, 'the health answer after the note');
    const [note, after] = peer.received.split('\n').map((text) => (text === '' ? undefined : JSON.parse(text)));
    expect(note).toMatchObject({ ok: false, error: { code: 'BAD_JSON' } });
    expect(after).toMatchObject({ ok: true, ref: 'after' });
    peer.socket.destroy();
  });

  it("logs one line naming the peer's address and port when a line-protocol connection sends HTTP", async () => {
    const peer = await Peer.open(daemon.port);
    const port = peer.socket.localPort;
    await peer.exchange('{"op":"health"}\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const line = await eventually(() => daemon.stderr().split('\n').find((text) => text.includes(`127.0.0.1:${port}`)));
    expect(line).toMatch(/HTTP request line/);
    expect(daemon.stderr().split('\n').filter((text) => text.includes(`127.0.0.1:${port}`))).toHaveLength(1);
  });

  it('still serves an nc-style session: \\r\\n endings, several lines in one write, a half-close', async () => {
    const peer = await Peer.open(daemon.port);
    peer.socket.end(`{"op":"health","ref":1}\r\n${JSON.stringify({ op: 'run', ref: 2, cmd: [CMD, '--stdout', 'hi'] })}\n\n{"op":"count","ref":3}\n`);
    await within(peer.closed, 20_000, 'the answers and the end of the connection');
    const answers = peer.received.split('\n').filter((text) => text !== '').map((text) => JSON.parse(text));
    expect(answers.map((answer) => answer.ref).sort()).toEqual([1, 2, 3]);
    expect(answers.find((answer) => answer.ref === 2)).toMatchObject({ ok: true, task: { state: 'COMPLETED', stdout: 'hi' } });
  });
});

describe('HTTP sent to a daemon with a token', () => {
  it('refuses it too, before any authentication, and runs nothing', async () => {
    const tokenFile = join(dir, 'token');
    const token = randomBytes(24).toString('base64url');
    writeFileSync(tokenFile, token);
    chmodSync(tokenFile, 0o600);
    const daemon = await startDaemon(['--token-file', tokenFile]);
    try {
      const { line, marker } = markerTask();
      const outcome = await within(browserPost(daemon.port, `${JSON.stringify({ op: 'auth', token })}\n${line}`), 10_000, 'the HTTP answer');
      expect(outcome).toMatchObject({ status: 403 });
      expect(await tasksAfterARun(await TaskManagerClient.connect({ port: daemon.port, token }))).not.toContain(marker);
      expect(existsSync(marker)).toBe(false);
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
  });
});
