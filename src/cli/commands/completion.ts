import { Command, InvalidArgumentError } from 'commander';
import { TASK_STATES } from '../../protocol/index.js';
import { exitOnUsageError } from '../options.js';

/** `task-manager completion bash|zsh|fish`: a completion script made from the commands themselves. */

const SHELLS = ['bash', 'zsh', 'fish'] as const;
type Shell = (typeof SHELLS)[number];

interface Described {
  name: string;
  description: string;
  options: { long: string; description: string; takesValue: boolean }[];
}

/** Every subcommand, under its name and each alias. */
function describe(program: Command): Described[] {
  return program.commands.flatMap((command) => [command.name(), ...command.aliases()].map((name) => ({
    name,
    description: command.description(),
    options: [
      ...command.options
        .filter((option) => option.long !== undefined)
        .map((option) => ({ long: option.long!, description: option.description, takesValue: option.required || option.optional })),
      { long: '--help', description: 'show help', takesValue: false },
    ],
  })));
}

const STATES = TASK_STATES.join(' ');

function bash(commands: Described[]): string {
  const cases = commands.map((c) => `    ${c.name}) opts="${c.options.map((o) => o.long).join(' ')}" ;;`).join('\n');
  return `# bash completion for task-manager: eval "$(task-manager completion bash)" (or save it in ~/.local/share/bash-completion/completions/task-manager)
_task_manager() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${commands.map((c) => c.name).join(' ')} --help --version" -- "$cur") )
    return
  fi
  case "$prev" in
    --state) COMPREPLY=( $(compgen -W "${STATES}" -- "$cur") ); return ;;
    --durability) COMPREPLY=( $(compgen -W "fsync none" -- "$cur") ); return ;;
    --data-dir|--token-file|--cwd) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  case "\${COMP_WORDS[1]}" in
${cases}
    completion) opts="bash zsh fish" ;;
    *) opts="" ;;
  esac
  COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
}
complete -o default -F _task_manager task-manager
`;
}

function zsh(commands: Described[]): string {
  return `#compdef task-manager
# zsh completion for task-manager: eval "$(task-manager completion zsh)" (after compinit)
autoload -U +X bashcompinit && bashcompinit
${bash(commands).split('\n').slice(1).join('\n')}`;
}

const fishQuote = (text: string) => `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

function fish(commands: Described[]): string {
  const lines = [
    '# fish completion for task-manager: task-manager completion fish > ~/.config/fish/completions/task-manager.fish',
    'complete -c task-manager -f',
  ];
  for (const c of commands) {
    lines.push(`complete -c task-manager -n __fish_use_subcommand -a ${c.name} -d ${fishQuote(c.description)}`);
    for (const o of c.options) {
      const values = o.long === '--state' ? ` -x -a ${fishQuote(STATES)}` : o.takesValue ? ' -r' : '';
      lines.push(`complete -c task-manager -n '__fish_seen_subcommand_from ${c.name}' -l ${o.long.slice(2)}${values} -d ${fishQuote(o.description)}`);
    }
  }
  lines.push(`complete -c task-manager -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'`);
  return `${lines.join('\n')}\n`;
}

function shell(value: string): Shell {
  const found = SHELLS.find((shell) => shell === value);
  if (found === undefined) throw new InvalidArgumentError(`expected one of ${SHELLS.join(', ')}.`);
  return found;
}

export function completionCommand(): Command {
  return exitOnUsageError(new Command('completion'))
    .description('print a shell completion script (bash, zsh or fish)')
    .argument('<shell>', SHELLS.join(', '), shell)
    .addHelpText('after', [
      '',
      'Examples:',
      '  eval "$(task-manager completion bash)"        # in ~/.bashrc',
      '  eval "$(task-manager completion zsh)"         # in ~/.zshrc, after compinit',
      '  task-manager completion fish > ~/.config/fish/completions/task-manager.fish',
    ].join('\n'))
    .action((chosen: Shell, _options: unknown, command: Command) => {
      const commands = describe(command.parent!);
      process.stdout.write({ bash, zsh, fish }[chosen](commands));
    });
}
