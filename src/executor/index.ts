export { runAttempt, startFailure, type AttemptOptions, type AttemptResult } from './run-attempt.js';
export { signalGroup } from './process-group.js';
export { isSameProcessAlive, processStartTime } from './process-info.js';
export { OWNER_VARIABLE, killLeftovers, type RecordedGroup } from './leftovers.js';
