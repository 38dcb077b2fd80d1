export { Executor, type ExecutorSettings } from './executor.js';
export { startFailure, type AttemptResult } from './run-attempt.js';
export { signalGroup } from './process-group.js';
export { isSameProcessAlive, processStartTime } from './process-info.js';
export { OWNER_VARIABLE, killLeftovers, type RecordedGroup } from './leftovers.js';
