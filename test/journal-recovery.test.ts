import fc from 'fast-check';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  statfsSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TaskManagerClient, TaskRecord } from '../src/index.js';
import { Journal, JournalCorruptError } from '../src/journal/index.js';
import { checkLegacySnapshot } from '../src/journal/legacy-snapshot.js';
import { logsToReplay } from '../src/journal/recovery.js';
import { replayLog } from '../src/journal/replay.js';
import { readSnapshot } from '../src/journal/snapshot-reader.js';
import { storedTaskProblem } from '../src/scheduler/index.js';
import { SPEC_DEFAULTS } from '../src/protocol/index.js';
import type { StoredTask } from '../src/scheduler/index.js';
import { newStoredTask } from '../src/scheduler/task.js';
import {
  CMD,
  eventually,
  logGenerations,
  removeDir,
  serveExpectingRefusal,
  snapshotOf,
  snapshotSettled,
  startDaemon,
  tempDir,
  within,
  type ServeOptions,
  type TestDaemon,
} from './helpers.js';

/**
 * Recovery reads and checks the whole journal before it writes anything:
 * log lines, the snapshot's tasks, and log generations. A journal that does
 * not add up stops the daemon (exit 2) with every file as it was. Also: a
 * full disk at start or during compaction, and the data dir's mode.
 */

// Everything a test started or created, cleaned up after it whatever happened.
const daemons: TestDaemon[] = [];
const dirs: string[] = [];
const mounts: Tmpfs[] = [];

afterEach(async () => {
  await Promise.all(daemons.splice(0).filter(isUp).map((daemon) => daemon.kill()));
  await Promise.all(mounts.splice(0).map((mount) => mount.close()));
  dirs.splice(0).forEach(removeDir);
});

function dir(prefix: string): string {
  const path = tempDir(prefix);
  dirs.push(path);
  return path;
}

async function daemon(args: string[], dataDir: string, options: ServeOptions = {}): Promise<TestDaemon> {
  const started = await startDaemon(args, { ...options, dataDir });
  daemons.push(started);
  return started;
}

const isUp = (daemon: TestDaemon) => daemon.process.exitCode === null && daemon.process.signalCode === null;

/** Every file and directory below `root`, with the sha256 of each file's bytes. */
function fingerprint(root: string, below = root): Record<string, string> {
  const found: Record<string, string> = {};
  for (const entry of readdirSync(below, { withFileTypes: true })) {
    const path = join(below, entry.name);
    const name = relative(root, path);
    if (entry.isDirectory()) Object.assign(found, { [`${name}/`]: 'dir' }, fingerprint(root, path));
    else found[name] = createHash('sha256').update(readFileSync(path)).digest('hex');
  }
  return found;
}

const logPath = (dataDir: string, generation: number) => join(dataDir, `log.${generation}.ndjson`);
const newestLog = (dataDir: string) => logPath(dataDir, logGenerations(dataDir).at(-1)!);

/** Runs tasks one after another, each printing its own line. */
async function runTasks(client: TaskManagerClient, prefix: string, n: number): Promise<TaskRecord[]> {
  const tasks: TaskRecord[] = [];
  for (let i = 0; i < n; i++) {
    const { task } = await client.run({ id: `${prefix}-${i}`, cmd: [CMD, '--stdout', `${prefix} result ${i}`] });
    expect(task.state).toBe('COMPLETED');
    tasks.push(task);
  }
  return tasks;
}

/** Starts a daemon on the data dir and checks that each task is there with its result. */
async function expectRecovered(dataDir: string, expected: TaskRecord[], options: ServeOptions = {}): Promise<void> {
  const started = await daemon([], dataDir, options);
  const client = await started.client();
  for (const before of expected) {
    expect(await client.status(before.id), before.id).toMatchObject({ state: before.state, stdout: before.stdout, finished_at: before.finished_at });
  }
  await client.close();
  expect(await started.stop(), started.stderr()).toBe(0);
}

/** A data dir with two finished tasks named `name-<i>` in it, after a clean stop or a crash (kill -9). */
async function usedDataDir(name: string, end: 'stop' | 'crash' = 'stop'): Promise<{ dataDir: string; results: TaskRecord[] }> {
  const dataDir = dir(`tm-recovery-${name}-`);
  const first = await daemon([], dataDir);
  const client = await first.client();
  const results = await runTasks(client, name, 2);
  await client.close();
  if (end === 'crash') await first.kill();
  else expect(await first.stop()).toBe(0);
  return { dataDir, results };
}

/**
 * The daemon refuses to start with exit 2 and a single line naming where the
 * journal is wrong, and every file of the data dir is as it was.
 */
async function expectRefusal(dataDir: string, message: string): Promise<void> {
  const before = fingerprint(dataDir);
  const refused = await serveExpectingRefusal(dataDir);
  expect(refused.started, refused.stderr).toBe(false);
  expect(refused.code, refused.stderr).toBe(2);
  expect(refused.stderr).toMatch(/^task-manager: [^\n]*; the journal was left as it is\n$/);
  expect(refused.stderr).toContain(message);
  expect(fingerprint(dataDir)).toEqual(before);
}

// ---------------------------------------------------------------------------
// Journal contents as the daemon writes them, for tests without a daemon.

function storedTask(id: string, seq: number, state: StoredTask['state'] = 'QUEUED'): StoredTask {
  const spec = { ...SPEC_DEFAULTS, cmd: ['true'], depends_on: [] };
  return { ...newStoredTask(id, seq, spec, Date.parse('2026-01-01T00:00:00Z')), state };
}

const line = (entry: unknown) => `${JSON.stringify(entry)}\n`;
const created = (task: StoredTask) => line({ id: task.id, set: task });
const GHOST = '{"id":"ghost","set":{"state":"QUEUED"}}\n';

/** A snapshot file's text: its header line, then one line per task. */
const snapshotText = ({ generation, tasks }: { generation: number; tasks: StoredTask[] }) =>
  line({ format: 2, generation, tasks: tasks.length }) + tasks.map(line).join('');

interface Files {
  snapshot?: { generation: number; tasks: StoredTask[] } | string;
  /** .snapshot.ndjson.tmp: a snapshot write cut short */
  temp?: string;
  /** snapshot.json, the single document of earlier versions (format 1) */
  legacy?: { generation: number; tasks: StoredTask[] } | string;
  /** .snapshot.json.tmp: a snapshot write of an earlier version cut short */
  legacyTemp?: string;
  logs?: Record<number, string>;
}

/** A data dir holding exactly these files. */
function dataDirWith(files: Files): string {
  const dataDir = dir('tm-recovery-unit-');
  const { snapshot, legacy } = files;
  if (snapshot !== undefined) writeFileSync(join(dataDir, 'snapshot.ndjson'), typeof snapshot === 'string' ? snapshot : snapshotText(snapshot));
  if (files.temp !== undefined) writeFileSync(join(dataDir, '.snapshot.ndjson.tmp'), files.temp);
  if (legacy !== undefined) writeFileSync(join(dataDir, 'snapshot.json'), typeof legacy === 'string' ? legacy : JSON.stringify({ format: 1, ...legacy }));
  if (files.legacyTemp !== undefined) writeFileSync(join(dataDir, '.snapshot.json.tmp'), files.legacyTemp);
  for (const [generation, text] of Object.entries(files.logs ?? {})) writeFileSync(logPath(dataDir, Number(generation)), text);
  return dataDir;
}

const quiet = { durability: 'none' as const, warn: () => undefined };

describe('replaying one log', () => {
  let path: string;
  beforeEach(() => {
    path = join(dir('tm-replay-'), 'log.4.ndjson');
  });
  /** Replays `text` as the content of a log file. */
  const replay = async (text: string, tasks = new Map<string, StoredTask>()) => {
    writeFileSync(path, text);
    const warnings: string[] = [];
    await replayLog(path, tasks, (warning) => warnings.push(warning));
    return { tasks, warnings };
  };
  const a = storedTask('a', 1);

  it('creates a task from its complete first line, patches it, and drops it', async () => {
    const text = created(a) + line({ id: 'a', set: { state: 'RUNNING', attempts: 1, pgid: 42 } }) + line({ id: 'a', set: { pgid: null } });
    const { tasks, warnings } = await replay(text);
    expect(tasks.get('a')).toMatchObject({ state: 'RUNNING', attempts: 1, spec: a.spec, seq: 1 });
    expect(tasks.get('a')).not.toHaveProperty('pgid'); // a null clears a field a task has only at times
    expect(warnings).toEqual([]);
    expect((await replay(text + line({ id: 'a', drop: true }))).tasks.size).toBe(0);
  });

  it('refuses a change to a task that neither the snapshot nor an earlier line created', async () => {
    await expect(replay(created(a) + GHOST)).rejects.toThrow(
      new JournalCorruptError(
        `${path}:2`,
        'task "ghost" is not in the snapshot and no earlier line created it, and this line is not a complete task (id, cmd, priority and 13 more are missing)',
      ),
    );
  });

  it.each([
    ['a state that is no task state', '{"id":"a","set":{"state":"QUEUEE"}}', 'task "a": state must be one of PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, got "QUEUEE"'],
    ['not an object', '[1,2]', 'a journal line must be an object, got [1,2]'],
    ['no id', '{"set":{}}', 'id must be a string, got nothing'],
    ['a field of no line', '{"id":"a","set":{},"at":1}', 'unexpected field "at"'],
    ['set and drop at once', '{"id":"a","set":{},"drop":true}', 'a line either sets fields ("set": {...}) or drops the task ("drop": true)'],
    ['a drop that is not true', '{"id":"a","drop":1}', 'a line either sets fields'],
    ['neither set nor drop', '{"id":"a"}', 'set must be an object, got nothing'],
    ['another task\'s id in set', '{"id":"a","set":{"id":"b"}}', 'set.id "b" differs from the line\'s id "a"'],
    ['a negative count', '{"id":"a","set":{"attempts":-1}}', 'task "a": attempts must be an integer >= 0, got -1'],
    ['a required field cleared', '{"id":"a","set":{"seq":null}}', 'task "a": seq must be an integer >= 0, got null'],
    ['a spec without depends_on', '{"id":"a","set":{"spec":{"cmd":"x"}}}', 'task "a": spec must be an object whose depends_on is an array of strings'],
    ['depends_on not an array', '{"id":"a","set":{"depends_on":"b"}}', 'task "a": depends_on must be an array of strings, got "b"'],
    ['a drop of an unknown task', '{"id":"b","drop":true}', 'task "b" is not in the snapshot and no earlier line created it, so it cannot be dropped'],
  ])('refuses %s, naming file and line, also as the last line', async (_, bad, problem) => {
    const good = line({ id: 'a', set: { state: 'RUNNING' } });
    await expect(replay(`${created(a)}${bad}\n${good}`)).rejects.toThrow(`${path}:2: ${problem}`);
    await expect(replay(`${created(a) + good + bad}\n`)).rejects.toThrow(`${path}:3: ${problem}`);
  });

  it('skips a last line cut off mid-write with a warning, but refuses an unreadable line followed by others', async () => {
    const torn = '{"id":"a","set":{"state":"COMPL';
    const { tasks, warnings } = await replay(created(a) + torn);
    expect(tasks.get('a')!.state).toBe('QUEUED');
    expect(warnings).toEqual([`${path}: ignoring a last line cut off mid-write (${torn.length} bytes)`]);
    await expect(replay(`${created(a) + torn}\n`)).rejects.toThrow(`${path}:2: unreadable journal line`);
  });

  it('applies a complete last line that only lacks its newline', async () => {
    expect((await replay(`${created(a)}{"id":"a","set":{"state":"RUNNING"}}`)).tasks.get('a')!.state).toBe('RUNNING');
  });
});

describe('checking a snapshot', () => {
  const tasks = [storedTask('a', 1), storedTask('b', 2)];
  const header = (fields: Record<string, unknown> = {}) => line({ format: 2, generation: 3, tasks: 2, ...fields });
  /** Reads `text` as a data dir's snapshot file: its path, and the reading. */
  const read = (text: string) => {
    const dataDir = dataDirWith({ snapshot: text });
    return { path: join(dataDir, 'snapshot.ndjson'), snapshot: readSnapshot(dataDir) };
  };

  it('accepts what the daemon writes, in the order of the file', async () => {
    const { path, snapshot } = read(snapshotText({ generation: 3, tasks }));
    const found = await snapshot;
    expect(found).toMatchObject({ path, generation: 3 });
    expect([...found!.tasks.values()]).toEqual(tasks);
  });

  it.each([
    ['no header', '', ': empty, without even its header line'],
    ['a header that is no object', '[]\n', ':1: the first line must be the snapshot\'s header, an object, got []'],
    ['another format', header({ format: 1 }), ':1: format must be 2, got 1'],
    ['a negative generation', header({ generation: -1 }), ':1: generation must be an integer >= 0, got -1'],
    ['no task count', header({ tasks: undefined }), ':1: tasks must be an integer >= 0, got nothing'],
    ['a line that is no JSON', `${header()}${line(tasks[0])}{"id":\n`, ':3: unreadable snapshot line'],
    ['a task without seq', header() + line(tasks[0]) + line({ ...tasks[1], seq: undefined }), ':3 ("b"): seq is missing'],
    ['a task in no state', header({ tasks: 1 }) + line({ ...tasks[0], state: 'DONE' }), ':2 ("a"): state must be one of'],
    ['a task that is no object', `${header({ tasks: 1 })}null\n`, ':2: a task must be an object, got null'],
    ['two tasks with one id', header() + line(tasks[0]) + line(tasks[0]), ':3 ("a"): a second task with this id'],
    ['a file cut short at the end of a line', header() + line(tasks[0]), ': the header announces 2 tasks, but the file holds 1'],
    ['more tasks than announced', header({ tasks: 1 }) + line(tasks[0]) + line(tasks[1]), ': the header announces 1 tasks, but the file holds 2'],
    // Unlike a log's: a snapshot is renamed into place only once complete, so its last line was never being written.
    ['a last line cut off', header() + line(tasks[0]) + line(tasks[1]).slice(0, -5), ':3: cut off mid-line'],
    ['a last line without its newline', header() + line(tasks[0]) + line(tasks[1]).trimEnd(), ':3: cut off mid-line'],
  ])('refuses %s, naming file and line', async (_, text, message) => {
    const { path, snapshot } = read(text);
    await expect(snapshot).rejects.toThrow(`${path}${message}`);
  });
});

describe('checking a snapshot of earlier versions (format 1)', () => {
  const path = '/data/snapshot.json';
  const tasks = [storedTask('a', 1), storedTask('b', 2)];

  it('accepts what earlier versions wrote', () => {
    expect([...checkLegacySnapshot(path, { format: 1, generation: 3, tasks }).tasks.values()]).toEqual(tasks);
  });

  it.each([
    ['not an object', [], `${path}: a snapshot must be an object, got []`],
    ['another format', { format: 2, generation: 1, tasks: [] }, `${path}: format must be 1, got 2`],
    ['a negative generation', { format: 1, generation: -1, tasks: [] }, `${path}: generation must be an integer >= 0, got -1`],
    ['tasks that are no array', { format: 1, generation: 1, tasks: {} }, `${path}: tasks must be an array, got {}`],
    ['a task without seq', { format: 1, generation: 1, tasks: [tasks[0], { ...tasks[1], seq: undefined }] }, `${path}: tasks[1] ("b"): seq is missing`],
    ['a task in no state', { format: 1, generation: 1, tasks: [{ ...tasks[0], state: 'DONE' }] }, `${path}: tasks[0] ("a"): state must be one of`],
    ['a task that is no object', { format: 1, generation: 1, tasks: [null] }, `${path}: tasks[0]: a task must be an object, got null`],
    ['two tasks with one id', { format: 1, generation: 1, tasks: [tasks[0], tasks[0]] }, `${path}: tasks[1] ("a"): a second task with this id`],
  ])('refuses %s, naming the task', (_, data, message) => {
    expect(() => checkLegacySnapshot(path, JSON.parse(JSON.stringify(data)))).toThrow(message);
  });
});

describe('log generations', () => {
  it.each([
    [0, [], []],
    [0, [1, 2], [1, 2]],
    [3, [3], [3]],
    [3, [1, 2, 3, 4], [3, 4]], // 1 and 2: a compaction stopped before deleting them
  ])('a snapshot of generation %i with logs %j replays %j', (generation, logs, replayed) => {
    expect(logsToReplay('/data/snapshot.ndjson', generation, logs)).toEqual(replayed);
  });

  it.each([
    [3, [], '/data/snapshot.ndjson: generation 3 needs log.3.ndjson, which is missing'],
    [3, [2, 4], '/data/snapshot.ndjson: generation 3 needs log.3.ndjson, which is missing'],
    [3, [3, 5], '/data/log.5.ndjson: log.4.ndjson is missing before it (the snapshot has generation 3)'],
    [0, [2], '/data/log.2.ndjson: log.1.ndjson is missing before it (the snapshot has generation 0)'],
  ])('a snapshot of generation %i with logs %j is refused', (generation, logs, message) => {
    expect(() => logsToReplay('/data/snapshot.ndjson', generation, logs)).toThrow(`${message}; the journal was left as it is`);
  });
});

describe('opening a journal', () => {
  const a = storedTask('a', 1);
  const b = storedTask('b', 2);

  /**
   * Opens the journal, and closes it once the snapshot its start writes in
   * the background is in place; resolves with the tasks it recovered and the
   * files it left.
   */
  async function open(dataDir: string): Promise<{ tasks: StoredTask[]; files: string[] }> {
    const { journal, tasks } = await Journal.open(dataDir, quiet);
    await snapshotSettled(dataDir);
    await journal.close();
    return { tasks, files: readdirSync(dataDir).sort() };
  }

  it.each([
    ['nothing at all (a new data dir)', {}],
    ['a half-written initial snapshot', { temp: '{"format":2,"gen' }],
    ['the initial snapshot only', { snapshot: { generation: 0, tasks: [] } }],
    ['the initial snapshot and an empty first log', { snapshot: { generation: 0, tasks: [] }, logs: { 1: '' } }],
    ['an empty first log and no snapshot (left by earlier versions)', { logs: { 1: '' } }],
    ['a half-written initial snapshot of an earlier version', { legacyTemp: '{"format":1,"gen' }],
    ['the initial snapshot of an earlier version and an empty first log', { legacy: { generation: 0, tasks: [] }, logs: { 1: '' } }],
  ] as [string, Files][])('starts empty from what a crash during a first start leaves: %s', async (_, files) => {
    const dataDir = dataDirWith(files);
    const { tasks, files: left } = await open(dataDir);
    expect(tasks).toEqual([]);
    const generation = snapshotOf(dataDir).generation;
    expect(left).toEqual([`log.${generation}.ndjson`, 'snapshot.ndjson']);
    expect(generation).toBe(Math.max(0, ...Object.keys(files.logs ?? {}).map(Number)) + 1);
  });

  it('replays a compaction cut short: skips the older leftover log, replays the rest, and then removes all of them', async () => {
    const dataDir = dataDirWith({
      snapshot: { generation: 3, tasks: [a] },
      logs: { 2: 'leftover, never read\n', 3: line({ id: 'a', set: { state: 'RUNNING', attempts: 1 } }), 4: created(b) },
    });
    const { tasks, files } = await open(dataDir);
    expect(tasks).toEqual([{ ...a, state: 'RUNNING', attempts: 1 }, b]);
    expect(files).toEqual(['log.5.ndjson', 'snapshot.ndjson']);
    expect(snapshotOf(dataDir)).toMatchObject({ generation: 5, tasks });
  });

  it('reads the snapshot of an earlier version (snapshot.json), writes the streamed one, and only then removes the old one', async () => {
    const dataDir = dataDirWith({ legacy: { generation: 2, tasks: [a] }, logs: { 2: created(b) } });
    const { tasks, files } = await open(dataDir);
    expect(tasks).toEqual([a, b]);
    expect(files).toEqual(['log.3.ndjson', 'snapshot.ndjson']);
    expect(snapshotOf(dataDir)).toMatchObject({ generation: 3, tasks });
  });

  it('after a crash between writing the streamed snapshot and removing the old one, reads the streamed one', async () => {
    const dataDir = dataDirWith({
      legacy: { generation: 2, tasks: [a] },
      snapshot: { generation: 3, tasks: [a, b] },
      logs: { 2: created(b), 3: line({ id: 'a', drop: true }) },
    });
    const { tasks, files } = await open(dataDir);
    expect(tasks).toEqual([b]);
    expect(files).toEqual(['log.4.ndjson', 'snapshot.ndjson']);
  });

  it('gives up the snapshot of a start when closed before it is written, and leaves a journal that replays the same', async () => {
    const big = { ...SPEC_DEFAULTS, cmd: 'x'.repeat(100_000), depends_on: [] };
    const tasks = Array.from({ length: 200 }, (_, i) => newStoredTask(`big-${i}`, i + 1, big, Date.parse('2026-01-01T00:00:00Z')));
    const dataDir = dataDirWith({ snapshot: { generation: 1, tasks }, logs: { 1: '' } });
    const { journal } = await Journal.open(dataDir, quiet);
    await journal.close(); // 40 MB of tasks: the snapshot of the start is still being written
    expect(readdirSync(dataDir).sort()).toEqual(['log.1.ndjson', 'log.2.ndjson', 'snapshot.ndjson']);
    expect(snapshotOf(dataDir).generation).toBe(1);
    const reopened = await open(dataDir);
    expect(reopened.tasks).toEqual(tasks);
    expect(reopened.files).toEqual(['log.3.ndjson', 'snapshot.ndjson']);
  });

  it.each([
    ['a change to a task never created', { snapshot: { generation: 1, tasks: [a] }, logs: { 1: created(b) + GHOST } }, 'log.1.ndjson:2: task "ghost" is not in the snapshot'],
    ['an unknown state', { snapshot: { generation: 1, tasks: [a] }, logs: { 1: '{"id":"a","set":{"state":"QUEUEE"}}\n' } }, 'log.1.ndjson:1: task "a": state must be one of'],
    ['a snapshot deleted beside its log', { logs: { 1: created(a) } }, 'snapshot.ndjson: missing, but log.1.ndjson holds changes'],
    ['a generation one too high', { snapshot: { generation: 2, tasks: [a] }, logs: { 1: created(b) } }, 'snapshot.ndjson: generation 2 needs log.2.ndjson'],
    ['a generation one too low', { snapshot: { generation: 1, tasks: [a] }, logs: { 2: created(b) } }, 'snapshot.ndjson: generation 1 needs log.1.ndjson'],
    ['a log missing between two', { snapshot: { generation: 1, tasks: [] }, logs: { 1: created(a), 3: created(b) } }, 'log.3.ndjson: log.2.ndjson is missing before it'],
    ['a malformed task in the snapshot', { snapshot: { generation: 1, tasks: [{ ...a, seq: 'one' } as never] }, logs: { 1: '' } }, 'snapshot.ndjson:2 ("a"): seq must be an integer >= 0, got "one"'],
    ['a snapshot cut short', { snapshot: snapshotText({ generation: 1, tasks: [a] }).slice(0, -10), logs: { 1: '' } }, 'snapshot.ndjson:2: cut off mid-line'],
    ['a snapshot that is not JSON', { snapshot: '{"format":2,"genera\n', logs: { 1: '' } }, 'snapshot.ndjson:1: unreadable snapshot line'],
    ['a generation of an earlier version one too high', { legacy: { generation: 2, tasks: [a] }, logs: { 1: created(b) } }, 'snapshot.json: generation 2 needs log.2.ndjson'],
    ['a snapshot of an earlier version that is not JSON', { legacy: '{"format":1,"genera', logs: { 1: '' } }, 'snapshot.json: not valid JSON'],
  ] as [string, Files, string][])('refuses %s before writing anything', async (_, files, message) => {
    const dataDir = dataDirWith(files);
    const before = fingerprint(dataDir);
    const error = await Journal.open(dataDir, quiet).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JournalCorruptError);
    expect((error as Error).message).toContain(`${dataDir}/${message}`);
    expect(fingerprint(dataDir)).toEqual(before); // the lock is gone too
  });

  it('never starts on, nor changes, a journal with one line broken in any way', async () => {
    const snapshot = { generation: 2, tasks: [a] };
    const lines = [
      created(b),
      line({ id: 'a', set: { state: 'RUNNING', attempts: 1, started_at: '2026-01-01T00:00:01.000Z' } }),
      line({ id: 'a', set: { pgid: 4242, pgid_started: '99' } }),
      line({ id: 'a', set: { state: 'COMPLETED', exit_code: 0, stdout: 'ok\n', pgid: null, pgid_started: null, finished_at: '2026-01-01T00:00:02.000Z' } }),
      line({ id: 'b', drop: true }),
    ];
    // A broken line: a field changed, added or removed at any depth, a new value, or text cut short.
    const breakage = fc.oneof(
      fc.record({ path: fc.array(fc.oneof(fc.constantFrom('id', 'set', 'drop', 'state', 'spec', 'depends_on', 'seq', 'attempts', 'pgid', '0'), fc.string()), { minLength: 1, maxLength: 3 }), value: fc.oneof(fc.jsonValue(), fc.constant(undefined)) }),
      fc.record({ cut: fc.nat() }),
      fc.record({ text: fc.json() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: lines.length - 1 }), breakage, async (index, broken) => {
        const text = [...lines];
        text[index] = breakLine(text[index]!, broken);
        const dataDir = dataDirWith({ snapshot, logs: { 2: text.join('') } });
        const before = fingerprint(dataDir);
        try {
          const { tasks } = await open(dataDir);
          for (const task of tasks) expect(storedTaskProblem(task), JSON.stringify(task)).toBeUndefined();
        } catch (error) {
          if (!(error instanceof JournalCorruptError)) throw error;
          expect(fingerprint(dataDir)).toEqual(before);
        } finally {
          removeDir(dataDir);
        }
      }),
      { numRuns: 150 },
    );
  });
});

type Breakage = { path: string[]; value: unknown } | { cut: number } | { text: string };

function breakLine(text: string, broken: Breakage): string {
  if ('text' in broken) return `${broken.text}\n`;
  if ('cut' in broken) return `${text.slice(0, broken.cut % text.length)}\n`;
  const entry = JSON.parse(text) as Record<string, unknown>;
  // Keys are own properties, defined, never assigned: fast-check's strings include "__proto__", which
  // an assignment would take as the prototype (Object.prototype itself, of everything in this process).
  const set = (target: Record<string, unknown>, key: string, value: unknown) =>
    Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  let target: Record<string, unknown> = entry;
  for (const key of broken.path.slice(0, -1)) {
    const next = Object.hasOwn(target, key) ? target[key] : undefined;
    if (typeof next !== 'object' || next === null) set(target, key, {});
    target = Object.getOwnPropertyDescriptor(target, key)!.value as Record<string, unknown>;
  }
  set(target, broken.path.at(-1)!, broken.value);
  return line(entry);
}

describe('recovery checks the whole journal before writing anything', () => {
  it('refuses a change to a task the journal never created, after a crash, and keeps every file, the stale lock too', async () => {
    const { dataDir, results } = await usedDataDir('ghost', 'crash'); // the lock stays, naming a dead daemon

    const log = newestLog(dataDir);
    const good = readFileSync(log, 'utf8');
    const ghostLine = good.split('\n').length; // the line after the last one
    appendFileSync(log, GHOST);
    expect(readdirSync(dataDir)).toContain('lock');
    await expectRefusal(dataDir, `${log}:${ghostLine}: task "ghost" is not in the snapshot and no earlier line created it`);

    writeFileSync(log, good); // repaired by hand
    await expectRecovered(dataDir, results);
  });

  it('refuses a state that is no task state, naming file and line', async () => {
    const { dataDir, results } = await usedDataDir('state');
    const log = newestLog(dataDir);
    const good = readFileSync(log, 'utf8');
    const lines = good.split('\n');
    const running = lines.findIndex((text) => text.includes('"state":"RUNNING"'));
    expect(running).toBeGreaterThan(0);
    lines[running] = lines[running]!.replace('"RUNNING"', '"QUEUEE"');
    writeFileSync(log, lines.join('\n'));
    await expectRefusal(dataDir, `${log}:${running + 1}: task "state-0": state must be one of PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, got "QUEUEE"`);

    writeFileSync(log, good);
    await expectRecovered(dataDir, results);
  });

  it('refuses a data dir whose snapshot was deleted beside its logs instead of starting empty', async () => {
    const { dataDir, results } = await usedDataDir('nosnap');
    const path = join(dataDir, 'snapshot.ndjson');
    const good = readFileSync(path);
    unlinkSync(path);
    await expectRefusal(dataDir, `${path}: missing, but ${`log.${logGenerations(dataDir)[0]}.ndjson`} holds changes`);

    writeFileSync(path, good);
    await expectRecovered(dataDir, results);
  });

  it.each([1, -1])('refuses a snapshot whose generation is off by %i', async (offset) => {
    const { dataDir, results } = await usedDataDir('generation');
    const second = await daemon([], dataDir); // a second start: generation 2, so that one less is a generation too
    await snapshotSettled(dataDir);
    expect(await second.stop()).toBe(0);
    const path = join(dataDir, 'snapshot.ndjson');
    const good = readFileSync(path, 'utf8');
    const { generation } = snapshotOf(dataDir);
    expect(generation).toBe(2);
    expect(logGenerations(dataDir)).toEqual([2]);
    writeFileSync(path, good.replace(`"generation":${generation}`, `"generation":${generation + offset}`));
    await expectRefusal(dataDir, `${path}: generation ${generation + offset} needs log.${generation + offset}.ndjson, which is missing`);

    writeFileSync(path, good);
    await expectRecovered(dataDir, results);
  });

  it('still accepts a last line cut off mid-write, in a log followed by another (a start that failed after it)', async () => {
    const { dataDir, results } = await usedDataDir('torn');
    const generation = logGenerations(dataDir).at(-1)!;
    const torn = '{"id":"torn-1","set":{"state":"RUNN';
    appendFileSync(logPath(dataDir, generation), torn);
    writeFileSync(logPath(dataDir, generation + 1), '');

    const second = await daemon([], dataDir);
    await eventually(() => second.stderr().includes('cut off'));
    expect(second.stderr()).toBe(`${logPath(dataDir, generation)}: ignoring a last line cut off mid-write (${torn.length} bytes)\n`);
    await snapshotSettled(dataDir); // the snapshot of the start replaces both logs
    expect(logGenerations(dataDir)).toEqual([generation + 2]);
    expect(await second.stop()).toBe(0);
    await expectRecovered(dataDir, results);
  });

  it('starts a data dir written by earlier versions, with no snapshot and the empty log a crashed first start left', async () => {
    const dataDir = dir('tm-recovery-earlier-');
    writeFileSync(logPath(dataDir, 1), '');
    const first = await daemon([], dataDir);
    const client = await first.client();
    const results = await runTasks(client, 'earlier', 1);
    await client.close();
    await snapshotSettled(dataDir);
    await first.kill();
    expect(snapshotOf(dataDir).generation).toBe(2);
    await expectRecovered(dataDir, results);
  });
});

// ---------------------------------------------------------------------------
// A full disk, for real: a small tmpfs. Mounting needs root, or (as another
// user) a user namespace of one's own; the tests run as root on CI. The
// tmpfs lives in a mount namespace of its own, so nothing is left mounted if
// a test dies: the test reaches its files through /proc/<holder>/root, and
// the daemon runs inside through nsenter.

const isRoot = process.getuid?.() === 0;
const asOwner = isRoot ? [] : ['--map-root-user'];

class Tmpfs {
  private constructor(
    private readonly holder: ChildProcess,
    /** where it is mounted, inside the namespace */
    readonly mountPoint: string,
  ) {}

  static async mount(bytes: number): Promise<Tmpfs> {
    const mountPoint = dir('tm-tmpfs-');
    const script = 'mount -t tmpfs -o size="$1",mode=700 tmpfs "$2" && echo mounted && exec sleep infinity';
    const holder = spawn('unshare', [...asOwner, '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', String(bytes), mountPoint], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const mounted = new Tmpfs(holder, mountPoint);
    mounts.push(mounted);
    let stderr = '';
    holder.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.once('data', () => resolve());
      holder.once('exit', (code) => reject(new Error(`could not mount a tmpfs (exit ${code}): ${stderr}`)));
    });
    return mounted;
  }

  /** The path of `name` inside the namespace, as the daemon sees it. */
  inside(name: string): string {
    return join(this.mountPoint, name);
  }

  /** The same file, as this process reaches it. */
  outside(name: string): string {
    return join(`/proc/${this.holder.pid}/root`, this.mountPoint, name);
  }

  /** Runs the daemon inside the namespace. */
  get serve(): ServeOptions {
    return { prefix: ['nsenter', '-t', String(this.holder.pid), ...(isRoot ? [] : ['-U', '--preserve-credentials']), '-m'] };
  }

  /** Fills it up until only `leave` bytes are free (tmpfs counts whole pages). */
  fill(leave: number): void {
    const free = () => {
      const stats = statfsSync(this.outside(''));
      return stats.bavail * stats.bsize;
    };
    writeFileSync(this.outside('filler'), Buffer.alloc(free() - leave));
    expect(free()).toBe(leave);
  }

  free(): void {
    unlinkSync(this.outside('filler'));
  }

  async close(): Promise<void> {
    if (this.holder.exitCode !== null || this.holder.signalCode !== null) return;
    const exited = new Promise((resolve) => this.holder.once('exit', resolve));
    this.holder.kill('SIGKILL');
    await exited;
  }
}

/** Root can always mount; another user only where user namespaces are allowed. */
function canMountTmpfs(): boolean {
  if (isRoot) return true;
  const probe = tempDir('tm-probe-');
  const { status } = spawnSync('unshare', [...asOwner, '--mount', 'sh', '-c', 'mount -t tmpfs tmpfs "$1"', 'sh', probe]);
  removeDir(probe);
  return status === 0;
}

describe.runIf(canMountTmpfs())('a full disk', () => {
  const ENOSPC = 'ENOSPC: no space left on device';
  /** exit 2 and one line: the data dir and why */
  const expectDiskFull = (refused: { code: number | null; started: boolean; stderr: string }, dataDir: string) => {
    expect(refused.started, refused.stderr).toBe(false);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/^task-manager: [^\n]*\n$/);
    expect(refused.stderr).toContain(`task-manager: data dir ${dataDir}: ${ENOSPC}`);
  };

  it('a first start on a full disk exits 2 with one line naming the data dir and the cause, and leaves no file', async () => {
    const disk = await Tmpfs.mount(256 * 1024);
    disk.fill(0);
    expectDiskFull(await serveExpectingRefusal(disk.inside('data'), [], disk.serve), disk.inside('data'));
    expect(readdirSync(disk.outside('data'))).toEqual([]); // no lock, no lock.<pid>, no temp file
  });

  it('a start with room for the lock but not the snapshot exits 2 and leaves every file as it was', async () => {
    const disk = await Tmpfs.mount(1024 * 1024);
    const dataDir = disk.inside('data');
    const first = await daemon([], dataDir, disk.serve);
    const client = await first.client();
    // Output enough that the snapshot of the next start takes more than one page.
    const results = await Promise.all([0, 1, 2].map((i) => client.run({ id: `full-${i}`, cmd: [CMD, '--stdout-bytes', '3000'] })));
    await client.close();
    expect(await first.stop()).toBe(0);

    const before = fingerprint(disk.outside('data'));
    disk.fill(4096); // one page: the lock
    expectDiskFull(await serveExpectingRefusal(dataDir, [], disk.serve), dataDir);
    expect(fingerprint(disk.outside('data'))).toEqual(before); // no temp file, no lock, no new log

    disk.free();
    await expectRecovered(dataDir, results.map(({ task }) => task), disk.serve);
  });

  it('a compaction that fails on the full disk leaves no temp file, the daemon carries on, and compacts once there is room', async () => {
    const disk = await Tmpfs.mount(1024 * 1024);
    const dataDir = disk.inside('data');
    const running = await daemon(['--compact-after-bytes', '1024'], dataDir, disk.serve);
    const client = await running.client();
    // Tasks that wait an hour: each costs one line of the log, and nothing is written after it.
    let submitted = 0;
    const submit = () => client.submit({ id: `later-${++submitted}`, cmd: ['true'], delay_ms: 3_600_000 });
    const files = () => readdirSync(disk.outside('data'));
    const logSize = () => statSync(disk.outside('data/log.1.ndjson')).size;
    do await submit();
    while (logSize() <= 1024);
    expect(logGenerations(disk.outside('data'))).toEqual([1]);

    // No page left, but the log's page still has room for a line: the snapshot cannot get a byte.
    disk.fill(0);
    await submit(); // the first change once the log is past the bound: compaction
    await eventually(() => running.stderr().includes('journal compaction failed, will retry'));
    expect(running.stderr()).toContain(ENOSPC);
    expect(files()).not.toContain('.snapshot.ndjson.tmp');
    expect(logGenerations(disk.outside('data'))).toEqual([1, 2]); // the old log stays: the snapshot on disk needs it
    expect((await client.list()).total).toBe(submitted);

    disk.free();
    // Once the new log outgrows the bound, compaction runs again, and succeeds.
    while (logGenerations(disk.outside('data')).length > 1 && submitted < 20) await submit();
    await eventually(() => logGenerations(disk.outside('data')).join() === '3');
    expect(files()).not.toContain('.snapshot.ndjson.tmp');
    expect(snapshotOf(disk.outside('data')).generation).toBe(3);
    expect((await client.list()).total).toBe(submitted);
    await client.close();
    expect(await running.stop()).toBe(0);
  });

  it('a task whose output meets the full disk runs to its end, marked truncated, and the daemon serves on', async () => {
    const disk = await Tmpfs.mount(1024 * 1024);
    const dataDir = disk.inside('data');
    const running = await daemon([], dataDir, disk.serve);
    const client = await running.client();
    await client.run({ id: 'before', cmd: ['true'] }); // the log has its page: its next lines fit in it
    disk.fill(0);
    const { task } = await within(client.run({ id: 'printer', cmd: [CMD, '--stdout-bytes', '20000'] }), 20_000, 'the run on the full disk');
    expect(task).toMatchObject({ state: 'COMPLETED', exit_code: 0, stdout_truncated: true });
    expect(task.stdout?.length).toBeLessThan(20_000);
    disk.free();
    const again = await client.run({ id: 'after', cmd: [CMD, '--stdout-bytes', '20000'] });
    expect(again.task).toMatchObject({ state: 'COMPLETED', stdout: 'x'.repeat(20_000), stdout_truncated: false });
    await client.close();
  });
});

describe('data dir mode', () => {
  it('tightens an existing data dir that others can read to 700, saying so once', async () => {
    const dataDir = dir('tm-recovery-mode-');
    chmodSync(dataDir, 0o755);
    const first = await daemon([], dataDir);
    await eventually(() => first.stderr().includes('mode'));
    expect(first.stderr()).toBe(`data dir ${dataDir} had mode 755; changed it to 700, since it holds task commands, environments and output\n`);
    expect(statSync(dataDir).mode & 0o7777).toBe(0o700);
    expect(await first.stop()).toBe(0);

    const second = await daemon([], dataDir);
    expect(await second.stop()).toBe(0);
    expect(second.stderr()).not.toContain('mode');
  });

  it('leaves the mode of a shared directory such as /tmp alone, and warns', async () => {
    const shared = join(dir('tm-recovery-shared-'), 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const started = await daemon([], shared);
    await eventually(() => started.stderr().includes('mode'));
    expect(started.stderr()).toContain(`data dir ${shared} is a shared directory (mode 1777); its mode was left alone`);
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    expect(await started.stop()).toBe(0);
  });
});
