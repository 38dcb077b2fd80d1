// Asks for the monitoring data over the line protocol: tasks by state, CPU, memory, disk and GPU.
// Usage: node examples/client/monitor.mjs   (after npm run build; TASK_MANAGER_PORT, default 3000)
import { TaskManagerClient } from '../../dist/index.js';

const client = await TaskManagerClient.connect({ port: Number(process.env.TASK_MANAGER_PORT ?? 3000) });
try {
  const stats = await client.stats();
  const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  console.log(`tasks: ${JSON.stringify(stats.counts)}`);
  console.log(`cpu: ${stats.cpu.use_percent} % of ${stats.cpu.cores} cores, load ${stats.cpu.load_avg.join(' ')}`);
  console.log(`memory: ${gib(stats.memory.total_bytes - stats.memory.free_bytes)} used of ${gib(stats.memory.total_bytes)}`);
  console.log(`disk: ${gib(stats.disk.free_bytes)} free of ${gib(stats.disk.total_bytes)} (${stats.disk.path})`);
  console.log(`gpu: ${(stats.gpu ?? []).map((gpu) => `${gpu.name} ${gpu.utilization_percent} %`).join(', ') || 'none'}`);
} finally {
  await client.close();
}
