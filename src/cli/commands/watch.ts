import type { Command } from 'commander';
import { ConnectionError, reconnect } from '../../client/index.js';
import { clientAction, clientCommand } from '../client-command.js';
import { integerOption, tokenOf } from '../options.js';
import { watchTasks } from '../watch.js';

export function watchCommand(): Command {
  return clientCommand('watch', 'follow running, queued and pending tasks live (Ctrl-C to quit)')
    .option('--exit-when-idle', 'quit once nothing is pending, queued or running')
    .option('--reconnect-ms <ms>', 'after a lost connection (a daemon restart), how long to keep reconnecting', integerOption(0), 60_000)
    .addHelpText('after', [
      '',
      'On a terminal: a table redrawn in place. Otherwise (a pipe, a file): one line per',
      'state change. With --json: the daemon\'s event lines ({"event":"task","task":{...}}).',
      'When the daemon restarts, watch reconnects and lists the tasks afresh.',
    ].join('\n'))
    .action(clientAction<{ exitWhenIdle?: boolean; reconnectMs: number }>(async ({ flags, connect }) => {
      let client = await connect();
      const options = { address: `${flags.host}:${flags.port}`, json: flags.json === true, exitWhenIdle: flags.exitWhenIdle === true };
      for (;;) {
        try {
          return await watchTasks(client, options);
        } catch (error) {
          if (!(error instanceof ConnectionError)) throw error;
          client.destroy();
          process.stderr.write(`task-manager: lost the daemon at ${options.address} (${error.message}); reconnecting for up to ${flags.reconnectMs} ms\n`);
          client = await reconnect({ host: flags.host, port: flags.port, token: tokenOf(flags) }, flags.reconnectMs);
          process.stderr.write('task-manager: reconnected\n');
        }
      }
    }));
}
