// Sends two tasks over the line protocol with the client library, the second
// depending on the first, and prints the second's result.
// Usage: node examples/client/send-tasks.mjs   (after npm run build; TASK_MANAGER_PORT, default 3000)
import { TaskManagerClient } from '../../dist/index.js';

const client = await TaskManagerClient.connect({ port: Number(process.env.TASK_MANAGER_PORT ?? 3000) });
try {
  const { task: build } = await client.submit({ id: 'example-build', cmd: 'sleep 1; echo built' });
  await client.submit({ id: 'example-report', cmd: 'echo reported', depends_on: [build.id] });
  const { task: report } = await client.wait('example-report');
  console.log(`${report.id}: ${report.state}, exit code ${report.exit_code}, stdout ${JSON.stringify(report.stdout)}`);
} finally {
  await client.close();
}
