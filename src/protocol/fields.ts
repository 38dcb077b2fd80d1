import { requestError, shown, typeName, type RequestError } from './errors.js';

/**
 * How one field of a request is read. `read` checks a value the client sent
 * and returns it as the daemon keeps it, or throws BAD_REQUEST naming the
 * field and the rule it broke. `In` is what a client may send, `Out` what
 * `read` makes of it.
 */
export interface Field<In, Out = In> {
  read(value: unknown, name: string): Out;
  /** absent, the request is refused */
  required?: true;
  /** absent, the field is read as if the client had sent this */
  default?: In;
  /** never set: carries the type a client may send */
  readonly sent?: In;
}

/** The fields a request (or a value within it) takes, in the order they are checked and listed. */
export type Fields = Record<string, Field<unknown, unknown>>;

type SentOf<F> = F extends Field<infer In, unknown> ? In : never;
type ReadOf<F> = F extends Field<unknown, infer Out> ? Out : never;
type KeysWhere<T, Mark> = { [K in keyof T]: T[K] extends Mark ? K : never }[keyof T];
type Simplify<T> = { [K in keyof T]: T[K] };
type Required<T> = KeysWhere<T, { required: true }>;
type Present<T> = KeysWhere<T, { required: true } | { default: unknown }>;

/** What a client sends: the required fields, and any of the others (undefined, like absent, is left out of the JSON). */
export type SentFields<T extends Fields> = Simplify<
  { [K in Required<T>]: SentOf<T[K]> } & { [K in Exclude<keyof T, Required<T>>]?: SentOf<T[K]> | undefined }
>;

/** What reading makes of it: required and defaulted fields are always there. */
export type ReadFields<T extends Fields> = Simplify<
  { [K in Present<T>]: ReadOf<T[K]> } & { [K in Exclude<keyof T, Present<T>>]?: ReadOf<T[K]> }
>;

export const field = <In, Out = In>(read: (value: unknown, name: string) => Out): Field<In, Out> => ({ read });

export const required = <In, Out>(of: Field<In, Out>) => ({ ...of, required: true as const });

export const withDefault = <In, Out>(of: Field<In, Out>, value: In) => ({ ...of, default: value });

/** Reads the fields of the table from what was sent, in the table's order; the first broken rule is thrown. */
export function readFields<T extends Fields>(fields: T, sent: Record<string, unknown>): ReadFields<T> {
  const read: Record<string, unknown> = {};
  for (const name in fields) {
    const field = fields[name]!;
    const value = sent[name];
    if (value !== undefined) read[name] = field.read(value, name);
    else if (field.required) throw requestError.BAD_REQUEST(`${name} is required`);
    else if (field.default !== undefined) read[name] = field.read(field.default, name);
  }
  // Each field was read by its own reader: the object is what the table's type says.
  return read as ReadFields<T>;
}

/** Refuses a field the table does not have, suggesting the nearest real name. */
export function rejectUnknownFields(sent: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(sent)) {
    if (allowed.includes(key)) continue;
    const near = nearest(key, allowed);
    const hint = near ? ` (did you mean "${near}"?)` : `; ${where} takes ${allowed.map((f) => `"${f}"`).join(', ') || 'no fields'}`;
    throw requestError.BAD_REQUEST(`unknown field ${shown(key)}${hint}`);
  }
}

/** The name among `names` that `key` is most likely a typo of (case aside, or within two edits), if any. */
export function nearest(key: string, names: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  // Only names of about the right length are compared: the distance costs |key| x |name|.
  return names.find((name) => name === lower) ?? names.find((name) => Math.abs(name.length - key.length) <= 2 && editDistance(lower, name) <= 2);
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The BAD_REQUEST for a value of the wrong kind: "NAME must be WHAT, got ...". */
export const mustBe = (name: string, what: string, value: unknown): RequestError =>
  requestError.BAD_REQUEST(`${name} must be ${what}, got ${typeName(value)}`);

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** An integer from `min` to `max`; `range` words the bounds in the message. */
export const integer = (min: number, max: number, range = `between ${min} and ${max}`) =>
  field<number>((value, name) => {
    if (typeof value !== 'number' || !Number.isInteger(value)) throw mustBe(name, `an integer ${range}`, value);
    if (value < min || value > max) throw requestError.BAD_REQUEST(`${name} must be an integer ${range}, got ${value}`);
    return value;
  });

/** One of a fixed list of strings. */
export const oneOf = <const Value extends string>(values: readonly Value[]) =>
  field<Value>((value, name) => {
    const known = values.find((known) => known === value);
    if (known === undefined) throw mustBe(name, `one of ${values.join(', ')}`, value);
    return known;
  });

/** A string without NUL characters (which no program argument, path or variable can hold). */
export function plainString(value: unknown, name: string, { nonEmpty = false } = {}): string {
  if (typeof value !== 'string') throw mustBe(name, 'a string', value);
  if (nonEmpty && value.trim() === '') throw requestError.BAD_REQUEST(`${name} must not be empty`);
  if (value.includes('\0')) throw requestError.BAD_REQUEST(`${name} must not contain a NUL character`);
  return value;
}

export const text = (options?: { nonEmpty?: boolean }) => field<string>((value, name) => plainString(value, name, options));
