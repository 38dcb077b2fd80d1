import type { Command } from 'commander';
import { clientAction, clientCommand } from '../client-command.js';
import { watchTasks } from '../watch.js';

export function watchCommand(): Command {
  return clientCommand('watch', 'follow running, queued and pending tasks live (Ctrl-C to quit)')
    .option('--exit-when-idle', 'quit once nothing is pending, queued or running')
    .addHelpText('after', [
      '',
      'On a terminal: a table redrawn in place. Otherwise (a pipe, a file): one line per',
      'state change. With --json: the daemon\'s event lines ({"event":"task","task":{...}}).',
    ].join('\n'))
    .action(clientAction<{ exitWhenIdle?: boolean }>(async ({ flags, connect }) => {
      const client = await connect();
      return watchTasks(client, { address: `${flags.host}:${flags.port}`, json: flags.json === true, exitWhenIdle: flags.exitWhenIdle === true });
    }));
}
