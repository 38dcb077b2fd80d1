export { Scheduler, type AttemptRunner, type SchedulerOptions, type TaskJournal } from './scheduler.js';
export { Task, type StoredTask, type TaskPatch } from './task.js';
