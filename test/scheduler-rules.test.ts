import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AttemptResult } from '../src/executor/index.js';
import { applyEntry, encodeEntry, tidy } from '../src/journal/replay.js';
import { SPEC_DEFAULTS, type TaskSpec } from '../src/protocol/index.js';
import { Scheduler, type AttemptRunner, type SchedulerOptions, type StoredTask } from '../src/scheduler/index.js';

/**
 * The Scheduler alone, with a journal and a runner of the test's own: the
 * journal lines it writes, replayed as recovery and compaction replay them.
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

  flushed(): Promise<void> {
    return Promise.resolve();
  }

  private record(line: string): void {
    this.lines.push(line);
    const tasks = this.scheduler?.snapshot() ?? [];
    this.states.push(new Map(tasks.map((task) => [task.id, JSON.stringify(task)])));
  }
}

const spec = (fields: Partial<TaskSpec> = {}): TaskSpec => ({ ...SPEC_DEFAULTS, cmd: ['true'], depends_on: [], ...fields });
const result = (fields: Partial<AttemptResult> = {}): AttemptResult => ({
  exit_code: 0,
  signal: null,
  timed_out: false,
  stdout: '',
  stderr: '',
  stdout_truncated: false,
  stderr_truncated: false,
  duration_ms: 1,
  error: null,
  ...fields,
});
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Attempts that end when the test says so; an attempt aborted before that never started. */
class ControlledRunner {
  private readonly pending = new Map<string, (result: AttemptResult) => void>();

  readonly run: AttemptRunner = ({ id }, signal, onSpawn) =>
    new Promise((resolve) => {
      signal.addEventListener('abort', () => resolve(undefined));
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
    ...options,
  });
  journal.scheduler = created;
  return { scheduler: created, journal, runner };
}

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
    runner.end('a', result({ stdout: 'a'.repeat(30) }));
    runner.end('retried', result({ exit_code: 1, error: { code: 'NONZERO_EXIT', message: 'exited 1' } }));
    await settle();
    runner.end('b', result({ stdout: 'b'.repeat(30) })); // drops a's output
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

    const lines = journal.lines.map((line) => JSON.parse(line) as unknown);
    const parsed = (state: Map<string, string>) => new Map([...state].map(([id, task]) => [id, JSON.parse(task) as StoredTask]));
    const final = parsed(journal.states.at(-1)!);
    expect(lines.map((line) => JSON.stringify(line))).toEqual(expect.arrayContaining([expect.stringContaining('"started_at":null'), expect.stringContaining('"drop":true')]));
    fc.assert(
      fc.property(fc.nat({ max: lines.length - 1 }), fc.array(fc.nat()), (instant, picks) => {
        // The tasks held at the instant, each as it was at some moment from then on (its last state if dropped since).
        const snapshot = new Map<string, StoredTask>();
        [...journal.states[instant]!.keys()].forEach((id, i) => {
          const later = journal.states.slice(instant).filter((state) => state.has(id));
          const moment = later[(picks[i] ?? 0) % later.length]!;
          snapshot.set(id, JSON.parse(moment.get(id)!));
        });
        for (const line of lines.slice(instant + 1)) expect(applyEntry(snapshot, line)).toBeUndefined();
        for (const task of snapshot.values()) tidy(task);
        expect(snapshot).toEqual(final);
      }),
      { numRuns: 300 },
    );
  });
});
