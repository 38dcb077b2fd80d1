export { Executor, type ExecutorSettings, type RunOptions } from './executor.js';
export { startFailure, type AttemptResult } from './run-attempt.js';
export { StopRequest } from './stop-request.js';
export { signalGroup } from './process-group.js';
export { isSameProcessAlive, processStartTime } from './process-info.js';
export { ATTEMPT_VARIABLE, OWNER_VARIABLE, TASK_VARIABLE, attemptKey, killLeftovers, type RecordedGroup } from './leftovers.js';
export { readStartEvidence, removeStartEvidence } from './start-evidence.js';
export type { OutputPaths } from './messages.js';
export { chooseSpawner, SPAWN_VARIABLE, type SpawnPath } from './spawner.js';
