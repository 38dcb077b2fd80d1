import { TASK_STATES, type Counts, type TaskRecord, type TaskState } from '../protocol/index.js';
import { formatClock, formatDuration, formatKeyValues, formatTable } from './format.js';
import { paint, type Colour } from './terminal.js';

/** The colour of each state in tables on a terminal. */
const STATE_COLOURS: Record<TaskState, Colour> = {
  PENDING: 'grey',
  QUEUED: 'blue',
  RUNNING: 'cyan',
  COMPLETED: 'green',
  FAILED: 'red',
  CANCELED: 'yellow',
};

/** Words that a POSIX shell would read back unchanged. */
const SHELL_SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

const shellQuote = (word: string) => (SHELL_SAFE.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`);

/** The task's command as one line: a shell string as is, an argv quoted as a shell would need it. */
export function describeCommand(task: TaskRecord): string {
  return commandText(task).replace(/\r?\n/g, '⏎');
}

function commandText(task: TaskRecord): string {
  const args = (task.args ?? []).map(shellQuote);
  if (task.script) return [`<${task.script.lang} script>`, ...args].join(' ');
  if (task.cmd === null) return '-';
  if (typeof task.cmd === 'string') return task.cmd;
  return [...task.cmd.map(shellQuote), ...args].join(' ');
}

/** How the last attempt ended: its exit code, or the signal that ended it. */
const describeExit = (task: TaskRecord) => (task.exit_code !== null ? String(task.exit_code) : task.signal ?? '-');

/** The last attempt's wall time; for a running task, the time so far. */
function describeDuration(task: TaskRecord, now: number): string {
  if (task.duration_ms !== null) return formatDuration(task.duration_ms);
  if (task.state === 'RUNNING' && task.started_at) return formatDuration(now - Date.parse(task.started_at));
  return '-';
}

const describeAttempts = (task: TaskRecord) => `${task.attempts}/${task.max_attempts}`;

const TASK_TABLE_HEADER = ['ID', 'STATE', 'GROUP', 'PRI', 'ATTEMPTS', 'EXIT', 'DURATION', 'CMD'];

/** The task table of `list` and `watch`, the command column cut to `maxWidth`; `colour`: states in colour, the header bold. */
export function formatTaskTable(tasks: TaskRecord[], maxWidth: number | undefined, now = Date.now(), colour = false): string[] {
  const rows = tasks.map((task) => [
    task.id,
    task.state,
    task.group,
    String(task.priority),
    describeAttempts(task),
    describeExit(task),
    describeDuration(task, now),
    describeCommand(task),
  ]);
  if (!colour) return formatTable(TASK_TABLE_HEADER, rows, maxWidth);
  return formatTable(TASK_TABLE_HEADER, rows, maxWidth, (cell, row, column) => {
    if (row < 0) return paint(cell, 'bold');
    return column === 1 ? paint(cell, STATE_COLOURS[tasks[row]!.state]) : cell;
  });
}

/** A record as `key  value` lines, for `status`, `wait`, `cancel` and `submit`. */
export function formatTaskSummary(task: TaskRecord): string {
  const truncated = [task.stdout_truncated && 'stdout', task.stderr_truncated && 'stderr'].filter(Boolean);
  return formatKeyValues([
    ['id', task.id],
    ['state', task.state],
    ['cmd', describeCommand(task)],
    ['exit code', task.exit_code === null ? '-' : String(task.exit_code)],
    ['signal', task.signal ?? undefined],
    ['timed out', task.timed_out ? 'yes' : undefined],
    ['attempts', describeAttempts(task) + (task.interrupted ? ` (${task.interrupted} interrupted)` : '')],
    ['duration', describeDuration(task, Date.now())],
    ['error', task.error ? `${task.error.code}: ${task.error.message}` : undefined],
    ['group', task.group],
    ['priority', String(task.priority)],
    ['restarts', task.restarts > 0 ? String(task.restarts) : undefined],
    ['depends on', task.depends_on.length > 0 ? task.depends_on.join(', ') : undefined],
    ['created', task.created_at],
    ['runs at', task.run_at],
    ['started', task.started_at],
    ['finished', task.finished_at],
    ['truncated', truncated.length > 0 ? `${truncated.join(' and ')} (max_output_bytes)` : undefined],
  ]);
}

/** The task's stdout and stderr under headings, for `status --output` and `wait --output`. */
export function formatTaskOutput(task: TaskRecord): string {
  const block = (name: string, text = '') => `--- ${name} ---\n${text}${text === '' || text.endsWith('\n') ? '' : '\n'}`;
  return `${block('stdout', task.stdout)}${block('stderr', task.stderr)}`.trimEnd();
}

/** One line about a task's new state, for `watch` when its output is not a terminal. */
export function formatStateChange(task: TaskRecord, at = new Date()): string {
  const details: string[] = [];
  if (task.state === 'RUNNING') details.push(`attempt ${describeAttempts(task)}`);
  if (task.state === 'PENDING' && task.run_at) details.push(`until ${task.run_at}`);
  if (task.state === 'PENDING' && !task.run_at && task.depends_on.length > 0) details.push(`after ${task.depends_on.join(', ')}`);
  if (task.state === 'COMPLETED' || task.state === 'FAILED') details.push(`exit ${describeExit(task)} in ${describeDuration(task, at.getTime())}`);
  if (task.error && task.state !== 'COMPLETED') details.push(`(${task.error.code})`);
  return [formatClock(at), task.state.padEnd(9), task.id, ...details, '·', describeCommand(task)].join(' ');
}

/** `PENDING 0  QUEUED 14  RUNNING 10  COMPLETED 3  FAILED 0  CANCELED 0`. */
export function formatCounts(counts: Counts): string {
  return TASK_STATES.map((state) => `${state} ${counts[state]}`).join('  ');
}
