import { Command } from 'commander';
import { VERSION } from '../daemon/version.js';
import { countCommand, healthCommand, statsCommand } from './commands/info.js';
import { listCommand } from './commands/list.js';
import { runCommand } from './commands/run.js';
import { submitCommand } from './commands/submit.js';
import { cancelCommand, followCommand, statusCommand, waitCommand } from './commands/task.js';
import { watchCommand } from './commands/watch.js';
import { serveCommand } from './serve.js';

const program = new Command('task-manager')
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
    'default 127.0.0.1:3000). --json prints the daemon\'s answer as one line of JSON.',
    'Exit codes: 0 ok; 1 a bad command line or a request the daemon refused (run: the task\'s',
    'own exit code instead); 2 the daemon cannot be reached.',
  ].join('\n'));

await program.parseAsync();
