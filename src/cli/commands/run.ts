import type { Command } from 'commander';
import type { TaskManagerClient } from '../../client/client.js';
import { EXIT, type TaskRecord } from '../../protocol/index.js';
import { clientAction, clientCommand, describeEnd, printJson, taskExitCode } from '../client-command.js';
import { addTaskSpecOptions, taskSpecFrom, type TaskSpecFlags } from '../task-spec-options.js';

export function runCommand(): Command {
  return addTaskSpecOptions(clientCommand('run', 'run a task, print its output and exit with its exit code'))
    .addHelpText('after', [
      '',
      'The task\'s stdout and stderr are printed when it has finished. The exit code is',
      'the task\'s; without one: 124 timed out, 125 canceled, 127 could not start, 128+N signal N.',
      'Ctrl-C cancels the task.',
      '',
      'Examples:',
      '  task-manager run -- echo hi',
      '  task-manager run --timeout-ms 5000 --shell \'echo hi | wc -c\'',
    ].join('\n'))
    .action(clientAction<TaskSpecFlags, [string[]]>(async ({ flags, connect }, words) => {
      const spec = taskSpecFrom(flags, words);
      const client = await connect();
      const interrupt = cancelOnInterrupt(client);
      // submit, then wait (rather than the `run` op) so that the id is known while the task runs: Ctrl-C needs it
      const submitted = await client.submit(spec);
      interrupt.follow(submitted.task.id);
      const { task } = await client.wait(submitted.task.id);
      const payload = submitted.duplicate ? { task, duplicate: true as const } : { task };
      if (flags.json) printJson(payload);
      else printOutcome(task, submitted.duplicate === true);
      if (interrupt.interrupted) return EXIT.interrupted;
      return taskExitCode(task);
    }));
}

/** The task's own output on our stdout and stderr, and a note on stderr when the exit code does not tell what happened. */
function printOutcome(task: TaskRecord, duplicate: boolean): void {
  process.stdout.write(task.stdout ?? '');
  process.stderr.write(task.stderr ?? '');
  const notes: string[] = [];
  if (duplicate) notes.push(`task ${task.id} had been submitted before with this spec; this is its result`);
  const end = describeEnd(task);
  if (end) notes.push(end);
  if (task.stdout_truncated || task.stderr_truncated) notes.push(`the output was cut at max_output_bytes (--max-output-bytes)`);
  for (const note of notes) console.error(`task-manager: ${note}`);
}

/**
 * Ctrl-C cancels the task, as it would stop a program run in the foreground;
 * the canceled record is then printed as usual. A second Ctrl-C quits at once.
 */
function cancelOnInterrupt(client: TaskManagerClient) {
  let taskId: string | undefined;
  let interrupted = false;
  const cancel = () => {
    if (taskId === undefined) return;
    // NOT_CANCELABLE means the task finished meanwhile; the wait reports that
    client.cancel(taskId).catch(() => undefined);
  };
  process.on('SIGINT', () => {
    if (interrupted) process.exit(EXIT.interrupted);
    interrupted = true;
    console.error('task-manager: canceling the task (Ctrl-C again to quit without waiting)');
    cancel();
  });
  return {
    /** the task to cancel on Ctrl-C, once the daemon has given its id */
    follow(id: string) {
      taskId = id;
      if (interrupted) cancel();
    },
    get interrupted() {
      return interrupted;
    },
  };
}
