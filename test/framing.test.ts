import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LineFramer, decodeLine, type Frame } from '../src/protocol/framing.js';
import { type RawConnection, startDaemon, type TestDaemon } from './helpers.js';

const lines = (frames: Frame[]) => frames.map((frame) => (frame.kind === 'line' ? frame.line.toString('utf8') : `<too_long>`));

/** Feeds the chunks one after another and collects every frame, then the frames of end() if asked. */
function feed(framer: LineFramer, chunks: (string | Buffer)[], end = false): Frame[] {
  const frames: Frame[] = [];
  for (const chunk of chunks) frames.push(...framer.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
  if (end) frames.push(...framer.end());
  return frames;
}

describe('LineFramer', () => {
  it('returns a complete line without its newline', () => {
    expect(lines(feed(new LineFramer(1024), ['{"op":"health"}\n']))).toEqual(['{"op":"health"}']);
  });

  it('holds a line without newline until its newline arrives', () => {
    const framer = new LineFramer(1024);
    expect(framer.push(Buffer.from('{"op":'))).toEqual([]);
    expect(framer.push(Buffer.from('"health"}'))).toEqual([]);
    expect(lines(framer.push(Buffer.from('\n')))).toEqual(['{"op":"health"}']);
  });

  it('reassembles a line that arrives one byte at a time', () => {
    const framer = new LineFramer(1024);
    const text = '{"op":"health","ref":"byte-by-byte"}\n';
    const frames: Frame[] = [];
    for (const byte of Buffer.from(text)) {
      const got = framer.push(Buffer.from([byte]));
      if (byte !== 0x0a) expect(got).toEqual([]);
      frames.push(...got);
    }
    expect(lines(frames)).toEqual(['{"op":"health","ref":"byte-by-byte"}']);
  });

  it('reassembles a multi-byte UTF-8 character split between chunks', () => {
    const bytes = Buffer.from('{"a":"é€😀"}\n');
    const framer = new LineFramer(1024);
    const frames: Frame[] = [];
    for (let i = 0; i < bytes.length; i++) frames.push(...framer.push(bytes.subarray(i, i + 1)));
    expect(frames).toHaveLength(1);
    expect(decodeLine((frames[0] as { line: Buffer }).line)).toEqual({ ok: true, value: { a: 'é€😀' } });
  });

  it('splits one chunk holding many lines, in order, keeping a trailing partial line for later', () => {
    const framer = new LineFramer(1024);
    expect(lines(framer.push(Buffer.from('a\nbb\nccc\ndd')))).toEqual(['a', 'bb', 'ccc']);
    expect(lines(framer.push(Buffer.from('d\n')))).toEqual(['ddd']);
  });

  it('removes a \\r before the \\n, also when the \\r and \\n arrive in different chunks', () => {
    expect(lines(feed(new LineFramer(1024), ['one\r\ntwo\r\n']))).toEqual(['one', 'two']);
    expect(lines(feed(new LineFramer(1024), ['three\r', '\n']))).toEqual(['three']);
  });

  it('keeps a \\r that is not right before the \\n', () => {
    expect(lines(feed(new LineFramer(1024), ['a\rb\n']))).toEqual(['a\rb']);
  });

  it('drops empty and whitespace-only lines', () => {
    expect(lines(feed(new LineFramer(1024), ['\n\n   \n\t\n\r\n \t \r\n', 'x\n', '\n']))).toEqual(['x']);
  });

  it('end() returns a last line that had no newline, once', () => {
    const framer = new LineFramer(1024);
    expect(lines(feed(framer, ['first\nlast']))).toEqual(['first']);
    expect(lines(framer.end())).toEqual(['last']);
    expect(framer.end()).toEqual([]);
  });

  it('end() with nothing pending, or only whitespace pending, returns nothing', () => {
    expect(new LineFramer(1024).end()).toEqual([]);
    expect(feed(new LineFramer(1024), ['a\n', '   '], true).filter((f) => f.kind === 'line')).toHaveLength(1);
  });

  it('accepts a line of exactly maxLineBytes, also followed by \\r\\n', () => {
    const exact = 'x'.repeat(1024);
    expect(lines(feed(new LineFramer(1024), [`${exact}\n`]))).toEqual([exact]);
    expect(lines(feed(new LineFramer(1024), [`${exact}\r\n`]))).toEqual([exact]);
    expect(lines(feed(new LineFramer(1024), [exact], true))).toEqual([exact]);
  });

  it('reports a line of maxLineBytes + 1 as too long', () => {
    expect(feed(new LineFramer(1024), [`${'x'.repeat(1025)}\n`])).toEqual([{ kind: 'too_long', bytes: 1025 }]);
    expect(feed(new LineFramer(1024), ['x'.repeat(1025)], true)).toEqual([{ kind: 'too_long', bytes: 1025 }]);
  });

  it('reports a too-long line once, as soon as it passes the limit, before its newline arrives', () => {
    const framer = new LineFramer(1024);
    const early = framer.push(Buffer.alloc(1500, 'x'));
    expect(early).toHaveLength(1);
    expect(early[0]!.kind).toBe('too_long');
    // the rest of the long line, in many chunks: nothing more is reported
    for (let i = 0; i < 100; i++) expect(framer.push(Buffer.alloc(1000, 'y'))).toEqual([]);
    expect(lines(framer.push(Buffer.from('zzz\nnext\n')))).toEqual(['next']);
  });

  it('reports a too-long line once when it arrives in one chunk with the lines around it', () => {
    const frames = feed(new LineFramer(1024), [`before\n${'x'.repeat(5000)}\nafter\n`]);
    expect(lines(frames)).toEqual(['before', '<too_long>', 'after']);
  });

  it('reports each of two consecutive too-long lines', () => {
    const frames = feed(new LineFramer(1024), [`${'x'.repeat(2000)}\n${'y'.repeat(2000)}\nok\n`]);
    expect(lines(frames)).toEqual(['<too_long>', '<too_long>', 'ok']);
  });

  it('does not report the skipped tail of a too-long line at end()', () => {
    const framer = new LineFramer(1024);
    expect(framer.push(Buffer.alloc(3000, 'x'))).toHaveLength(1);
    expect(framer.end()).toEqual([]);
  });
});

describe('decodeLine', () => {
  it('decodes a JSON object', () => {
    expect(decodeLine(Buffer.from('{"op":"health","ref":1}'))).toEqual({ ok: true, value: { op: 'health', ref: 1 } });
  });

  it('decodes any JSON value (the request check comes later)', () => {
    expect(decodeLine(Buffer.from('[1,2]'))).toEqual({ ok: true, value: [1, 2] });
    expect(decodeLine(Buffer.from('null'))).toEqual({ ok: true, value: null });
  });

  it('decodes UTF-8 text', () => {
    expect(decodeLine(Buffer.from('{"s":"ü€😀"}'))).toEqual({ ok: true, value: { s: 'ü€😀' } });
  });

  it.each([
    ['a lone 0xff byte', Buffer.from([0x7b, 0x22, 0x73, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
    ['a truncated 2-byte sequence', Buffer.concat([Buffer.from('{"s":"'), Buffer.from([0xc3]), Buffer.from('"}')])],
    ['an overlong encoding of "/"', Buffer.concat([Buffer.from('{"s":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
    ['an encoded UTF-16 surrogate', Buffer.concat([Buffer.from('{"s":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
  ])('rejects invalid UTF-8: %s', (_name, bytes) => {
    const decoded = decodeLine(bytes);
    expect(decoded.ok).toBe(false);
    expect(!decoded.ok && decoded.message).toMatch(/UTF-8/);
  });

  it.each(['hello', '{"op":"health",}', "{'op':'health'}", '{"op":"health"', '{"op":"health"}}', 'undefined'])(
    'rejects text that is not JSON: %s',
    (text) => {
      const decoded = decodeLine(Buffer.from(text));
      expect(decoded.ok).toBe(false);
      expect(!decoded.ok && decoded.message).toMatch(/JSON/);
    },
  );
});

describe('framing over a real socket', () => {
  const MAX = 2048;
  let daemon: TestDaemon;
  let raw: RawConnection;

  beforeAll(async () => {
    daemon = await startDaemon(['--max-line-bytes', String(MAX)]);
  });
  afterAll(async () => {
    expect(await daemon.stop()).toBe(0);
  });

  const open = async () => {
    raw = await daemon.raw();
    raw.socket.setNoDelay(true);
    return raw;
  };

  /** A valid request must be answered right after whatever went before on this connection. */
  async function stillAnswers(conn: RawConnection, ref: string) {
    conn.send(`{"op":"health","ref":"${ref}"}\n`);
    const response = await conn.next();
    expect(response).toMatchObject({ ok: true, op: 'health', ref });
  }

  const write = (conn: RawConnection, data: string | Buffer) =>
    new Promise<void>((resolve, reject) => conn.socket.write(data, (error) => (error ? reject(error) : resolve())));

  it('answers a request sent one byte at a time', async () => {
    const conn = await open();
    for (const byte of Buffer.from('{"op":"health","ref":"bytes"}\n')) {
      await write(conn, Buffer.from([byte]));
      // let each byte leave as its own segment
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(await conn.next()).toMatchObject({ ok: true, op: 'health', ref: 'bytes' });
    await stillAnswers(conn, 'after-bytes');
    conn.close();
  });

  it('answers every request of a chunk holding many lines', async () => {
    const conn = await open();
    const refs = Array.from({ length: 25 }, (_, i) => `many-${i}`);
    conn.send(refs.map((ref) => `{"op":"health","ref":"${ref}"}\n`).join(''));
    const responses = await conn.take(refs.length);
    expect(responses.every((r) => r.ok === true && r.op === 'health')).toBe(true);
    expect(responses.map((r) => r.ref).sort()).toEqual([...refs].sort());
    await stillAnswers(conn, 'after-many');
    conn.close();
  });

  it('answers requests split across chunks at arbitrary places', async () => {
    const conn = await open();
    const text = '{"op":"health","ref":"s1"}\n{"op":"health","ref":"s2"}\n{"op":"health","ref":"s3"}\n';
    for (const piece of [text.slice(0, 5), text.slice(5, 30), text.slice(30, 31), text.slice(31, 60), text.slice(60)]) {
      await write(conn, piece);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const responses = await conn.take(3);
    expect(responses.map((r) => r.ref).sort()).toEqual(['s1', 's2', 's3']);
    conn.close();
  });

  it('accepts \\r\\n line endings (telnet)', async () => {
    const conn = await open();
    conn.send('{"op":"health","ref":"crlf-1"}\r\n{"op":"health","ref":"crlf-2"}\r\n');
    const responses = await conn.take(2);
    expect(responses.map((r) => r.ok)).toEqual([true, true]);
    expect(responses.map((r) => r.ref).sort()).toEqual(['crlf-1', 'crlf-2']);
    conn.close();
  });

  it('runs a command sent with \\r\\n without the \\r leaking into it', async () => {
    const conn = await open();
    conn.send('{"cmd":"printf %s done","ref":"crlf-run"}\r\n');
    const response = await conn.next();
    expect(response).toMatchObject({ ok: true, ref: 'crlf-run', task: { state: 'COMPLETED', stdout: 'done' } });
    conn.close();
  });

  it('ignores empty and whitespace-only lines (no answer to them)', async () => {
    const conn = await open();
    conn.send('\n\n   \n\t\n\r\n \t \r\n');
    conn.send('{"op":"health","ref":"after-blank"}\n');
    // were any blank line answered, that answer would come first (or at least before the next one)
    expect(await conn.next()).toMatchObject({ ok: true, ref: 'after-blank' });
    conn.send('\n \n');
    await stillAnswers(conn, 'after-blank-2');
    conn.close();
  });

  it('answers a last line without newline when the client half-closes, then closes', async () => {
    const conn = await open();
    conn.send('{"op":"health","ref":"half-close"}');
    conn.socket.end();
    expect(await conn.next()).toMatchObject({ ok: true, op: 'health', ref: 'half-close' });
    await conn.closed;
  });

  it('answers a slow run and an error on the last line after a half-close, before closing', async () => {
    const conn = await open();
    conn.send('{"cmd":"sleep 0.3; printf %s slept","ref":"half-run"}\n{"op":"nope","ref":"half-bad"}');
    conn.socket.end();
    const responses = await conn.take(2);
    const byRef = Object.fromEntries(responses.map((r) => [r.ref, r]));
    expect(byRef['half-run']).toMatchObject({ ok: true, task: { state: 'COMPLETED', stdout: 'slept' } });
    expect(byRef['half-bad']).toMatchObject({ ok: false, error: { code: 'UNKNOWN_OP' } });
    await conn.closed;
  });

  it('answers a line over --max-line-bytes with LINE_TOO_LONG exactly once, and keeps going', async () => {
    const conn = await open();
    const long = `{"op":"health","ref":"long","pad":"${'x'.repeat(10_000)}"}`;
    conn.send(`${long}\n{"op":"health","ref":"after-long"}\n`);
    const first = await conn.next();
    expect(first.ok).toBe(false);
    expect(first.error.code).toBe('LINE_TOO_LONG');
    expect(typeof first.error.message).toBe('string');
    expect(await conn.next()).toMatchObject({ ok: true, ref: 'after-long' });
    // a second LINE_TOO_LONG for the same line would come before this answer
    await stillAnswers(conn, 'after-long-2');
    conn.close();
  });

  it('answers a long line sent in many chunks with one LINE_TOO_LONG', async () => {
    const conn = await open();
    await write(conn, '{"op":"health","ref":"chunked-long","pad":"');
    for (let i = 0; i < 20; i++) {
      await write(conn, 'y'.repeat(1000));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await write(conn, '"}\n');
    const first = await conn.next();
    expect(first).toMatchObject({ ok: false, error: { code: 'LINE_TOO_LONG' } });
    await stillAnswers(conn, 'after-chunked-long');
    conn.close();
  });

  it('accepts a line of exactly --max-line-bytes and refuses one byte more', async () => {
    const conn = await open();
    const base = '{"op":"health","ref":"exact"}';
    const exact = base + ' '.repeat(MAX - base.length);
    expect(Buffer.byteLength(exact)).toBe(MAX);
    conn.send(`${exact}\n`);
    expect(await conn.next()).toMatchObject({ ok: true, ref: 'exact' });
    conn.send(`${exact} \n`);
    expect(await conn.next()).toMatchObject({ ok: false, error: { code: 'LINE_TOO_LONG' } });
    await stillAnswers(conn, 'after-exact');
    conn.close();
  });

  it('answers invalid UTF-8 with BAD_JSON and keeps going', async () => {
    const conn = await open();
    conn.send(Buffer.concat([Buffer.from('{"op":"health","ref":"bad-utf8","x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]));
    const response = await conn.next();
    expect(response).toMatchObject({ ok: false, error: { code: 'BAD_JSON' } });
    expect(response.error.message).toMatch(/UTF-8/);
    await stillAnswers(conn, 'after-bad-utf8');
    conn.close();
  });

  it.each([
    ['plain text', 'hello'],
    ['a trailing comma', '{"op":"health",}'],
    ['single quotes', "{'op':'health'}"],
    ['an unclosed object', '{"op":"health"'],
    ['two objects on one line', '{"op":"health"}{"op":"health"}'],
  ])('answers %s with BAD_JSON and keeps going', async (_name, line) => {
    const conn = await open();
    conn.send(`${line}\n`);
    const response = await conn.next();
    expect(response.ok).toBe(false);
    expect(response.error.code).toBe('BAD_JSON');
    expect(response.error.message.length).toBeGreaterThan(0);
    await stillAnswers(conn, 'after-bad-json');
    conn.close();
  });

  it('survives a mix of every framing error on one connection', async () => {
    const conn = await open();
    conn.send('nope\n');
    expect((await conn.next()).error.code).toBe('BAD_JSON');
    conn.send(`${'z'.repeat(MAX * 3)}\n`);
    expect((await conn.next()).error.code).toBe('LINE_TOO_LONG');
    conn.send(Buffer.from([0xc3, 0x0a]));
    expect((await conn.next()).error.code).toBe('BAD_JSON');
    conn.send('\r\n\n');
    conn.send('{"cmd":"printf ok","ref":"mixed"}\r\n');
    expect(await conn.next()).toMatchObject({ ok: true, ref: 'mixed', task: { stdout: 'ok' } });
    conn.close();
  });

  it('after a half-close, sends every answer before closing, even large ones the client reads late', async () => {
    const conn = await open();
    conn.socket.pause(); // read nothing yet: the daemon's unsent output piles up
    const runs = Array.from({ length: 6 }, (_, i) => JSON.stringify({ op: 'run', ref: `big-${i}`, cmd: ['sh', '-c', 'head -c 1000000 /dev/zero | tr "\\0" a'] }));
    conn.send(`${runs.join('\n')}\n`);
    conn.socket.end();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    conn.socket.resume();
    const answers = await conn.take(6);
    expect(answers.map((a) => a.ref).sort()).toEqual(runs.map((_, i) => `big-${i}`));
    expect(answers.every((a) => a.ok && a.task.stdout.length === 1_000_000)).toBe(true);
    await conn.closed;
  });
});
