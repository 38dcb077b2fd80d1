export { TaskManagerClient, TaskManagerError, ConnectionError, type ClientOptions, type ClientEvents } from './client/client.js';
export { startDaemon, DEFAULT_CONFIG, type DaemonConfig, type RunningDaemon } from './daemon/index.js';
export type * from './protocol/types.js';
export { REQUEST_ERRORS, TASK_ERRORS, type RequestErrorCode, type TaskErrorCode } from './protocol/errors.js';
