import { isCount, isObject, shown } from './stored-task-rules.js';

/**
 * What the journal keeps of a group: its limit (absent for `default` until
 * it is set: then `--concurrency` stands) and whether it is paused. A group
 * exists once it has settings; `default` always does.
 */
export interface StoredGroup {
  concurrency?: number;
  paused?: boolean;
}

/** What is wrong with a group's settings as a journal holds them, or undefined. */
export function groupProblem(value: unknown): string | undefined {
  if (!isObject(value)) return `a group's settings must be an object, got ${shown(value)}`;
  for (const [name, field] of Object.entries(value)) {
    if (name === 'concurrency') {
      if (!isCount(field) || field < 1) return `concurrency must be an integer >= 1, got ${shown(field)}`;
    } else if (name === 'paused') {
      if (typeof field !== 'boolean') return `paused must be true or false, got ${shown(field)}`;
    } else {
      return `unexpected field ${shown(name)} in a group's settings`;
    }
  }
  return undefined;
}
