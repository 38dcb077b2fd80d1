import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskManagerError } from '../src/index.js';
import { CMD, type RawConnection, startDaemon, tempDir, type TestDaemon } from './helpers.js';

const MB = 1024 * 1024;
const mb = (bytes: number) => `${(bytes / MB).toFixed(0)} MB`;

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match![1]) * 1024;
}

/** Samples the daemon's resident memory every 50 ms until stopped; `max` is the peak seen. */
function rssSampler(pid: number) {
  const sampler = { baseline: rssBytes(pid), max: 0, stop: () => clearInterval(timer) };
  sampler.max = sampler.baseline;
  const timer = setInterval(() => {
    try {
      sampler.max = Math.max(sampler.max, rssBytes(pid));
    } catch {
      // the daemon has exited: the test's own checks report it
    }
  }, 50);
  return sampler;
}

/** A socket whose reading the test controls, checking each answer line as it comes and keeping none of it. */
class ManualReader {
  private rest = '';
  count = 0;
  private waiting: { n: number; resolve: () => void } | undefined;
  problems: string[] = [];

  constructor(
    readonly socket: Socket,
    private readonly check: (message: Record<string, unknown>) => string | undefined,
  ) {
    socket.on('error', () => undefined);
  }

  static async open(port: number, check: (message: Record<string, unknown>) => string | undefined): Promise<ManualReader> {
    const socket = connect({ port, host: '127.0.0.1' });
    await once(socket, 'connect');
    socket.pause(); // reads nothing until start()
    return new ManualReader(socket, check);
  }

  /** Starts reading; resolves once n answers have been read. */
  readUntil(n: number): Promise<void> {
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => {
      this.rest += chunk;
      for (let newline = this.rest.indexOf('\n'); newline >= 0; newline = this.rest.indexOf('\n')) {
        const line = this.rest.slice(0, newline);
        this.rest = this.rest.slice(newline + 1);
        this.count++;
        const problem = this.check(JSON.parse(line) as Record<string, unknown>);
        if (problem && this.problems.length < 5) this.problems.push(problem);
      }
      if (this.waiting && this.count >= this.waiting.n) this.waiting.resolve();
    });
    this.socket.resume();
    return new Promise((resolve) => (this.waiting = { n, resolve }));
  }
}

/**
 * Runs each of the 1,000 connections sends at once: two are enough to
 * pipeline requests on every connection, and keep the test within its bound
 * while a second copy of the suite loads the machine.
 */
const RUNS_PER_CONNECTION = 2;
/** A task printing exactly one million bytes, cheaply (no Node start-up per task). */
const MILLION_BYTES = ['sh', '-c', 'head -c 1000000 /dev/zero | tr "\\0" x'];

function millionByteAnswer(message: Record<string, unknown>): string | undefined {
  const task = message.task as { state?: string; stdout?: string } | undefined;
  if (message.ok === true && task?.state === 'COMPLETED' && task.stdout?.length === 1_000_000 && /^x+$/.test(task.stdout.slice(0, 100))) {
    return undefined;
  }
  return `unexpected answer: ${JSON.stringify(message).slice(0, 300)}`;
}

describe('limits', () => {
  let daemon: TestDaemon | undefined;
  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  it(`answers ${1_000 * RUNS_PER_CONNECTION} runs from 1,000 connections open at once, ${RUNS_PER_CONNECTION} pipelined on each, each correctly`, async () => {
    daemon = await startDaemon(['--concurrency', '20']);
    const connections: RawConnection[] = [];
    // Opened in batches so that the kernel's listen backlog is not what is measured; all stay open.
    for (let batch = 0; batch < 10; batch++) {
      connections.push(...(await Promise.all(Array.from({ length: 100 }, () => daemon!.raw()))));
    }
    const rss = rssSampler(daemon.process.pid!);
    const started = Date.now();
    const results = await Promise.all(
      connections.map(async (connection, c) => {
        const requests = Array.from({ length: RUNS_PER_CONNECTION }, (_, k) => JSON.stringify({ op: 'run', ref: `${c}-${k}`, cmd: ['echo', `${c}-${k}`] }));
        connection.send(`${requests.join('\n')}\n`);
        return connection.take(RUNS_PER_CONNECTION);
      }),
    );
    const elapsed = Date.now() - started;
    rss.stop();
    const wrong: string[] = [];
    results.forEach((answers, c) => {
      const refs = answers.map((answer) => answer.ref).sort();
      const want = Array.from({ length: RUNS_PER_CONNECTION }, (_, k) => `${c}-${k}`).sort();
      if (JSON.stringify(refs) !== JSON.stringify(want)) wrong.push(`connection ${c}: refs ${refs.join(',')}`);
      for (const answer of answers) {
        if (!(answer.ok === true && answer.task?.state === 'COMPLETED' && answer.task.stdout === `${answer.ref}\n`)) {
          wrong.push(`connection ${c}: ${JSON.stringify(answer).slice(0, 300)}`);
        }
      }
    });
    console.log(`1,000 connections x ${RUNS_PER_CONNECTION} runs: ${(elapsed / 1000).toFixed(1)} s, daemon RSS ${mb(rss.baseline)} -> max ${mb(rss.max)}`);
    expect(wrong.slice(0, 10)).toEqual([]);
    expect(elapsed).toBeLessThan(120_000);
    connections.forEach((connection) => {
      connection.close();
    });
  }, 180_000);

  it('stops reading from a client that does not read its answers, so the requests it sends meanwhile wait', async () => {
    // Few finished tasks kept, so that what is measured is the connection's buffering, not the task records.
    daemon = await startDaemon(['--keep-finished', '30']);
    const rss = rssSampler(daemon.process.pid!);
    const monitor = await daemon.client();
    const slow = await ManualReader.open(daemon.port, millionByteAnswer);
    const runs = (prefix: string, n: number) =>
      Array.from({ length: n }, (_, i) => `${JSON.stringify({ op: 'run', ref: `${prefix}-${i}`, id: `${prefix}-${i}`, cmd: MILLION_BYTES })}\n`).join('');

    // 10 answers of 1 MB each: more than the 1 MiB of unsent output at which the daemon stops reading,
    // even after the kernel's socket buffers have taken their share.
    slow.socket.write(runs('first', 10));
    // The monitor's wait may overtake the other connection's submit: until then it is NOT_FOUND.
    const waitFor = async (id: string) => {
      for (;;) {
        try {
          return await monitor.wait(id);
        } catch (error) {
          if ((error as { code?: string }).code !== 'NOT_FOUND') throw error;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    };
    for (let i = 0; i < 10; i++) expect((await waitFor(`first-${i}`)).task.state).toBe('COMPLETED');

    // 190 more requests: a daemon that still read them would run them all and buffer 190 MB more.
    // The kernel's socket buffers (up to tcp_rmem max + tcp_wmem max, some 36 MB here) may take a
    // share of the answers first, so some of these may run; then the daemon must stop taking any on.
    await new Promise<void>((resolve) => slow.socket.write(runs('then', 190), () => resolve()));
    let reported = 0; // the daemon's own figure, from `stats` on another connection
    let settled = 0;
    let completed = -1;
    for (let look = 0; look < 400 && settled < 10; look++) {
      const { counts, tasks } = await monitor.count();
      settled = tasks === 0 && counts.COMPLETED === completed ? settled + 1 : 0;
      completed = counts.COMPLETED;
      reported = Math.max(reported, (await monitor.stats()).memory.daemon_rss_bytes);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(settled, 'the daemon settled, taking no more requests on').toBe(10);
    expect(completed).toBeGreaterThanOrEqual(10);
    expect(completed, 'runs taken on while the client did not read').toBeLessThan(60);
    await expect(monitor.status('then-189')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const whileUnread = rss.max;

    // Once the client reads, everything is answered, in full.
    const reading = Date.now();
    await slow.readUntil(200);
    rss.stop();
    console.log(
      `unread client: RSS ${mb(rss.baseline)} at start, max ${mb(whileUnread)} while unread (stats: ${mb(reported)}), max ${mb(rss.max)} overall; ` +
        `200 MB of answers read in ${((Date.now() - reading) / 1000).toFixed(1)} s`,
    );
    expect(slow.problems).toEqual([]);
    expect(slow.count).toBe(200);
    // While unread, the daemon held the first answers only. (Once reading resumes it takes the 190 waiting
    // requests on at once, and its peak then depends on how fast the client reads: the next test's case.)
    expect(whileUnread).toBeLessThan(250 * MB);
    expect(reported).toBeLessThan(250 * MB);
    expect((await monitor.health()).version).toBeTypeOf('string');
    slow.socket.destroy();
    await monitor.close();
  }, 120_000);

  it('keeps memory bounded for a client that sends many large-output runs at once and never reads', async () => {
    // 200 runs of 1 MB output sent in one write, which the daemon reads before any output exists.
    // Pausing reading alone cannot help here: the bound has to come from not taking on (or not
    // buffering) more answers than the connection can hold. Unbounded buffering reaches ~500 MB.
    daemon = await startDaemon(['--keep-finished', '10']);
    const rss = rssSampler(daemon.process.pid!);
    const monitor = await daemon.client();
    const greedy = await ManualReader.open(daemon.port, millionByteAnswer);
    const requests = Array.from({ length: 200 }, (_, i) => `${JSON.stringify({ op: 'run', ref: `burst-${i}`, cmd: MILLION_BYTES })}\n`);
    await new Promise<void>((resolve) => greedy.socket.write(requests.join(''), () => resolve()));

    // Until the daemon has nothing left to do for it (or has stopped taking its requests on).
    let idle = 0;
    let busy = false;
    let reported = 0;
    const deadline = Date.now() + 90_000;
    while (idle < 5 && Date.now() < deadline) {
      const { tasks } = await monitor.count();
      reported = Math.max(reported, (await monitor.stats()).memory.daemon_rss_bytes);
      if (tasks > 0) busy = true;
      idle = tasks === 0 && busy ? idle + 1 : 0;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const whileUnread = rss.max;
    await greedy.readUntil(200);
    rss.stop();
    console.log(
      `burst of 200 x 1 MB runs, never read: RSS ${mb(rss.baseline)} at start, max ${mb(whileUnread)} while unread ` +
        `(stats said up to ${mb(reported)}), ${mb(rss.max)} overall`,
    );
    expect(greedy.problems).toEqual([]);
    expect((await monitor.health()).version).toBeTypeOf('string');
    greedy.socket.destroy();
    await monitor.close();
    expect(whileUnread, 'daemon RSS while a client leaves 200 MB of answers unread').toBeLessThan(300 * MB);
    expect(reported, 'daemon_rss_bytes from stats meanwhile').toBeLessThan(300 * MB);
  }, 180_000);

  it('keeps one bound for the whole daemon: 10 clients that never read, each with 20 runs of 1 MB output', async () => {
    // Answers waiting for a reader hold references to the output files, not the text: 200 MB of
    // unread answers across 10 connections cost the daemon next to nothing.
    daemon = await startDaemon([]);
    const rss = rssSampler(daemon.process.pid!);
    const monitor = await daemon.client();
    const readers = await Promise.all(Array.from({ length: 10 }, () => ManualReader.open(daemon!.port, millionByteAnswer)));
    readers.forEach((reader, c) => {
      reader.socket.write(Array.from({ length: 20 }, (_, i) => `${JSON.stringify({ op: 'run', ref: `c${c}-${i}`, cmd: MILLION_BYTES })}\n`).join(''));
    });
    let completed = 0;
    while (completed < 200) {
      completed = (await monitor.count()).counts.COMPLETED;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const whileUnread = rss.max;
    await Promise.all(readers.map((reader) => reader.readUntil(20)));
    rss.stop();
    console.log(`10 clients x 20 runs of 1 MB, unread until all ran: RSS ${mb(rss.baseline)} at start, max ${mb(whileUnread)} while unread, ${mb(rss.max)} overall`);
    for (const reader of readers) {
      expect(reader.problems).toEqual([]);
      reader.socket.destroy();
    }
    await monitor.close();
    expect(whileUnread, 'daemon RSS while 10 clients leave 200 MB of answers unread').toBeLessThan(200 * MB);
  }, 180_000);

  it('refuses a connection beyond --max-connections with one error line, and accepts again once one closes', async () => {
    const dir = tempDir('tm-limits-');
    const record = join(dir, 'sixth-ran');
    daemon = await startDaemon(['--max-connections', '5']);
    const five = await Promise.all(Array.from({ length: 5 }, () => daemon!.raw()));
    for (const [i, connection] of five.entries()) {
      connection.send(`{"op":"health","ref":${i}}\n`);
      expect(await connection.next()).toMatchObject({ ok: true, ref: i });
    }

    const sixth = await daemon.raw();
    sixth.socket.on('error', () => undefined);
    sixth.send(`${JSON.stringify({ op: 'run', cmd: [CMD, '--record', record] })}\n`);
    const refusal = await sixth.next();
    expect(refusal).toMatchObject({ ok: false, error: { code: 'TOO_MANY_CONNECTIONS' } });
    expect(refusal.error.message).toContain('--max-connections');
    await sixth.closed;
    expect(await Promise.race([sixth.next(), Promise.resolve('nothing more')])).toBe('nothing more');

    // The five are unaffected, and what the sixth sent was never run.
    five[1]!.send(`${JSON.stringify({ op: 'run', ref: 'after', cmd: [CMD, '--stdout', 'still here'] })}\n`);
    expect(await five[1]!.next()).toMatchObject({ ok: true, ref: 'after', task: { stdout: 'still here' } });
    expect(existsSync(record)).toBe(false);

    // One closes; a new connection is then accepted (the daemon notices the close asynchronously).
    five[0]!.socket.end();
    await five[0]!.closed;
    let answer: { ok?: boolean; error?: { code: string } } | undefined;
    for (let attempt = 0; attempt < 50 && answer?.ok !== true; attempt++) {
      const fresh = await daemon.raw();
      fresh.socket.on('error', () => undefined);
      fresh.send('{"op":"health","ref":"fresh"}\n');
      answer = await fresh.next();
      if (answer?.ok !== true) {
        expect(answer?.error?.code).toBe('TOO_MANY_CONNECTIONS');
        await fresh.closed;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    expect(answer).toMatchObject({ ok: true, ref: 'fresh', op: 'health' });
    five.forEach((connection) => {
      connection.close();
    });
  }, 60_000);

  it('answers QUEUE_FULL naming --max-queue once that many tasks are unfinished', async () => {
    daemon = await startDaemon(['--max-queue', '3', '--concurrency', '1']);
    const client = await daemon.client();
    const long = { cmd: ['sleep', '60'] };
    const held = [await client.submit(long), await client.submit(long), await client.submit(long)];
    for (const { task } of held) expect(['QUEUED', 'RUNNING']).toContain(task.state);

    const refused = await client.submit(long).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(TaskManagerError);
    expect((refused as TaskManagerError).code).toBe('QUEUE_FULL');
    expect((refused as TaskManagerError).message).toContain('--max-queue');
    // `run` is refused the same way, at once, and nothing was added.
    await expect(client.run(long)).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    expect((await client.count()).tasks).toBe(3);

    // A task that finishes frees its place.
    await client.cancel(held[2]!.task.id);
    const accepted = await client.submit({ cmd: ['true'] });
    expect(accepted.task.state).toMatch(/QUEUED|PENDING/);
    for (const { task } of held.slice(0, 2)) await client.cancel(task.id);
    expect((await client.wait(accepted.task.id)).task.state).toBe('COMPLETED');
    await client.close();
  }, 60_000);

  it('makes room for a spec within --max-spec-bytes by dropping the oldest finished tasks, then answers QUEUE_FULL naming it', async () => {
    daemon = await startDaemon(['--max-spec-bytes', '16000', '--concurrency', '1']);
    const client = await daemon.client();
    const big = { cmd: ['true'], stdin: 'x'.repeat(5000) }; // a spec of about 5,100 characters
    for (const id of ['oldest', 'older']) expect((await client.run({ ...big, id })).task.state).toBe('COMPLETED');
    const running = await client.submit({ cmd: ['sleep', '60'] });
    await client.submit({ ...big, id: 'queued-1' });

    await client.submit({ ...big, id: 'queued-2' }); // over the bound with the finished ones: the oldest goes
    await expect(client.status('oldest')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await client.status('older')).state).toBe('COMPLETED');
    await client.submit({ ...big, id: 'queued-3' });
    await expect(client.status('older')).rejects.toMatchObject({ code: 'NOT_FOUND' });

    // The unfinished ones alone leave no room now: refused, and nothing was added.
    const refused = await client.submit({ ...big, id: 'queued-4' }).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: 'QUEUE_FULL' });
    expect((refused as TaskManagerError).message).toMatch(/the specs of unfinished tasks hold \d+ bytes, and this one \d+ more: that is over 16000, the most this daemon holds \(--max-spec-bytes\)$/);
    await expect(client.run({ ...big, id: 'run-4' })).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    expect((await client.list()).total).toBe(4);
    await client.cancel(running.task.id);
    await client.close();
  }, 60_000);

  it('skips a 200 MB line without keeping it, answers LINE_TOO_LONG once, then serves the next line', async () => {
    daemon = await startDaemon();
    const raw = await daemon.raw();
    const rss = rssSampler(daemon.process.pid!);
    const chunk = Buffer.alloc(64 * 1024, 'x');
    // 200 MB rather than 50: reading alone leaves some 30-45 MB of read buffers for the GC, whatever the
    // size, while keeping the line would grow with it; 200 MB sets the two far apart.
    const total = 200 * MB;
    for (let sent = 0; sent < total; sent += chunk.length) {
      if (!raw.socket.write(chunk)) await once(raw.socket, 'drain');
    }
    await new Promise<void>((resolve) => raw.socket.write('', () => resolve()));
    // The refusal comes as soon as the line passes the limit, not at its end.
    const refusal = await raw.next();
    expect(refusal).toMatchObject({ ok: false, error: { code: 'LINE_TOO_LONG' } });
    expect(refusal.error.message).toContain('--max-line-bytes');
    // The next line is answered only once the daemon has read past all 200 MB.
    raw.send(`\n${JSON.stringify({ op: 'run', ref: 'next', cmd: [CMD, '--stdout', 'fine'] })}\n`);
    const next = await raw.next();
    rss.stop();
    console.log(`200 MB line: daemon RSS ${mb(rss.baseline)} before, max ${mb(rss.max)}`);
    expect(next).toMatchObject({ ok: true, ref: 'next', task: { state: 'COMPLETED', stdout: 'fine' } });
    raw.send('{"op":"health","ref":"then"}\n');
    expect(await raw.next()).toMatchObject({ ok: true, ref: 'then' }); // no second LINE_TOO_LONG in between
    // Holding the line would need 200 MB more.
    expect(rss.max - rss.baseline).toBeLessThan(100 * MB);
    raw.close();
  }, 60_000);
});
