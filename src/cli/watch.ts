import { ConnectionError, type TaskManagerClient } from '../client/client.js';
import { type Counts, EXIT, type TaskRecord } from '../protocol/index.js';
import { printJson } from './client-command.js';
import { formatClock, truncate } from './format.js';
import { TaskBoard } from './task-board.js';
import { formatCounts, formatStateChange, formatTaskTable } from './task-format.js';
import { redraw, terminalHeight, terminalWidth, useColour } from './terminal.js';

export interface WatchOptions {
  /** `host:port`, for the heading */
  address: string;
  json: boolean;
  exitWhenIdle: boolean;
}

/** How `watch` shows the board: a live table on a terminal, lines elsewhere. */
interface View {
  /** a task is new to the board, or in another state */
  changed(task: TaskRecord): void;
  /** the board has been listed afresh (tasks may have left it unseen) */
  synced(): void;
  /** the watch ends; `idle` when it ends because nothing is left to do */
  stop(idle: boolean): void | Promise<void>;
  /** the connection is lost: stop drawing (a new watch takes over once reconnected) */
  abandon?(): void;
}

/**
 * Follows the daemon's unfinished tasks until Ctrl-C (or, with
 * `exitWhenIdle`, until none is left). Resolves with the exit code; rejects
 * with ConnectionError when the daemon goes away.
 */
export function watchTasks(client: TaskManagerClient, options: WatchOptions): Promise<number> {
  const board: TaskBoard = new TaskBoard((task) => view.changed(task));
  const view: View = options.json ? new JsonLog() : process.stdout.isTTY ? new LiveTable(board, client, options.address) : new ChangeLog();
  return new Promise<number>((resolve, rejectWatch) => {
    const onInterrupt = () => finish(false);
    const reject = (error: unknown) => {
      process.off('SIGINT', onInterrupt);
      view.abandon?.();
      rejectWatch(error);
    };
    let finished = false;
    const finish = (idle: boolean) => {
      if (finished) return; // events go on arriving while the view stops
      finished = true;
      // Ctrl-C is an interruption (130), as for run, wait and follow; idle is the end asked for.
      Promise.resolve(view.stop(idle)).then(() => resolve(idle ? EXIT.ok : EXIT.interrupted), reject);
    };
    let syncing: Promise<void> | undefined;
    let syncAgain = false;
    // events may come before the first list has: only then is an empty board news
    let listed = false;
    const exitIfIdle = () => {
      if (options.exitWhenIdle && listed && !syncing && board.isIdle()) finish(true);
    };
    // one sync at a time: a second one would mix up which records are fresh
    const sync = () => {
      if (syncing) {
        syncAgain = true;
        return;
      }
      syncing = board.sync(async (filter) => (await client.list(filter)).tasks).then(() => {
        syncing = undefined;
        listed = true;
        view.synced();
        if (syncAgain) {
          syncAgain = false;
          sync();
        } else exitIfIdle();
      }, reject);
    };

    client.on('task', (task) => {
      board.update(task);
      exitIfIdle();
    });
    // the daemon skipped events for us (we read too slowly): the board may be stale
    client.on('dropped', sync);
    client.once('close', () => reject(new ConnectionError('the daemon closed the connection')));
    process.once('SIGINT', onInterrupt);
    // subscribe before listing, so that no change falls between the two
    client.subscribe().then(sync, reject);
  });
}

/** Every change as the daemon's event line, for scripts (`--json`). */
class JsonLog implements View {
  changed(task: TaskRecord): void {
    printJson({ event: 'task', task });
  }

  synced(): void {}

  stop(): void {}
}

/** A line per change, for a pipe or a file. */
class ChangeLog implements View {
  changed(task: TaskRecord): void {
    process.stdout.write(`${formatStateChange(task)}\n`);
  }

  synced(): void {}

  stop(idle: boolean): void {
    if (idle) process.stdout.write(`${formatClock(new Date())} idle: nothing is pending, queued or running\n`);
  }
}

/** Redraw at most this often, however fast tasks change. */
const FRAME_MS = 100;
/** Redraw at least this often, for the clock and the durations of running tasks. */
const TICK_MS = 1000;
/** Lines of a frame other than task rows: heading, counts, blank, table header, "more", and the last newline. */
const FRAME_OVERHEAD_LINES = 6;

/** The board as a table redrawn in place on the terminal, with the daemon's counts above it. */
class LiveTable implements View {
  private counts: Counts | undefined;
  private concurrencyLimit: number | undefined;
  private countsStale = false;
  private counting = false;
  private drawTimer: NodeJS.Timeout | undefined;
  private lastDrawAt = 0;
  private readonly ticker = setInterval(() => this.scheduleDraw(), TICK_MS);

  constructor(
    private readonly board: TaskBoard,
    private readonly client: TaskManagerClient,
    private readonly address: string,
  ) {
    process.stdout.write('\x1b[2J'); // start on a clear screen; frames then overwrite each other
    process.stdout.on('resize', () => this.scheduleDraw());
    // stats, once, for the concurrency limit, which does not change while the daemon runs
    client.stats().then((stats) => {
      this.counts = stats.counts;
      this.concurrencyLimit = stats.concurrency.limit;
      this.scheduleDraw();
    }, () => undefined); // a lost connection is reported by the watch itself
    this.scheduleDraw();
  }

  changed(): void {
    this.countsStale = true;
    this.scheduleDraw();
  }

  synced(): void {
    this.scheduleDraw();
  }

  abandon(): void {
    clearInterval(this.ticker);
    clearTimeout(this.drawTimer);
  }

  /** The last frame, with counts as they are now rather than a frame ago. */
  async stop(): Promise<void> {
    clearInterval(this.ticker);
    clearTimeout(this.drawTimer);
    this.counts = (await this.client.count()).counts;
    redraw(this.frame(new Date()));
  }

  private scheduleDraw(): void {
    if (this.drawTimer) return;
    this.drawTimer = setTimeout(() => {
      this.drawTimer = undefined;
      this.draw();
    }, Math.max(0, this.lastDrawAt + FRAME_MS - Date.now()));
  }

  private draw(): void {
    this.lastDrawAt = Date.now();
    this.refreshCounts();
    redraw(this.frame(new Date(this.lastDrawAt)));
  }

  /** Asks for the counts again after changes, one request at a time; the answer brings a redraw. */
  private refreshCounts(): void {
    if (!this.countsStale || this.counting) return;
    this.countsStale = false;
    this.counting = true;
    this.client.count().then(
      ({ counts }) => {
        this.counts = counts;
        this.counting = false;
        this.scheduleDraw();
      },
      () => undefined,
    );
  }

  private frame(now: Date): string[] {
    const width = terminalWidth();
    const fitted = (line: string) => (width === undefined ? line : truncate(line, width));
    const slots = this.counts && this.concurrencyLimit !== undefined ? `${this.counts.RUNNING}/${this.concurrencyLimit} slots busy   ` : '';
    const heading = `task-manager ${this.address}   ${formatClock(now).slice(0, 8)}   ${slots}Ctrl-C quits`;
    const counts = this.counts ? formatCounts(this.counts) : 'counting…';
    const tasks = this.board.tasks();
    if (tasks.length === 0) return [heading, counts, '', 'nothing is pending, queued or running'].map(fitted);
    const shown = tasks.slice(0, Math.max(1, terminalHeight() - FRAME_OVERHEAD_LINES));
    // The table fits the width already, and its colour codes take none.
    const lines = [fitted(heading), fitted(counts), '', ...formatTaskTable(shown, width, now.getTime(), useColour())];
    if (shown.length < tasks.length) lines.push(fitted(`… and ${tasks.length - shown.length} more`));
    return lines;
  }
}
