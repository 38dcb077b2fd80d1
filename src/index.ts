export * from './client/index.js';
export { startDaemon, DEFAULT_CONFIG, type DaemonConfig, type RunningDaemon } from './daemon/index.js';
export type * from './protocol/types.js';
export type { Op, Request, RequestFields, TaskSpec, TaskSpecInput } from './protocol/schema.js';
export { REQUEST_ERRORS, TASK_ERRORS, type RequestErrorCode, type TaskErrorCode } from './protocol/errors.js';
