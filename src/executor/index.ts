export { Executor, type ExecutorSettings, type RunOptions } from './executor.js';
export { startFailure, type AttemptResult } from './run-attempt.js';
export { signalGroup } from './process-group.js';
export { isSameProcessAlive, processStartTime } from './process-info.js';
export { OWNER_VARIABLE, killLeftovers, type RecordedGroup } from './leftovers.js';
