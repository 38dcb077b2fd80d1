import type { Command } from 'commander';
import type { GroupInfo } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { formatTable } from '../format.js';
import { integerOption } from '../options.js';
import { paint, useColour } from '../terminal.js';

/** `groups`, `set-group`, `pause` and `resume`: groups of tasks with their own limits. */

const GROUP_HEADER = ['GROUP', 'CONCURRENCY', 'RUNNING', 'QUEUED', 'STATUS'];

export function formatGroups(groups: GroupInfo[], colour = useColour()): string {
  const rows = groups.map((group) => [group.name, String(group.concurrency), String(group.running), String(group.queued), group.paused ? 'paused' : 'running']);
  const painted = (cell: string, row: number, column: number) => {
    if (!colour) return cell;
    if (row < 0) return paint(cell, 'bold');
    return column === 4 ? paint(cell, groups[row]!.paused ? 'yellow' : 'green') : cell;
  };
  return formatTable(GROUP_HEADER, rows, undefined, painted).join('\n');
}

export function groupsCommand(): Command {
  return clientCommand('groups', 'list the groups: their concurrency, what they run and queue, and whether they are paused')
    .action(clientAction(async ({ flags, connect }) => {
      const client = await connect();
      const groups = await client.groups();
      printResult(flags, { groups }, () => formatGroups(groups));
    }));
}

export function setGroupCommand(): Command {
  return clientCommand('set-group', 'make a group, or change how many of its tasks run at once (takes effect at once)')
    .argument('<name>', 'the group (1..128 of A-Za-z0-9._:-); "default" is where tasks go without --group')
    .argument('<concurrency>', 'how many of its tasks may run at once', integerOption(1))
    .addHelpText('after', [
      '',
      'A lower limit kills nothing: the group starts nothing new until it runs fewer.',
      '',
      'Examples:',
      '  task-manager set-group gpu 1',
      '  task-manager submit --group gpu -- python train.py',
      '  task-manager set-group default 8',
    ].join('\n'))
    .action(clientAction<object, [string, number]>(async ({ flags, connect }, name, concurrency) => {
      const client = await connect();
      const group = await client.setGroup(name, concurrency);
      printResult(flags, { group }, () => formatGroups([group]));
    }));
}

/** pueue's `parallel N [-g GROUP]`: the same as `set-group`, the group last and `default` unless named. */
export function parallelCommand(): Command {
  return clientCommand('parallel', 'set how many tasks of a group (default: "default") run at once')
    .argument('<concurrency>', 'how many of its tasks may run at once', integerOption(1))
    .option('-g, --group <name>', 'the group (made if it does not exist)', 'default')
    .addHelpText('after', '\nExamples:\n  task-manager parallel 4\n  task-manager parallel 1 --group gpu')
    .action(clientAction<{ group: string }, [number]>(async ({ flags, connect }, concurrency) => {
      const client = await connect();
      const group = await client.setGroup(flags.group, concurrency);
      printResult(flags, { group }, () => formatGroups([group]));
    }));
}

/** `pause` or `resume`: one group, or all of them. */
function pauseCommand(paused: boolean): Command {
  const name = paused ? 'pause' : 'resume';
  const description = paused
    ? 'start no new task in a group, or in every group (running tasks go on)'
    : 'let a paused group, or every group, start tasks again';
  return clientCommand(name, description)
    .argument('[group]', 'the group; without it, every group')
    .addHelpText('after', `\nExamples:\n  task-manager ${name}\n  task-manager ${name} gpu`)
    .action(clientAction<object, [string | undefined]>(async ({ flags, connect }, group) => {
      const client = await connect();
      const groups = paused ? await client.pause(group) : await client.resume(group);
      const payload = group === undefined ? { groups } : { group: groups[0] };
      printResult(flags, payload, () => formatGroups(groups));
    }));
}

export const pauseGroupCommand = () => pauseCommand(true);
export const resumeGroupCommand = () => pauseCommand(false);
