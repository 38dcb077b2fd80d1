import { InvalidArgumentError, Option, type Command } from 'commander';
import { TASK_STATES, isTerminal, type RequestFields, type TaskRecord, type TaskState } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { plural } from '../format.js';
import { UsageError, integerOption } from '../options.js';
import { checkAsFlags } from '../task-spec-options.js';

interface EditFlags {
  shell?: string;
  priority?: number;
  startAt?: string;
  delayMs?: number;
  group?: string;
}

const anyInteger = integerOption(Number.MIN_SAFE_INTEGER);

export function editCommand(): Command {
  return clientCommand('edit', 'change a task that has not started: its command, priority, start time or group')
    .argument('<id>', 'the task\'s id')
    .argument('[command...]', 'a new program and its arguments, run without a shell (put -- before it)')
    .option('--shell <command>', 'a new command line for /bin/sh -c instead')
    .option('--priority <n>', 'a new priority (higher starts first)', anyInteger)
    .option('--start-at <time>', 'start no earlier than this ISO-8601 time or epoch milliseconds')
    .option('--delay-ms <ms>', 'start no earlier than this long from now (0: now)', integerOption(0))
    .option('--group <name>', 'move it to this group')
    .addHelpText('after', [
      '',
      'Only a PENDING or QUEUED task can be edited (one waiting for a retry too: its next attempt runs as edited).',
      '',
      'Examples:',
      '  task-manager edit nightly --priority 10 --group gpu',
      '  task-manager edit nightly -- make backup-fast',
    ].join('\n'))
    .action(clientAction<EditFlags, [string, string[]]>(async ({ flags, connect }, id, words) => {
      if (flags.shell !== undefined && words.length > 0) throw new UsageError('give the new command either with --shell or after --, not both');
      if (flags.startAt !== undefined && flags.delayMs !== undefined) throw new UsageError('give --start-at or --delay-ms, not both');
      const changes: Omit<RequestFields<'edit'>, 'id'> = {};
      if (flags.shell !== undefined) changes.cmd = flags.shell;
      if (words.length > 0) changes.cmd = words;
      if (flags.priority !== undefined) changes.priority = flags.priority;
      if (flags.startAt !== undefined) changes.start_at = /^\d+$/.test(flags.startAt) ? Number(flags.startAt) : flags.startAt;
      if (flags.delayMs !== undefined) changes.delay_ms = flags.delayMs;
      if (flags.group !== undefined) changes.group = flags.group;
      if (Object.keys(changes).length === 0) {
        throw new UsageError('nothing to change: give a new command (after -- or with --shell), --priority, --start-at, --delay-ms or --group');
      }
      checkAsFlags({ op: 'edit', id, ...changes }, { id: 'the id' });
      const client = await connect();
      const task = await client.edit(id, changes);
      printResult(flags, { task }, () => `${task.id} ${task.state} (edited)`);
    }));
}

const FINISHED = TASK_STATES.filter(isTerminal);

interface CleanFlags {
  state?: TaskState;
  group?: string;
}

function finishedState(value: string): TaskState {
  const state = FINISHED.find((finished) => finished === value.toUpperCase());
  if (state === undefined) throw new InvalidArgumentError(`clean removes finished tasks only: expected one of ${FINISHED.join(', ')}.`);
  return state;
}

export function cleanCommand(): Command {
  return clientCommand('clean', 'remove finished tasks (all of them, or those of one state or group)')
    .addOption(new Option('--state <state>', `only tasks in this state (${FINISHED.join(', ')})`).argParser(finishedState))
    .option('--group <name>', 'only tasks of this group')
    .addHelpText('after', '\nExamples:\n  task-manager clean\n  task-manager clean --state COMPLETED --group gpu')
    .action(clientAction<CleanFlags>(async ({ flags, connect }) => {
      const client = await connect();
      const removed: TaskRecord[] = [];
      for (const state of flags.state ? [flags.state] : FINISHED) {
        // Removed tasks leave the list: the first page again, until none is left.
        for (;;) {
          const { tasks } = await client.list({ state, group: flags.group, limit: 1000 });
          if (tasks.length === 0) break;
          await Promise.all(tasks.map((task) => client.remove(task.id).then((record) => removed.push(record), ignoreGone)));
        }
      }
      printResult(flags, { removed: removed.map((task) => task.id) }, () => `removed ${plural(removed.length, 'finished task')}`);
    }));
}

/** A task that went meanwhile (retention, another clean) is no reason to stop. */
function ignoreGone(error: { code?: string }): void {
  if (error.code !== 'NOT_FOUND') throw error;
}
