import { type FSWatcher, rmSync, watch } from 'node:fs';
import { mkdir, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutputPaths } from '../executor/index.js';
import type { Journal } from '../journal/index.js';
import { outputName, type StoredTask, type Task, type TaskPatch } from '../scheduler/index.js';
import { OutputText } from './answer.js';
import type { OutputStream } from './context.js';

export type { OutputStream };

export const OUTPUT_STREAMS: readonly OutputStream[] = ['stdout', 'stderr'];

/**
 * The output files of attempts, in `<data dir>/output/`, named
 * `<id>.<attempt>.<interruptions>.stdout|stderr`. The executor writes
 * them; the journal records only their name and the bytes kept. A file is
 * removed once the journal no longer refers to it (a later attempt,
 * retention), but not while an answer or a `follow` is reading it.
 */
export class OutputFiles {
  private readonly readers = new Map<string, number>();
  private readonly discarded = new Set<string>();
  /** names whose discard waits for the journal: a new attempt taking a name calls its discard off */
  private readonly discarding = new Map<string, object>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private watcher: FSWatcher | undefined;

  private constructor(
    readonly dir: string,
    private readonly journal: Pick<Journal, 'flushed'>,
  ) {}

  /**
   * Makes the folder, moves output that earlier versions kept in the journal
   * into files, and removes files that no task refers to (attempts that a
   * crash cut short before their name was journaled, outputs dropped just
   * before a crash).
   */
  static async open(dataDir: string, tasks: StoredTask[], journal: Pick<Journal, 'put' | 'flushed'>, sync: boolean): Promise<OutputFiles> {
    const files = new OutputFiles(join(dataDir, 'output'), journal);
    await mkdir(files.dir, { recursive: true, mode: 0o700 });
    for (const task of tasks) {
      if (task.stdout === undefined && task.stderr === undefined) continue;
      const patch = await files.moveInline(task, sync);
      Object.assign(task, patch);
      for (const field of ['stdout', 'stderr'] as const) delete task[field];
      journal.put(task.id, { ...patch, stdout: null, stderr: null } as unknown as TaskPatch);
    }
    const referred = new Set(tasks.flatMap((task) => task.output ?? []));
    for (const file of await readdir(files.dir)) {
      const name = file.replace(/\.(stdout|stderr)$/, '');
      if (!referred.has(name)) await unlink(join(files.dir, file)).catch(() => undefined);
    }
    await journal.flushed();
    return files;
  }

  /** What stands for a task's output in an answer: text read from its files as the answer is written. */
  textOf({ stored, spec }: Task): { stdout: OutputText | ''; stderr: OutputText | '' } {
    const name = stored.output;
    if (!name) return { stdout: '', stderr: '' };
    // A stream known to be empty has no file to open (most tasks' stderr, and both streams of many).
    const text = (stream: OutputStream) => {
      const bytes = stored[`${stream}_bytes`];
      return bytes === 0 ? '' : new OutputText(this.path(name, stream), bytes, spec.max_output_bytes, this.hold(name));
    };
    return { stdout: text('stdout'), stderr: text('stderr') };
  }

  /**
   * Where an attempt starting now writes. A name can come back: the id of a
   * removed task used again. Its discard is then called off, so that it
   * cannot delete the new files, and the old files go now: an attempt
   * creates a file only for a stream it writes to, and one that stays empty
   * must not show what the old task wrote.
   */
  paths(name: string): OutputPaths {
    const paths = { stdout: this.path(name, 'stdout'), stderr: this.path(name, 'stderr') };
    if (this.discarding.delete(name) || this.discarded.delete(name)) {
      for (const path of Object.values(paths)) rmSync(path, { force: true });
    }
    return paths;
  }

  path(name: string, stream: OutputStream): string {
    // Joined by hand, not with path.join: an output name holds no "/" (see outputName), and this runs for every start.
    return `${this.dir}/${name}.${stream}`;
  }

  /** Keeps the files of `name` on disk until the returned function is called. */
  hold(name: string): () => void {
    this.readers.set(name, (this.readers.get(name) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = this.readers.get(name)! - 1;
      if (left > 0) return void this.readers.set(name, left);
      this.readers.delete(name);
      if (this.discarded.delete(name)) this.remove(name);
    };
  }

  /** The journal no longer refers to these files: removed once that is on disk and nobody reads them. */
  discard(name: string): void {
    const token = {};
    this.discarding.set(name, token);
    void this.journal.flushed().then(
      () => {
        if (this.discarding.get(name) !== token) return;
        this.discarding.delete(name);
        if (this.readers.has(name)) this.discarded.add(name);
        else this.remove(name);
      },
      () => undefined, // a failed journal may still need them at the next start
    );
  }

  /** Calls `changed` whenever an output file of task `id` is written to, until the returned function is called. */
  watch(id: string, changed: () => void): () => void {
    const callbacks = this.watchers.get(id) ?? new Set();
    this.watchers.set(id, callbacks);
    callbacks.add(changed);
    // One inotify watch on the folder while anyone follows; none otherwise, as writes are many.
    this.watcher ??= this.startWatching();
    return () => {
      callbacks.delete(changed);
      if (callbacks.size === 0) this.watchers.delete(id);
      if (this.watchers.size === 0) {
        this.watcher?.close();
        this.watcher = undefined;
      }
    };
  }

  private startWatching(): FSWatcher | undefined {
    try {
      const watcher = watch(this.dir, { persistent: false }, (_event, file) => {
        const id = file?.toString().replace(/\.\d+\.\d+\.(stdout|stderr)$/, '');
        if (id) for (const changed of this.watchers.get(id) ?? []) changed();
      });
      watcher.on('error', () => undefined); // followers poll as well
      return watcher;
    } catch {
      return undefined; // no inotify left: followers poll
    }
  }

  private remove(name: string): void {
    for (const stream of OUTPUT_STREAMS) void unlink(this.path(name, stream)).catch(() => undefined);
  }

  private async moveInline(task: StoredTask, sync: boolean): Promise<TaskPatch> {
    const name = task.output ?? outputName(task);
    const patch: TaskPatch = { output: name };
    for (const stream of OUTPUT_STREAMS) {
      const bytes = Buffer.from(task[stream] ?? '');
      patch[`${stream}_bytes`] = bytes.length;
      if (bytes.length === 0) continue;
      const file = await open(this.path(name, stream), 'w', 0o600);
      try {
        await file.writeFile(bytes);
        if (sync) await file.datasync();
      } finally {
        await file.close();
      }
    }
    return patch;
  }
}
