/**
 * A worker thread that sends `health` on a connection of its own, one after
 * another, until told to stop, and then reports the longest answer time: how
 * long the daemon kept other clients waiting, seen apart from the work of the
 * bench's own thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TaskManagerClient } from '../dist/index.js';

const client = await TaskManagerClient.connect({ port: (workerData as { port: number }).port });
let stopping = false;
parentPort!.once('message', () => {
  stopping = true;
});
let longestMs = 0;
let answers = 0;
while (!stopping) {
  const start = performance.now();
  await client.health();
  longestMs = Math.max(longestMs, performance.now() - start);
  if (++answers === 1) parentPort!.postMessage('started');
}
await client.close();
parentPort!.postMessage({ longestMs, answers });
