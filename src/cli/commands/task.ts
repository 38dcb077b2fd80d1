import type { Command } from 'commander';
import type { TaskRecord } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult, taskExitCode, type ClientFlags } from '../client-command.js';
import { formatDuration } from '../format.js';
import { integerOption } from '../options.js';
import { formatTaskOutput, formatTaskSummary } from '../task-format.js';

interface OutputFlags {
  output?: boolean;
}

/** A subcommand about one task, named by the id argument. */
const oneTaskCommand = (name: string, description: string) => clientCommand(name, description).argument('<id>', 'the task\'s id');

const withOutputOption = (command: Command) => command.option('--output', 'also print the task\'s stdout and stderr');

function printTask(flags: ClientFlags & OutputFlags, payload: { task: TaskRecord }, note?: string): void {
  printResult(flags, payload, () => [formatTaskSummary(payload.task), flags.output ? formatTaskOutput(payload.task) : undefined, note]
    .filter((part) => part !== undefined)
    .join('\n'));
}

export function statusCommand(): Command {
  return withOutputOption(oneTaskCommand('status', 'show a task\'s state and result'))
    .action(clientAction<OutputFlags, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      printTask(flags, { task: await client.status(id) });
    }));
}

export function waitCommand(): Command {
  return withOutputOption(oneTaskCommand('wait', 'wait until a task has finished, then show it'))
    .option('--timeout-ms <ms>', 'stop waiting after this long (the task goes on) and show it as it is', integerOption(1))
    .action(clientAction<OutputFlags & { timeoutMs?: number }, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      const payload = await client.wait(id, flags.timeoutMs);
      const note = payload.waited_out ? `(still ${payload.task.state} after waiting ${formatDuration(flags.timeoutMs!)})` : undefined;
      printTask(flags, payload, note);
    }));
}

export function cancelCommand(): Command {
  return oneTaskCommand('cancel', 'cancel a task that has not finished (a running one is killed)')
    .action(clientAction<object, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      printTask(flags, { task: await client.cancel(id) });
    }));
}

export function followCommand(): Command {
  return oneTaskCommand('follow', 'print a task\'s output as it is written, until it ends; exits with its exit code')
    .action(clientAction<object, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      const task = await client.follow(id, (stream, data) => {
        if (flags.json) process.stdout.write(`${JSON.stringify({ event: 'output', id, stream, data })}\n`);
        else (stream === 'stdout' ? process.stdout : process.stderr).write(data);
      });
      if (flags.json) process.stdout.write(`${JSON.stringify({ task })}\n`);
      else if (task.error && task.error.code !== 'NONZERO_EXIT') console.error(`task-manager: task ${task.id} ${task.state}: ${task.error.code}: ${task.error.message}`);
      return taskExitCode(task);
    }));
}
