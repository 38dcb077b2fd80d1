import { requestError } from '../protocol/index.js';
import type { TaskStore } from './task-store.js';
import { outputOnDisk, type Task, type TaskPatch } from './task.js';

export interface RetentionBounds {
  /** finished tasks kept before the oldest are dropped */
  keepFinished: number;
  /** output (stdout + stderr, in bytes) of finished tasks kept before the oldest outputs are dropped */
  keepOutputBytes: number;
  /** what the specs of unfinished and retained tasks may hold together (`specSize`); the oldest finished go first */
  maxSpecBytes: number;
}

/** Bytes of output a finished task keeps on disk. */
const outputSize = ({ stored }: Task) => (stored.output ? (stored.stdout_bytes ?? 0) + (stored.stderr_bytes ?? 0) : 0);

/**
 * Keeps finished tasks, their output, and what all specs hold within their
 * bounds: the task (or output) that finished longest ago goes first.
 * Unfinished tasks are never dropped; a spec that does not fit beside them
 * is refused.
 */
export class Retention {
  /** finished tasks, oldest first */
  private readonly finished = new Set<Task>();
  /** finished tasks that still keep output, oldest first, with its size */
  private readonly withOutput = new Map<Task, number>();
  private outputBytes = 0;
  /** what the specs of all tasks hold, and of the finished ones among them */
  private specBytes = 0;
  private finishedSpecBytes = 0;

  constructor(
    private readonly store: TaskStore,
    private readonly bounds: RetentionBounds,
    /** the output files of a dropped task or output are no longer referred to */
    private readonly discardOutput: (name: string) => void = () => undefined,
  ) {}

  /** A task is kept from now on (submitted, or read back at start). */
  kept(task: Task): void {
    this.specBytes += task.specBytes;
  }

  /**
   * Makes room for a spec of `bytes` by dropping the oldest finished tasks;
   * refuses, with nothing changed, when the unfinished tasks' specs alone
   * leave no room for it.
   */
  makeRoomForSpec(bytes: number): void {
    const bound = this.bounds.maxSpecBytes;
    const unfinished = this.specBytes - this.finishedSpecBytes;
    if (unfinished + bytes > bound) {
      throw requestError.QUEUE_FULL({ bound: '--max-spec-bytes', unfinishedSpecBytes: unfinished, specBytes: bytes, most: bound });
    }
    while (this.specBytes + bytes > bound) this.dropOldestFinished();
  }

  /** A task has finished: it is kept, and the oldest beyond the bounds go. */
  finishedNow(task: Task): void {
    this.finished.add(task);
    this.finishedSpecBytes += task.specBytes;
    const size = outputSize(task);
    if (size > 0) {
      this.withOutput.set(task, size);
      this.outputBytes += size;
    }
    while (this.finished.size > this.bounds.keepFinished) this.dropOldestFinished();
    for (const oldest of this.withOutput.keys()) {
      if (this.outputBytes <= this.bounds.keepOutputBytes || oldest === task) break;
      this.forgetOutput(oldest);
      this.discardOutput(oldest.stored.output!);
      const dropped: TaskPatch = { output: null, stdout_bytes: null, stderr_bytes: null, output_dropped: true };
      this.store.change(oldest, dropped);
    }
  }

  /** A finished task runs again (restart): it is no longer among the finished, nor is its output kept (its files go). */
  restarted(task: Task): void {
    if (this.finished.delete(task)) this.finishedSpecBytes -= task.specBytes;
    this.forgetOutput(task);
    this.discardFilesOf(task);
  }

  /** A finished task is forgotten on request (remove), its output files with it. */
  removed(task: Task): void {
    this.restarted(task);
    this.specBytes -= task.specBytes;
  }

  /** A task's spec changed (edit) to one of `bytes`: refused, with nothing changed, if it does not fit. */
  respecified(task: Task, bytes: number): void {
    const grown = bytes - task.specBytes;
    if (grown > 0) this.makeRoomForSpec(grown);
    this.specBytes += grown;
    task.specBytes = bytes;
  }

  /** Forgets the task that finished longest ago. */
  private dropOldestFinished(): void {
    const oldest = this.finished.values().next().value!;
    this.finished.delete(oldest);
    this.forgetOutput(oldest);
    this.discardFilesOf(oldest);
    this.specBytes -= oldest.specBytes;
    this.finishedSpecBytes -= oldest.specBytes;
    this.store.remove(oldest);
  }

  /** The task's output files are no longer referred to (a task known to have none costs nothing). */
  private discardFilesOf(task: Task): void {
    const output = outputOnDisk(task.stored);
    if (output) this.discardOutput(output);
  }

  private forgetOutput(task: Task): void {
    this.outputBytes -= this.withOutput.get(task) ?? 0;
    this.withOutput.delete(task);
  }
}
