import { InvalidArgumentError, Option, type Command } from 'commander';
import { TASK_STATES, type TaskState } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { integerOption } from '../options.js';
import { formatTaskTable } from '../task-format.js';
import { terminalWidth, useColour } from '../terminal.js';

interface ListFlags {
  state?: TaskState;
  limit?: number;
  after?: string;
  oldest?: boolean;
  group?: string;
}

export function taskState(value: string): TaskState {
  const state = TASK_STATES.find((state) => state === value.toUpperCase());
  if (state === undefined) throw new InvalidArgumentError(`expected one of ${TASK_STATES.join(', ')}.`);
  return state;
}

export function listCommand(): Command {
  return clientCommand('list', 'list tasks, newest first')
    .addOption(new Option('--state <state>', `only tasks in this state (${TASK_STATES.join(', ')})`).argParser(taskState))
    .option('--limit <n>', 'at most this many tasks (the daemon\'s default: 100)', integerOption(1))
    .option('--oldest', 'oldest first instead')
    .option('--group <name>', 'only tasks of this group')
    .option('--after <id>', 'start after this task, in the order shown (the next page)')
    .addHelpText('after', '\nExamples:\n  task-manager list --state FAILED\n  task-manager list --oldest --limit 20 --after build')
    .action(clientAction<ListFlags>(async ({ flags, connect }) => {
      const client = await connect();
      // options not given are undefined, which JSON leaves out of the request
      const order = flags.oldest ? 'oldest' : 'newest';
      const payload = await client.list({ state: flags.state, limit: flags.limit, after: flags.after, order, group: flags.group });
      printResult(flags, payload, () => {
        const { tasks, total } = payload;
        if (tasks.length === 0) return `no ${[flags.state, 'tasks', flags.group && `in group ${flags.group}`].filter(Boolean).join(' ')}`;
        const lines = formatTaskTable(tasks, terminalWidth(), Date.now(), useColour());
        if (total > tasks.length) {
          const same = [
            flags.oldest && '--oldest',
            flags.state && `--state ${flags.state}`,
            flags.group && `--group ${flags.group}`,
            flags.limit && `--limit ${flags.limit}`,
          ].filter(Boolean);
          lines.push(`${tasks.length} of ${total} shown, ${order} first; the next page: task-manager list ${[...same, `--after ${tasks.at(-1)!.id}`].join(' ')}`);
        }
        return lines.join('\n');
      });
    }));
}
