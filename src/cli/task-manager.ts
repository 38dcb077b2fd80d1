import { Command } from 'commander';
import { VERSION } from '../daemon/version.js';
import { DEFAULT_HOST, DEFAULT_PORT } from '../protocol/index.js';
import { countCommand, healthCommand, statsCommand } from './commands/info.js';
import { listCommand } from './commands/list.js';
import { runCommand } from './commands/run.js';
import { submitCommand } from './commands/submit.js';
import { cancelCommand, followCommand, statusCommand, waitCommand } from './commands/task.js';
import { watchCommand } from './commands/watch.js';
import { exitOnUsageError } from './options.js';
import { serveCommand } from './serve.js';

const program = exitOnUsageError(new Command('task-manager'))
  .description('a task-running daemon and its command-line client')
  .version(VERSION)
  // lets `run`/`submit` pass options after the program's name on to it: `task-manager run ls -l`
  .enablePositionalOptions()
  .addCommand(serveCommand())
  .addCommand(runCommand())
  .addCommand(submitCommand())
  .addCommand(statusCommand())
  .addCommand(waitCommand())
  .addCommand(listCommand())
  .addCommand(followCommand())
  .addCommand(cancelCommand())
  .addCommand(watchCommand())
  .addCommand(countCommand())
  .addCommand(statsCommand())
  .addCommand(healthCommand())
  .addHelpText('after', [
    '',
    'Client commands talk to the daemon at --host/--port (TASK_MANAGER_HOST, TASK_MANAGER_PORT;',
    `default ${DEFAULT_HOST}:${DEFAULT_PORT}). --json prints the daemon's answer as one line of JSON.`,
    'Exit codes: 0 ok; 1 a request the daemon refused (run: the task\'s own exit code instead);',
    '2 a bad command line, or the daemon cannot be reached; 130 interrupted.',
  ].join('\n'));

await program.parseAsync();
