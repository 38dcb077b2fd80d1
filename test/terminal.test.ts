import { afterEach, describe, expect, it, vi } from 'vitest';
import { formatTaskTable } from '../src/cli/task-format.js';
import { useColour } from '../src/cli/terminal.js';
import type { TaskRecord } from '../src/index.js';

/** When the CLI colours its tables, and that colour never moves a column. */

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
