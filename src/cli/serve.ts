import { Command, Option } from 'commander';
import { DEFAULT_CONFIG, type DaemonConfig } from '../daemon/config.js';
import type { RunningDaemon } from '../daemon/index.js';
import { EXIT, TokenFileError, readTokenFile } from '../protocol/index.js';
import { exitOnUsageError, integerOption, originsOption } from './options.js';

const defaults = DEFAULT_CONFIG;

/** The flags of `serve`: commander names them as the config does. */
type ServeFlags = Omit<DaemonConfig, 'token' | 'log' | 'allowOrigins'> & { tokenFile?: string; allowOrigin: string[] };

const option = (flags: string, description: string, env: string) => new Option(flags, description).env(env);

export function serveCommand(): Command {
  return exitOnUsageError(new Command('serve'))
    .description('run the daemon in the foreground')
    .addOption(option('--host <host>', 'address to listen on', 'TASK_MANAGER_HOST').default(defaults.host))
    .addOption(option('--port <port>', 'TCP port (0: any free port)', 'TASK_MANAGER_PORT').default(defaults.port).argParser(integerOption(0, 65535)))
    .addOption(option('--concurrency <n>', 'tasks running at once', 'TASK_MANAGER_CONCURRENCY').default(defaults.concurrency).argParser(integerOption(1, 10_000)))
    .addOption(option('--data-dir <dir>', 'where the journal lives', 'TASK_MANAGER_DATA_DIR').default(defaults.dataDir))
    .addOption(option('--durability <mode>', 'fsync: acknowledged means on disk; none: faster, a machine crash may lose recent changes', 'TASK_MANAGER_DURABILITY').choices(['fsync', 'none']).default(defaults.durability))
    .addOption(option('--keep-finished <n>', 'finished tasks kept before the oldest are dropped', 'TASK_MANAGER_KEEP_FINISHED').default(defaults.keepFinished).argParser(integerOption(0)))
    .addOption(option('--keep-output-bytes <n>', 'output files of finished tasks kept (bytes on disk) before the oldest outputs are dropped', 'TASK_MANAGER_KEEP_OUTPUT_BYTES').default(defaults.keepOutputBytes).argParser(integerOption(0)))
    .addOption(option('--max-queue <n>', 'unfinished tasks held at once (QUEUE_FULL beyond)', 'TASK_MANAGER_MAX_QUEUE').default(defaults.maxQueue).argParser(integerOption(1)))
    .addOption(option('--max-spec-bytes <n>', 'what the specs of unfinished and retained tasks may hold together; the oldest finished tasks are dropped first (QUEUE_FULL beyond)', 'TASK_MANAGER_MAX_SPEC_BYTES').default(defaults.maxSpecBytes).argParser(integerOption(1)))
    .addOption(option('--max-line-bytes <n>', 'longest request line (LINE_TOO_LONG beyond)', 'TASK_MANAGER_MAX_LINE_BYTES').default(defaults.maxLineBytes).argParser(integerOption(1024)))
    .addOption(option('--max-connections <n>', 'client connections at once', 'TASK_MANAGER_MAX_CONNECTIONS').default(defaults.maxConnections).argParser(integerOption(1)))
    .addOption(option('--shutdown-grace-ms <ms>', 'on stop, how long running tasks get before they are killed (to run again at the next start)', 'TASK_MANAGER_SHUTDOWN_GRACE_MS').default(defaults.shutdownGraceMs).argParser(integerOption(0)))
    .addOption(option('--kill-grace-ms <ms>', 'between SIGTERM and SIGKILL for a timed-out or canceled task', 'TASK_MANAGER_KILL_GRACE_MS').default(defaults.killGraceMs).argParser(integerOption(0)))
    .addOption(option('--compact-after-bytes <n>', 'journal log size that triggers a new snapshot', 'TASK_MANAGER_COMPACT_AFTER_BYTES').default(defaults.compactAfterBytes).argParser(integerOption(1024)))
    .addOption(option('--auth-timeout-ms <ms>', 'with --token-file: a connection that has not authenticated by then is closed', 'TASK_MANAGER_AUTH_TIMEOUT_MS').default(defaults.authTimeoutMs).argParser(integerOption(1)))
    .addOption(option('--store <url>', 'a PostgreSQL URL (postgres://user:password@host:port/db): join the cluster of daemons sharing it instead of keeping an embedded journal', 'TASK_MANAGER_STORE'))
    .addOption(option('--node <name>', 'with --store: this daemon\'s name in the cluster (default: <hostname>:<port>)', 'TASK_MANAGER_NODE'))
    .addOption(option('--lease-ms <ms>', 'with --store: after this long without renewing its lease, a daemon\'s running tasks run again elsewhere', 'TASK_MANAGER_LEASE_MS').default(defaults.leaseMs).argParser(integerOption(500)))
    .addOption(option('--token-file <path>', 'require clients to auth with the token in this file (mode 600)', 'TASK_MANAGER_TOKEN_FILE'))
    .addOption(
      option('--allow-origin <origin>', 'a site (scheme://host:port) whose web pages may call the HTTP API, with CORS; repeat it, or give a comma-separated list', 'TASK_MANAGER_ALLOW_ORIGINS')
        .default(defaults.allowOrigins)
        .argParser(originsOption),
    )
    .action(async ({ tokenFile, allowOrigin, ...flags }: ServeFlags) => {
      // The daemon's code is loaded only here: the client subcommands start without it.
      const { ConfigError, startDaemon } = await import('../daemon/index.js');
      const { DataDirLockedError, JournalCorruptError } = await import('../journal/index.js');
      try {
        const config: Partial<DaemonConfig> = { ...flags, allowOrigins: allowOrigin };
        // Anyone who can read the token can run commands as the daemon's user: it must be private, and long.
        if (tokenFile !== undefined) config.token = readTokenFile(tokenFile, { private: true, minLength: 16 });
        // Handlers first: a signal during start-up stops the daemon as soon as it is up.
        let signals = 0;
        let daemon: RunningDaemon | undefined;
        const onSignal = (signal: NodeJS.Signals) => {
          signals++;
          if (signals === 1) {
            console.error(`${signal}: stopping (running tasks get ${config.shutdownGraceMs} ms; ${signal} again to kill them now)`);
            void daemon?.stop().then(() => process.exit(EXIT.ok));
          } else if (signals === 2) {
            console.error(`${signal}: killing running tasks now; they run again at the next start (${signal} again to quit at once)`);
            daemon?.hurry();
          } else {
            process.exit(EXIT.interrupted); // the journal is consistent at every instant: the next start recovers
          }
        };
        // SIGHUP too: a closed terminal should stop the daemon the same careful way. (Node resets
        // an ignored SIGHUP at start, so under nohup it would otherwise end the daemon outright.)
        for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
        daemon = await startDaemon(config);
        void daemon.failed.then(() => daemon!.stop().finally(() => process.exit(EXIT.failed)));
        console.log(`task-manager listening on ${daemon.host}:${daemon.port} (${flags.store === undefined ? `data dir ${flags.dataDir}` : 'store PostgreSQL'}, concurrency ${config.concurrency})`);
        if (signals > 0) {
          const stopping = daemon.stop();
          if (signals > 1) daemon.hurry();
          await stopping.then(() => process.exit(EXIT.ok));
        }
      } catch (error) {
        const known =
          error instanceof ConfigError || error instanceof TokenFileError || error instanceof DataDirLockedError || error instanceof JournalCorruptError;
        // The port taken, or a file system that cannot hold the data dir: the operator's to fix, not a crash.
        const startErrors = ['EADDRINUSE', 'ENOENT', 'ENOTDIR', 'EISDIR', 'EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'EIO', 'EMFILE', 'ENFILE', 'ELOOP', 'ENAMETOOLONG'];
        const code = (error as NodeJS.ErrnoException).code;
        if (known || startErrors.includes(code ?? '')) {
          console.error(`task-manager: ${(error as Error).message}`);
          process.exit(EXIT.usage);
        }
        throw error;
      }
    });
}
