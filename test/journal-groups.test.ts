import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Journal, JournalCorruptError } from '../src/journal/index.js';
import { applyEntry, encodeEntry } from '../src/journal/replay.js';
import type { StoredGroup, StoredTask } from '../src/scheduler/index.js';
import { removeDir, snapshotSettled, tempDir } from './helpers.js';

/**
 * The journal's rules for groups: a line of a group's settings patches them
 * (and makes the group), the snapshot's header holds them, and both survive
 * a reopen and a compaction.
 */

const quiet = { durability: 'fsync' as const, warn: () => undefined };
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach(removeDir));

describe('replaying a line of a group', () => {
  const replay = (...entries: unknown[]) => {
    const tasks = new Map<string, StoredTask>();
    const groups = new Map<string, StoredGroup>();
    const problems = entries.map((entry) => applyEntry(tasks, entry, groups));
    return { groups, problems };
  };

  it('makes the group, then sets each field given, leaving the others', () => {
    const { groups, problems } = replay(
      JSON.parse(encodeEntry({ group: 'gpu', set: { concurrency: 2 } })),
      { group: 'gpu', set: { paused: true } },
      { group: 'default', set: { paused: true } },
      { group: 'gpu', set: { concurrency: 1 } },
    );
    expect(problems).toEqual([undefined, undefined, undefined, undefined]);
    expect(Object.fromEntries(groups)).toEqual({ gpu: { concurrency: 1, paused: true }, default: { paused: true } });
  });

  it('applied twice, ends in the same state (as compaction needs)', () => {
    const lines = [{ group: 'gpu', set: { concurrency: 2 } }, { group: 'gpu', set: { paused: true } }];
    expect(replay(...lines, ...lines).groups).toEqual(replay(...lines).groups);
  });

  it.each([
    [{ group: 5, set: {} }, 'group must be a string, got 5'],
    [{ group: 'gpu', set: { concurrency: 0 } }, 'group "gpu": concurrency must be an integer >= 1, got 0'],
    [{ group: 'gpu', set: { paused: 'yes' } }, 'group "gpu": paused must be true or false, got "yes"'],
    [{ group: 'gpu', set: { colour: 'red' } }, 'group "gpu": unexpected field "colour" in a group\'s settings'],
    [{ group: 'gpu', set: [] }, 'group "gpu": a group\'s settings must be an object, got []'],
    [{ group: 'gpu', set: {}, drop: true }, 'unexpected field "drop" in a group\'s line'],
  ])('refuses %j: %s', (entry, problem) => {
    expect(replay(entry).problems).toEqual([problem]);
  });
});

describe('groups in the journal on disk', () => {
  async function reopen(dataDir: string): Promise<Map<string, StoredGroup>> {
    const { journal, groups } = await Journal.open(dataDir, quiet);
    await snapshotSettled(dataDir);
    await journal.close();
    return groups;
  }

  it('are read back from the log, then from the snapshot the next start writes', async () => {
    const dataDir = tempDir('tm-groups-');
    dirs.push(dataDir);
    const { journal } = await Journal.open(dataDir, quiet);
    journal.putGroup('gpu', { concurrency: 2 });
    journal.putGroup('gpu', { paused: true });
    await journal.flushed();
    await snapshotSettled(dataDir);
    await journal.close();
    const expected = { gpu: { concurrency: 2, paused: true } };
    expect(Object.fromEntries(await reopen(dataDir))).toEqual(expected);
    // That start folded the log into its snapshot, whose header now holds the groups.
    const header = JSON.parse(readFileSync(join(dataDir, 'snapshot.ndjson'), 'utf8').split('\n')[0]!);
    expect(header.groups).toEqual(expected);
    expect(Object.fromEntries(await reopen(dataDir))).toEqual(expected);
  });

  it('are kept by a compaction, with the changes made after its instant in the new log', async () => {
    const dataDir = tempDir('tm-groups-');
    dirs.push(dataDir);
    const { journal } = await Journal.open(dataDir, { ...quiet, compactAfterBytes: 1 });
    const groups = new Map<string, StoredGroup>();
    journal.groupSource = () => groups;
    for (let i = 1; i <= 20; i++) {
      groups.set(`g${i}`, { concurrency: i });
      journal.putGroup(`g${i}`, { concurrency: i });
    }
    await journal.flushed();
    await snapshotSettled(dataDir);
    await journal.close();
    const read = await reopen(dataDir);
    expect(read.size).toBe(20);
    expect(read.get('g20')).toEqual({ concurrency: 20 });
  });

  it('refuses a snapshot header whose groups are wrong, naming the file', async () => {
    const dataDir = tempDir('tm-groups-');
    dirs.push(dataDir);
    writeFileSync(join(dataDir, 'snapshot.ndjson'), `${JSON.stringify({ format: 2, generation: 0, tasks: 0, groups: { gpu: { concurrency: -1 } } })}\n`);
    const error = await Journal.open(dataDir, quiet).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JournalCorruptError);
    expect((error as Error).message).toContain('concurrency must be an integer >= 1');
    expect(readdirSync(dataDir)).toContain('snapshot.ndjson');
  });
});
