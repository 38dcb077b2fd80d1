export { Scheduler, type AttemptRunner, type SchedulerOptions, type TaskJournal } from './scheduler.js';
export { FRESH_RUN, Task, editedSpec, newStoredTask, newTaskId, outputName, startId, type StoredTask, type TaskPatch } from './task.js';
export { applyPatch, isCount, isObject, patchProblem, shown, storedTaskProblem, withoutClearedFields } from './stored-task-rules.js';
export { emptyCounts, MemoryTaskStore, type TaskStore } from './task-store.js';
export { attemptOutcome, type AttemptOutcome } from './outcome.js';
export { groupProblem, type StoredGroup } from './group.js';
export { onAbort } from './abort.js';
export { interrupted, notStarted, serviceStopHeld } from './outcome.js';
export type { ListFilter, TaskService } from './task-service.js';
