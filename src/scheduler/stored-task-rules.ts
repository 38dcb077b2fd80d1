import { TASK_STATES } from '../protocol/index.js';
import type { StoredTask, TaskPatch } from './task.js';

/**
 * What a stored task's fields must hold, so that recovery can refuse a
 * journal that would crash the scheduler (or show clients garbage) instead
 * of starting on it. The rules follow `newStoredTask` and the patches the
 * scheduler writes.
 */

interface FieldRule {
  expected: string;
  test: (value: unknown) => boolean;
}

const rule = (expected: string, test: (value: unknown) => boolean): FieldRule => ({ expected, test });
const orNull = ({ expected, test }: FieldRule): FieldRule => rule(`${expected} or null`, (value) => value === null || test(value));

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const isString = (value: unknown): value is string => typeof value === 'string';
const isStrings = (value: unknown) => Array.isArray(value) && value.every(isString);
export const isCount = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;

const string = rule('a string', isString);
const strings = rule('an array of strings', isStrings);
const count = rule('an integer >= 0', isCount);
const number = rule('a number', (value) => typeof value === 'number' && Number.isFinite(value));
const boolean = rule('true or false', (value) => typeof value === 'boolean');

/** Fields every stored task has: a brand-new task is logged with all of them. */
const REQUIRED = new Map<string, FieldRule>([
  ['id', string],
  ['state', rule(`one of ${TASK_STATES.join(', ')}`, (value) => TASK_STATES.includes(value as never))],
  ['cmd', rule('a string, an array of strings or null', (value) => value === null || isString(value) || isStrings(value))],
  ['priority', number],
  ['exit_code', orNull(rule('an integer', Number.isInteger))],
  ['signal', orNull(string)],
  ['timed_out', boolean],
  ['stdout_truncated', boolean],
  ['stderr_truncated', boolean],
  ['duration_ms', orNull(number)],
  ['attempts', count],
  ['max_attempts', count],
  ['created_at', string],
  ['depends_on', strings],
  ['error', orNull(rule('an object with a string code', (value) => isObject(value) && isString(value.code)))],
  // The scheduler links dependencies from the spec at start: without the array it would crash.
  ['spec', rule('an object whose depends_on is an array of strings', (value) => isObject(value) && isStrings(value.depends_on))],
  ['seq', count],
]);

/** Fields a task has only at times. */
const OPTIONAL = new Map<string, FieldRule>([
  ['script', rule('an object', isObject)],
  ['args', strings],
  ['stdout', string],
  ['stderr', string],
  ['started_at', string],
  ['finished_at', string],
  ['ready_at', number],
  ['pgid', count],
  ['pgid_started', string],
  ['interrupted', count],
  ['output_dropped', rule('true', (value) => value === true)],
  ['output', string],
  ['stdout_bytes', count],
  ['stderr_bytes', count],
  ['spec_bytes', count],
  ['restarts', count],
  ['node', string],
  ['executor_losses', count],
]);

/**
 * The one rule for clearing: a null for a field a task has only at times
 * clears it, in memory and when a log is replayed. For the other fields
 * (`exit_code`, `error`, ...), null is a value.
 */
export const clearedBy = (name: string, value: unknown): boolean => value === null && OPTIONAL.has(name);

/**
 * Applies a patch to a stored task, clearing what it sets to null by the
 * rule above. Clearing comes first, the last-named field first: a task's end
 * clears the pid fields its start added last, and V8 keeps an object's fast
 * layout only when the property deleted is the last one added (any other
 * turns it into a slower dictionary for good).
 */
export function applyPatch(stored: StoredTask, patch: TaskPatch): void {
  const fields = stored as unknown as Record<string, unknown>;
  const values = patch as Record<string, unknown>;
  const cleared: string[] = [];
  for (const name in values) if (clearedBy(name, values[name])) cleared.push(name);
  for (let i = cleared.length - 1; i >= 0; i--) delete fields[cleared[i]!];
  for (const name in values) {
    const value = values[name];
    if (!clearedBy(name, value)) fields[name] = value;
  }
}

/** Removes from a task read whole (a snapshot line, a log line that creates it) the fields it clears. */
export function withoutClearedFields(task: StoredTask): StoredTask {
  const fields = task as unknown as Record<string, unknown>;
  for (const name in fields) if (clearedBy(name, fields[name])) delete fields[name];
  return task;
}

/** A value as it stands in the file, cut short for a message. */
export function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/**
 * Every field with a rule. Checks go through these rather than through a
 * task's own fields: no array per task, and one lookup per field, which a
 * start reading 100,000 tasks feels.
 */
const RULES = [...REQUIRED, ...OPTIONAL].map(([name, field]) => ({
  name,
  field,
  required: REQUIRED.has(name),
  clearable: !REQUIRED.has(name),
}));

/**
 * What is wrong with a task's changed fields, or undefined. Fields this
 * version does not know are left alone, as the scheduler ignores them.
 */
export function patchProblem(patch: Record<string, unknown>): string | undefined {
  return problemOf(patch, false);
}

/** What keeps `value` from being a complete stored task, or undefined. */
export function storedTaskProblem(value: unknown): string | undefined {
  if (!isObject(value)) return `a task must be an object, got ${shown(value)}`;
  return problemOf(value, true);
}

function problemOf(task: Record<string, unknown>, complete: boolean): string | undefined {
  for (const { name, field, required, clearable } of RULES) {
    const value = task[name]; // undefined: absent, as JSON holds no undefined
    if (value === undefined) {
      if (complete && required) return missingFields(task);
    } else if (!(value === null && clearable) && !field.test(value)) {
      return `${name} must be ${field.expected}, got ${shown(value)}`;
    }
  }
  return undefined;
}

function missingFields(task: Record<string, unknown>): string {
  const missing = [...REQUIRED.keys()].filter((name) => task[name] === undefined);
  if (missing.length === 1) return `${missing[0]} is missing`;
  const named = missing.length > 4 ? `${missing.slice(0, 3).join(', ')} and ${missing.length - 3} more` : missing.join(', ');
  return `${named} are missing`;
}
