import { Command } from 'commander';
import { VERSION } from '../daemon/version.js';
import { DEFAULT_HOST, DEFAULT_PORT } from '../protocol/index.js';
import { countCommand, healthCommand, nodesCommand, statsCommand } from './commands/info.js';
import { listCommand } from './commands/list.js';
import { runCommand } from './commands/run.js';
import { submitCommand } from './commands/submit.js';
import { completionCommand } from './commands/completion.js';
import { cleanCommand, editCommand } from './commands/edit.js';
import { groupsCommand, parallelCommand, pauseGroupCommand, resumeGroupCommand, setGroupCommand } from './commands/groups.js';
import { cancelCommand, followCommand, logCommand, removeCommand, restartCommand, statusCommand, waitCommand } from './commands/task.js';
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
  .addCommand(submitCommand().alias('add'))
  .addCommand(statusCommand())
  .addCommand(waitCommand())
  .addCommand(listCommand())
  .addCommand(followCommand())
  .addCommand(logCommand())
  .addCommand(cancelCommand())
  .addCommand(restartCommand())
  .addCommand(editCommand())
  .addCommand(removeCommand())
  .addCommand(cleanCommand())
  .addCommand(groupsCommand())
  .addCommand(setGroupCommand().alias('set_group'))
  .addCommand(parallelCommand())
  .addCommand(pauseGroupCommand())
  .addCommand(resumeGroupCommand())
  .addCommand(watchCommand())
  .addCommand(countCommand())
  .addCommand(statsCommand())
  .addCommand(nodesCommand())
  .addCommand(healthCommand())
  .addCommand(completionCommand())
  .addHelpText('after', [
    '',
    'Client commands talk to the daemon at --host/--port (TASK_MANAGER_HOST, TASK_MANAGER_PORT;',
    `default ${DEFAULT_HOST}:${DEFAULT_PORT}). --json prints the daemon's answer as one line of JSON.`,
    'Exit codes: 0 ok; 1 a request the daemon refused; 2 a bad command line, or the daemon cannot',
    'be reached; 130 interrupted. run, wait and follow exit as the task did: its exit code, 124 timed',
    'out, 125 canceled, 127 could not start, 128+N ended by signal N; wait --timeout-ms running out: 75.',
  ].join('\n'));

await program.parseAsync();
