import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AttemptResult } from '../src/executor/index.js';
import { applyEntry, encodeEntry } from '../src/journal/replay.js';
import { withoutClearedFields } from '../src/scheduler/index.js';
import { RequestError, type TaskSpec } from '../src/protocol/index.js';
import { Scheduler, type AttemptRunner, type SchedulerOptions, type StoredGroup, type StoredTask } from '../src/scheduler/index.js';
import { specSize } from '../src/scheduler/task.js';
import { result, settle, spec } from './store-conformance.js';

/**
 * The Scheduler alone, with a journal and a runner of the test's own: the
 * bound on what specs hold, and the journal lines it writes, replayed as
 * recovery and compaction replay them.
 */

/** A journal that keeps every line, and the state of every task as of each line. */
class RecordingJournal {
  readonly lines: string[] = [];
  /** after each line: every task the scheduler holds, as JSON */
  readonly states: Map<string, string>[] = [];
  scheduler: Scheduler | undefined;

  put(id: string, patch: Partial<StoredTask>): void {
    this.record(encodeEntry({ id, set: patch }));
  }

  drop(id: string): void {
    this.record(encodeEntry({ id, drop: true }));
  }

  putGroup(name: string, patch: StoredGroup): void {
    this.record(encodeEntry({ group: name, set: patch }));
  }

  flushed(): Promise<void> {
    return Promise.resolve();
  }

  private record(line: string): void {
    this.lines.push(line);
    const tasks = this.scheduler?.snapshot() ?? [];
    this.states.push(new Map(tasks.map((task) => [task.id, JSON.stringify(task)])));
  }
}

/** A spec whose size is `bytes`, as the bound counts it. */
const specOf = (bytes: number): TaskSpec => {
  const base = specSize(spec({ stdin: '' }));
  return spec({ stdin: 'x'.repeat(bytes - base) });
};

/** Attempts that end when the test says so; an attempt aborted before that never started. */
class ControlledRunner {
  private readonly pending = new Map<string, (result: AttemptResult) => void>();

  readonly run: AttemptRunner = ({ id }, stop, onSpawn) =>
    new Promise((resolve) => {
      stop.listen(() => resolve(undefined));
      this.pending.set(id, (outcome) => {
        onSpawn(4000 + this.pending.size);
        resolve(outcome);
      });
    });

  end(id: string, outcome: AttemptResult): void {
    const end = this.pending.get(id);
    expect(end, `${id} is running`).toBeDefined();
    this.pending.delete(id);
    end!(outcome);
  }
}

function scheduler(options: Partial<SchedulerOptions> = {}): { scheduler: Scheduler; journal: RecordingJournal; runner: ControlledRunner } {
  const journal = new RecordingJournal();
  const runner = new ControlledRunner();
  const created = new Scheduler({
    concurrency: 10,
    runAttempt: runner.run,
    journal,
    keepFinished: 1000,
    keepOutputBytes: 1024 * 1024,
    maxQueue: 1000,
    maxSpecBytes: 1024 * 1024,
    ...options,
  });
  journal.scheduler = created;
  return { scheduler: created, journal, runner };
}

const refusal = (action: () => unknown): RequestError => {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(RequestError);
    return error as RequestError;
  }
  throw new Error('the call succeeded, a refusal was expected');
};

describe('--max-spec-bytes', () => {
  it('refuses a spec the unfinished tasks leave no room for, naming the bound and the flag, with nothing journaled', () => {
    const { scheduler: tasks, journal } = scheduler({ maxSpecBytes: 3000 });
    tasks.submit(specOf(1000), 'a');
    tasks.submit(specOf(1500), 'b');
    const lines = journal.lines.length;
    const refused = refusal(() => tasks.submit(specOf(501), 'c'));
    expect(refused.code).toBe('QUEUE_FULL');
    expect(refused.message).toBe(
      'the specs of unfinished tasks hold 2500 bytes, and this one 501 more: that is over 3000, the most this daemon holds (--max-spec-bytes)',
    );
    expect(journal.lines.length).toBe(lines);
    expect(() => tasks.get('c')).toThrow('names no task');
    expect(tasks.submit(specOf(500), 'c').duplicate).toBe(false); // exactly up to the bound
    expect(tasks.submit(specOf(500), 'c').duplicate).toBe(true); // a duplicate adds nothing
    expect(refusal(() => tasks.submit(specOf(3001))).code).toBe('QUEUE_FULL'); // alone over the bound
  });

  it('drops the oldest finished tasks first, as retention does, and journals the drops before the new task', async () => {
    const { scheduler: tasks, journal, runner } = scheduler({ maxSpecBytes: 4000 });
    for (const id of ['old', 'mid', 'new']) {
      tasks.submit(specOf(1000), id);
      await settle();
      runner.end(id, result());
      await settle();
    }
    tasks.submit(specOf(900), 'waiting-1');
    const lines = journal.lines.length;
    tasks.submit(specOf(1500), 'big'); // 4900 with everything: the two oldest finished go
    expect(journal.lines.slice(lines, lines + 3).map((line) => JSON.parse(line))).toMatchObject([
      { id: 'old', drop: true },
      { id: 'mid', drop: true },
      { id: 'big', set: { id: 'big', spec_bytes: 1500 } },
    ]);
    expect(() => tasks.get('old')).toThrow('names no task');
    expect(tasks.get('new').state).toBe('COMPLETED');
  });

  it('discards the output files of dropped and removed tasks only where their last attempt may have left some', async () => {
    const discarded: string[] = [];
    const { scheduler: tasks, runner } = scheduler({ keepFinished: 1, discardOutput: (name) => discarded.push(name) });
    const ends: [string, AttemptResult][] = [
      ['silent', result()],
      ['printed', result({ stdout_bytes: 3 })],
      ['cut', result({ stderr_truncated: true })], // a file that could not be measured or cut back may be left
      ['last', result()],
    ];
    for (const [id, ended] of ends) {
      tasks.submit(spec(), id);
      await settle();
      runner.end(id, ended);
      await settle();
    }
    expect(discarded).toEqual(['printed.1.0', 'cut.1.0']);
    tasks.remove(tasks.get('last'));
    expect(discarded).toHaveLength(2);
  });

  it('discards the files of a restarted task only where its last attempt may have left some, and of a task from an earlier journal always', async () => {
    const discarded: string[] = [];
    const { scheduler: tasks, runner } = scheduler({ discardOutput: (name) => discarded.push(name) });
    for (const [id, ended] of [['silent', result()], ['printed', result({ stdout_bytes: 3 })]] as const) {
      tasks.submit(spec(), id);
      await settle();
      runner.end(id, ended);
      await settle();
      tasks.restart(tasks.get(id));
    }
    expect(discarded).toEqual(['printed.1.0']);

    // Journals of earlier versions kept no byte counts: whether files are there is not known.
    const earlier = scheduler({ discardOutput: (name) => discarded.push(name) });
    const [stored] = tasks.snapshot().filter((task) => task.id === 'silent').map((task) => structuredClone(task));
    const old: StoredTask = { ...stored!, state: 'COMPLETED', output: 'silent.1.0', attempts: 1 };
    delete old.stdout_bytes;
    delete old.stderr_bytes;
    earlier.scheduler.restore([old], () => false);
    earlier.scheduler.remove(earlier.scheduler.get('silent'));
    expect(discarded).toEqual(['printed.1.0', 'silent.1.0']);
  });

  it('counts restored tasks, also those journaled without their size by earlier versions', () => {
    const { scheduler: first } = scheduler();
    first.submit(specOf(1000), 'a');
    first.submit(specOf(1000), 'b');
    const stored = first.snapshot().map((task) => structuredClone(task));
    delete stored[1]!.spec_bytes;
    const { scheduler: restored } = scheduler({ maxSpecBytes: 2500 });
    restored.restore(stored, () => false);
    expect(refusal(() => restored.submit(specOf(501))).message).toContain('hold 2000 bytes');
    restored.submit(specOf(500));
  });
});

describe('the journal lines the scheduler writes', () => {
  /**
   * Compaction serializes each task of the array it took at one instant
   * later, and maybe after further changes, while those changes also go to
   * the new log. Whatever the instant, and whenever each task is serialized
   * after it, replaying the lines written after the instant over those
   * tasks must give the state the scheduler holds in the end.
   */
  it('replay to the final state over tasks serialized at any later moment', async () => {
    const { scheduler: tasks, journal, runner } = scheduler({ keepFinished: 3, keepOutputBytes: 40, concurrency: 3 });
    tasks.submit(spec(), 'a');
    tasks.submit(spec({ depends_on: ['a'] }), 'b');
    tasks.submit(spec({ retries: 1, retry_delay_ms: 1 }), 'retried');
    tasks.submit(spec({ delay_ms: 60_000 }), 'later');
    await settle();
    runner.end('a', result({ stdout_bytes: 30 }));
    runner.end('retried', result({ exit_code: 1, error: { code: 'NONZERO_EXIT', message: 'exited 1' } }));
    await settle();
    runner.end('b', result({ stdout_bytes: 30 })); // drops a's output
    tasks.submit(spec(), 'canceled-before-start');
    await settle();
    await tasks.cancel(tasks.get('canceled-before-start')); // clears started_at
    await new Promise((resolve) => setTimeout(resolve, 5)); // the retry's back-off
    runner.end('retried', result({ error: { code: 'INTERRUPTED', message: 'its executor process ended' } }));
    await settle();
    runner.end('retried', result());
    await tasks.cancel(tasks.get('later'));
    for (const id of ['c', 'd']) {
      tasks.submit(spec(), id); // more finished than kept: drops
      await settle();
      runner.end(id, result());
    }
    await settle();

    const parsed = (state: Map<string, string>) => new Map([...state].map(([id, task]) => [id, JSON.parse(task) as StoredTask]));
    const final = parsed(journal.states.at(-1)!);
    expect(journal.lines).toEqual(expect.arrayContaining([expect.stringContaining('"started_at":null'), expect.stringContaining('"drop":true')]));
    fc.assert(
      fc.property(fc.nat({ max: journal.lines.length - 1 }), fc.array(fc.nat()), (instant, picks) => {
        // The tasks held at the instant, each as it was at some moment from then on (its last state if dropped since).
        const snapshot = new Map<string, StoredTask>();
        [...journal.states[instant]!.keys()].forEach((id, i) => {
          const later = journal.states.slice(instant).filter((state) => state.has(id));
          const moment = later[(picks[i] ?? 0) % later.length]!;
          snapshot.set(id, JSON.parse(moment.get(id)!));
        });
        for (const line of journal.lines.slice(instant + 1)) expect(applyEntry(snapshot, JSON.parse(line))).toBeUndefined();
        for (const task of snapshot.values()) withoutClearedFields(task);
        expect(snapshot).toEqual(final);
      }),
      { numRuns: 300 },
    );
  });
});

describe('restart', () => {
  it('takes a task nothing holds straight to QUEUED, and one with a start time ahead to PENDING, each in one change', async () => {
    const { scheduler: tasks, runner } = scheduler();
    const seen: string[] = [];
    tasks.on('change', (task) => seen.push(`${task.id} ${task.state}`));
    tasks.submit(spec(), 'free');
    tasks.submit(spec({ start_at: Date.now() + 3_600_000 }), 'later');
    await settle();
    runner.end('free', result());
    await tasks.cancel(tasks.get('later'));
    await settle();
    await tasks.setPaused(true); // so that the restarted task stays QUEUED
    seen.length = 0;
    tasks.restart(tasks.get('free'));
    tasks.restart(tasks.get('later'));
    expect(seen).toEqual(['free QUEUED', 'later PENDING']);
  });
});
