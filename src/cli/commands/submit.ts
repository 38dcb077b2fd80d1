import type { Command } from 'commander';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { addTaskSpecOptions, taskSpecFrom, type TaskSpecFlags } from '../task-spec-options.js';

export function submitCommand(): Command {
  return addTaskSpecOptions(clientCommand('submit', 'queue a task and print its id and state (the task runs in the background)'))
    .addHelpText('after', '\nExamples:\n  task-manager submit -- sleep 10\n  task-manager submit --id nightly --retries 2 --shell \'make backup\'')
    .action(clientAction<TaskSpecFlags, [string[]]>(async ({ flags, connect }, words) => {
      const spec = taskSpecFrom(flags, words);
      const client = await connect();
      const payload = await client.submit(spec);
      printResult(flags, payload, () => `${payload.task.id} ${payload.task.state}${payload.duplicate ? ' (submitted before with this spec)' : ''}`);
    }));
}
