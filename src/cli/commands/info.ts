import type { Command } from 'commander';
import { type NodeInfo, TASK_STATES } from '../../protocol/index.js';
import { clientAction, clientCommand, printResult } from '../client-command.js';
import { formatBytes, formatDuration, formatKeyValues, formatTable } from '../format.js';
import { formatCounts } from '../task-format.js';

/** `count`, `stats`, `nodes` and `health`: what the daemon says about itself and its cluster. */

export function countCommand(): Command {
  return clientCommand('count', 'count tasks by state')
    .action(clientAction(async ({ flags, connect }) => {
      const client = await connect();
      const payload = await client.count();
      printResult(flags, payload, () => formatKeyValues([
        ...TASK_STATES.map((state): [string, string] => [state, String(payload.counts[state])]),
        ['not finished', String(payload.tasks)],
      ]));
    }));
}

export function statsCommand(): Command {
  return clientCommand('stats', 'show the load of the machine and the daemon')
    .action(clientAction(async ({ flags, connect }) => {
      const client = await connect();
      const stats = await client.stats();
      printResult(flags, stats, () => {
        const { cpu, memory, disk, concurrency } = stats;
        return formatKeyValues([
          ['load', `${cpu.load_avg.map((load) => load.toFixed(2)).join(' ')} (1, 5, 15 min; ${cpu.cores} cores)`],
          ['cpu', `${cpu.use_percent.toFixed(1)}% in use`],
          ['memory', `${formatBytes(memory.free_bytes)} free of ${formatBytes(memory.total_bytes)}; the daemon uses ${formatBytes(memory.daemon_rss_bytes)}`],
          ['disk', `${formatBytes(disk.free_bytes)} free of ${formatBytes(disk.total_bytes)} at ${disk.path}`],
          ...stats.gpu.map((gpu): [string, string] => [
            `gpu ${gpu.index}`,
            [
              gpu.name,
              gpu.utilization_percent === null ? undefined : `${gpu.utilization_percent}% in use`,
              gpu.memory_used_bytes === null || gpu.memory_total_bytes === null
                ? undefined
                : `${formatBytes(gpu.memory_used_bytes)} of ${formatBytes(gpu.memory_total_bytes)} memory used`,
            ].filter(Boolean).join('; '),
          ]),
          ['running', `${concurrency.running} of at most ${concurrency.limit} (all groups)`],
          ['tasks', formatCounts(stats.counts)],
          ['uptime', formatDuration(stats.uptime_ms)],
          ...(stats.nodes ? [['cluster', `${stats.nodes.length} daemon(s): ${stats.nodes.map((node) => node.name).join(', ')}`] as [string, string]] : []),
        ]);
      });
    }));
}

const NODE_HEADER = ['NODE', 'ADDRESS', 'RUNNING', 'CONCURRENCY', 'LAST SEEN', 'UP FOR'];

export function formatNodes(nodes: NodeInfo[], now = Date.now()): string {
  const rows = nodes.map((node) => [
    node.name,
    node.address,
    String(node.running),
    String(node.concurrency),
    `${formatDuration(Math.max(0, now - Date.parse(node.last_seen)))} ago`,
    formatDuration(Math.max(0, now - Date.parse(node.started_at))),
  ]);
  return formatTable(NODE_HEADER, rows).join('\n');
}

export function nodesCommand(): Command {
  return clientCommand('nodes', 'list the daemons of the cluster (with --store): what each runs, and when it last renewed its lease')
    .action(clientAction(async ({ flags, connect }) => {
      const client = await connect();
      const { nodes } = await client.stats();
      if (!nodes) {
        printResult(flags, { nodes: [] }, () => 'this daemon keeps an embedded journal: it is no cluster (serve --store postgres://... makes one)');
        return;
      }
      printResult(flags, { nodes }, () => formatNodes(nodes));
    }));
}

export function healthCommand(): Command {
  return clientCommand('health', 'check that the daemon answers, and show its version and uptime')
    .action(clientAction(async ({ flags, connect }) => {
      const client = await connect();
      const health = await client.health();
      printResult(flags, health, () => `task-manager ${health.version} at ${flags.host}:${flags.port} is up (for ${formatDuration(health.uptime_ms)})`);
    }));
}
