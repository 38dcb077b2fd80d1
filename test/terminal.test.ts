import { afterEach, describe, expect, it, vi } from 'vitest';
import { taskExitCode } from '../src/cli/client-command.js';
import { formatTaskTable } from '../src/cli/task-format.js';
import { useColour } from '../src/cli/terminal.js';
import type { TaskRecord } from '../src/index.js';

/** When the CLI colours its tables (and that colour never moves a column), and the exit code a task's end gives. */

const terminal = { isTTY: true } as NodeJS.WriteStream;
const pipe = { isTTY: false } as NodeJS.WriteStream;

afterEach(() => vi.unstubAllEnvs());

describe('colours', () => {
  it('are used on a terminal, not in a pipe, nor with NO_COLOR or TERM=dumb', () => {
    vi.stubEnv('NO_COLOR', '');
    vi.stubEnv('TERM', 'xterm-256color');
    expect(useColour(terminal)).toBe(true);
    expect(useColour(pipe)).toBe(false);
    vi.stubEnv('NO_COLOR', '1');
    expect(useColour(terminal)).toBe(false);
    vi.stubEnv('NO_COLOR', '');
    vi.stubEnv('TERM', 'dumb');
    expect(useColour(terminal)).toBe(false);
  });

  it('paint states in a table whose columns line up as without them', () => {
    const task = (id: string, state: TaskRecord['state']) =>
      ({ id, state, cmd: 'true', group: 'default', priority: 0, attempts: 1, max_attempts: 1, exit_code: 0, signal: null, duration_ms: 1 }) as TaskRecord;
    const tasks = [task('a', 'COMPLETED'), task('bb', 'FAILED')];
    const plain = formatTaskTable(tasks, 80, 0, false);
    const coloured = formatTaskTable(tasks, 80, 0, true);
    expect(coloured[1]).toContain('\x1b[32mCOMPLETED');
    expect(coloured[2]).toContain('\x1b[31mFAILED');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the colour codes are what is removed
    expect(coloured.map((line) => line.replace(/\x1b\[\d+m/g, ''))).toEqual(plain);
  });
});

describe('taskExitCode', () => {
  const ended = (fields: Partial<TaskRecord>) => ({ state: 'FAILED', exit_code: null, signal: null, timed_out: false, error: null, ...fields }) as TaskRecord;

  it.each([
    ['completed', ended({ state: 'COMPLETED', exit_code: 0 }), 0],
    ['exit 7', ended({ exit_code: 7, error: { code: 'NONZERO_EXIT', message: '' } }), 7],
    ['timed out', ended({ exit_code: -1, timed_out: true, error: { code: 'TIMEOUT', message: '' } }), 124],
    ['canceled', ended({ state: 'CANCELED', signal: 'SIGTERM', error: { code: 'CANCELED', message: '' } }), 125],
    ['dependency failed', ended({ state: 'CANCELED', error: { code: 'DEPENDENCY_FAILED', message: '' } }), 125],
    ['not started', ended({ error: { code: 'SPAWN_FAILED', message: '' } }), 127],
    ['SIGKILL', ended({ signal: 'SIGKILL', error: { code: 'KILLED', message: '' } }), 137],
  ])('%s exits %d', (_what, task, code) => {
    expect(taskExitCode(task)).toBe(code);
  });
});
