import { InvalidArgumentError, Option, type Command } from 'commander';
import { TASK_STATES, type TaskState } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { integerOption } from '../options.js';
import { formatTaskTable } from '../task-format.js';
import { terminalWidth } from '../terminal.js';

interface ListFlags {
  state?: TaskState;
  limit?: number;
  after?: string;
}

function taskState(value: string): TaskState {
  const state = TASK_STATES.find((state) => state === value.toUpperCase());
  if (state === undefined) throw new InvalidArgumentError(`expected one of ${TASK_STATES.join(', ')}.`);
  return state;
}

export function listCommand(): Command {
  return clientCommand('list', 'list tasks, oldest first')
    .addOption(new Option('--state <state>', `only tasks in this state (${TASK_STATES.join(', ')})`).argParser(taskState))
    .option('--limit <n>', 'at most this many tasks (the daemon\'s default: 100)', integerOption(1))
    .option('--after <id>', 'start after this task (to page on)')
    .action(clientAction<ListFlags>(async ({ flags, connect }) => {
      const client = await connect();
      // options not given are undefined, which JSON leaves out of the request
      const payload = await client.list({ state: flags.state, limit: flags.limit, after: flags.after });
      printResult(flags, payload, () => {
        const { tasks, total } = payload;
        if (tasks.length === 0) return flags.state ? `no ${flags.state} tasks` : 'no tasks';
        const lines = formatTaskTable(tasks, terminalWidth());
        if (total > tasks.length) lines.push(`${tasks.length} of ${total} shown; the next page: --after ${tasks.at(-1)!.id}`);
        return lines.join('\n');
      });
    }));
}
