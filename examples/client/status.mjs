// Asks for a task's status over the line protocol.
// Usage: node examples/client/status.mjs ID   (after npm run build; TASK_MANAGER_PORT, default 3000)
import { TaskManagerClient } from '../../dist/index.js';

const id = process.argv[2];
if (!id) {
  console.error('usage: node examples/client/status.mjs ID');
  process.exit(2);
}
const client = await TaskManagerClient.connect({ port: Number(process.env.TASK_MANAGER_PORT ?? 3000) });
try {
  const task = await client.status(id);
  console.log(`${task.id}: ${task.state}, attempts ${task.attempts}/${task.max_attempts}, exit code ${task.exit_code}`);
  if (task.stdout) console.log(`stdout: ${task.stdout}`);
} finally {
  await client.close();
}
