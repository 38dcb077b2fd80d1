import { Command } from 'commander';
import { VERSION } from '../daemon/version.js';
import { serveCommand } from './serve.js';

const program = new Command('task-manager')
  .description('a task-running daemon and its command-line client')
  .version(VERSION)
  .addCommand(serveCommand());

await program.parseAsync();
