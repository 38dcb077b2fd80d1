export { Scheduler, type AttemptRunner, type SchedulerOptions, type TaskJournal } from './scheduler.js';
export { Task, startId, type StoredTask, type TaskPatch } from './task.js';
