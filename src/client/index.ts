export { TaskManagerClient, TaskManagerError, ConnectionError, type ClientOptions, type ClientEvents } from './client.js';
export { newBatchId, reconnect, runTasks, withIds, type RunTasksOptions, type TaskOutcome } from './run-tasks.js';
