import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Answer, OutputText, PIECE_BYTES, RecordList } from '../src/daemon/answer.js';
import { removeDir, tempDir } from './helpers.js';

const dir = tempDir('tm-answer-');
afterAll(() => removeDir(dir));

let files = 0;
/** An OutputText over a file holding `bytes`, and a count of its releases. */
function text(bytes: Buffer | string, limit = 1 << 30, kept?: number) {
  const path = join(dir, `out-${files++}`);
  writeFileSync(path, bytes);
  const held = { released: 0 };
  return { value: new OutputText(path, kept, limit, () => held.released++), held };
}

async function written(answer: Answer): Promise<{ line: string; pieces: string[] }> {
  const pieces: string[] = [];
  for await (const piece of answer.pieces()) pieces.push(piece);
  return { line: pieces.join(''), pieces };
}

describe('Answer', () => {
  it('writes output read from files into the JSON line, escaped, exactly as JSON.stringify would', async () => {
    const tricky = 'quote " backslash \\ tab \t nul \u0000 bell \u0007 newline \n é € 😀 \u2028 end';
    const out = text(tricky);
    const err = text('');
    const message = { ok: true, op: 'status', task: { id: 'a', stdout: out.value, stderr: err.value, exit_code: 0 } };
    const { line } = await written(new Answer(message));
    expect(line.endsWith('\n')).toBe(true);
    expect(line).toBe(`${JSON.stringify({ ok: true, op: 'status', task: { id: 'a', stdout: tricky, stderr: '', exit_code: 0 } })}\n`);
  });

  it('keeps characters whole across pieces, turns invalid UTF-8 into U+FFFD, and stops at the bytes kept', async () => {
    const wide = '€'.repeat(PIECE_BYTES); // 3 bytes each: pieces end inside characters
    const { line } = await written(new Answer({ a: text(wide).value }));
    expect(JSON.parse(line).a === wide).toBe(true);
    const invalid = Buffer.from([0x61, 0xff, 0x62, 0xe2, 0x82]); // a, a stray byte, b, a cut-off €
    expect(JSON.parse((await written(new Answer({ a: text(invalid).value }))).line).a).toBe('a\ufffdb\ufffd');
    expect(JSON.parse((await written(new Answer({ a: text('abcdef', 1 << 30, 3).value }))).line).a).toBe('abc');
    expect(JSON.parse((await written(new Answer({ a: text('abcdef', 4).value }))).line).a).toBe('abcd');
  });

  it('reads a missing file as empty output', async () => {
    const missing = new OutputText(join(dir, 'never-written'), undefined, 100, () => undefined);
    expect(JSON.parse((await written(new Answer({ a: missing }))).line)).toEqual({ a: '' });
  });

  it('is not fooled by client text that looks like its marks, and hands out pieces of at most PIECE_BYTES', async () => {
    const lookalike = '\u00000:\u0000 and \\u0000 and "\u0000';
    const big = 'x'.repeat(3 * PIECE_BYTES + 5);
    const { line, pieces } = await written(new Answer({ cmd: lookalike, stdout: text(big).value, big }));
    expect(JSON.parse(line)).toEqual({ cmd: lookalike, stdout: big, big });
    expect(Math.max(...pieces.map((piece) => piece.length))).toBeLessThanOrEqual(PIECE_BYTES + 2);
  });

  it('never cuts a piece of the line between the two halves of a character (each piece is encoded alone)', async () => {
    const cmd = `${'x'.repeat(PIECE_BYTES - 9)}${'😀'.repeat(10)}`;
    const { pieces } = await written(new Answer({ cmd }));
    expect(JSON.parse(Buffer.concat(pieces.map((piece) => Buffer.from(piece))).toString('utf8'))).toEqual({ cmd });
  });

  it('releases every output it holds, written or not', async () => {
    const a = text('one');
    const b = text('two');
    const answer = new Answer({ a: a.value, b: b.value });
    answer.release();
    expect([a.held.released, b.held.released]).toEqual([1, 1]);
  });

  it('writes a long list of records in batches that together are the JSON array', async () => {
    const records = Array.from({ length: 1001 }, (_, i) => ({ id: `t${i}`, state: 'QUEUED' }));
    const { line, pieces } = await written(new Answer({ ok: true, tasks: new RecordList(records), total: 1001 }));
    expect(JSON.parse(line)).toEqual({ ok: true, tasks: records, total: 1001 });
    expect(pieces.length).toBeGreaterThan(5);
    expect(JSON.parse((await written(new Answer({ tasks: new RecordList([]) }))).line)).toEqual({ tasks: [] });
  });

  it('is one whole line when nothing in it is read from a file, and a Streamed value is serialized by an Answer only', () => {
    const message = { ok: true, op: 'status', task: { id: 'a', stdout: '', stderr: '', exit_code: 0 } };
    expect(new Answer(message).whole()).toBe(`${JSON.stringify(message)}\n`);
    expect(new Answer({ a: text('x').value }).whole()).toBeUndefined();
    // Outside an Answer there is no place to put its text: an error, not a silent "{}" or a mark.
    expect(() => JSON.stringify({ a: text('x').value })).toThrow('serialized only by an Answer');
  });
});
