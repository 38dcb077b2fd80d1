import type { Command } from 'commander';
import type { TaskManagerClient } from '../../client/client.js';
import { EXIT, type TaskRecord } from '../../protocol/index.js';
import { clientAction, clientCommand, describeEnd, printResult, taskExitCode, type ClientFlags } from '../client-command.js';
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
  return withOutputOption(oneTaskCommand('wait', 'wait until a task has finished, show it, and exit as it did'))
    .option('--timeout-ms <ms>', 'stop waiting after this long (the task goes on) and show it as it is', integerOption(1))
    .addHelpText('after', [
      '',
      'Exit codes: 0 the task completed; its own exit code when it failed with one;',
      `${EXIT.timedOut} it timed out; ${EXIT.canceled} it was canceled; ${EXIT.notStarted} its program could not start;`,
      `128+N a signal N ended it; ${EXIT.waitedOut} --timeout-ms ran out first (the task goes on).`,
      '',
      'Example: task-manager wait build && ./deploy',
    ].join('\n'))
    .action(clientAction<OutputFlags & { timeoutMs?: number }, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      const payload = await client.wait(id, flags.timeoutMs);
      const note = payload.waited_out ? `(still ${payload.task.state} after waiting ${formatDuration(flags.timeoutMs!)})` : undefined;
      printTask(flags, payload, note);
      return payload.waited_out ? EXIT.waitedOut : taskExitCode(payload.task);
    }));
}

/** A subcommand that sends one op about a task and says in a line what became of it. */
function taskOpCommand(name: string, description: string, op: (client: TaskManagerClient, id: string) => Promise<TaskRecord>, said: (task: TaskRecord) => string) {
  return oneTaskCommand(name, description).action(
    clientAction<object, [string]>(async ({ flags, connect }, id) => {
      const task = await op(await connect(), id);
      printResult(flags, { task }, () => said(task));
    }),
  );
}

export const removeCommand = (): Command =>
  taskOpCommand(
    'remove',
    'forget a task (one not finished is canceled first, and its dependents with it)',
    (client, id) => client.remove(id),
    (task) => `removed ${task.id} (it was ${task.state})`,
  ).alias('rm');

export const restartCommand = (): Command =>
  taskOpCommand(
    'restart',
    'run a finished task again under its id (with the tasks canceled because it failed)',
    (client, id) => client.restart(id),
    (task) => `${task.id} ${task.state} (restart ${task.restarts})`,
  ).addHelpText('after', '\nExample: task-manager restart build   # then: task-manager follow build');

export function logCommand(): Command {
  return oneTaskCommand('log', 'print the output a task kept (of its current or last attempt)')
    .addHelpText('after', '\nstdout goes to stdout and stderr to stderr, as the task wrote them.')
    .action(clientAction<object, [string]>(async ({ flags, connect }, id) => {
      const client = await connect();
      const task = await client.status(id);
      if (flags.json) {
        printResult(flags, { task }, () => '');
        return;
      }
      process.stdout.write(task.stdout ?? '');
      process.stderr.write(task.stderr ?? '');
      const notes = [
        task.output_dropped && `the output of task ${task.id} was dropped to stay within --keep-output-bytes`,
        (task.stdout_truncated || task.stderr_truncated) && 'the output was cut at max_output_bytes',
        task.state === 'RUNNING' && `task ${task.id} is still running: this is its output so far (task-manager follow ${task.id} goes on with it)`,
      ];
      for (const note of notes) if (note) console.error(`task-manager: ${note}`);
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
      else if (describeEnd(task)) console.error(`task-manager: ${describeEnd(task)}`);
      return taskExitCode(task);
    }));
}
