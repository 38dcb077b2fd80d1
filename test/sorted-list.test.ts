import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SortedList } from '../src/scheduler/sorted-list.js';

/** Items are their own keys here. */
const numbers = (load?: number) => new SortedList<number>((n) => n, load);

/** The answers of `list` against those of a plain sorted array, after keys in it, between and beyond (a sample of them). */
function expectSame(list: SortedList<number>, model: number[]): void {
  const step = Math.ceil(model.length / 30);
  const sample = model.filter((_, i) => i % step === 0);
  const keys = [undefined, -1, ...sample, ...sample.map((n) => n + 1), (model.at(-1) ?? 0) + 10];
  const answers = (countAfter: (key?: number) => number, after: (key: number | undefined, limit: number) => number[]) => ({
    all: after(undefined, Infinity),
    afterKeys: keys.map((key) => ({ key, count: countAfter(key), pages: [1, 3, 1000].map((limit) => after(key, limit)) })),
  });
  const following = (key?: number) => (key === undefined ? model : model.filter((n) => n > key));
  const actual = answers((key) => list.countAfter(key), (key, limit) => list.after(key, limit));
  const expected = answers((key) => following(key).length, (key, limit) => following(key).slice(0, limit));
  expect(list.size).toBe(model.length);
  // Compared as JSON first, which is fast; toEqual shows where they differ.
  if (JSON.stringify(actual) !== JSON.stringify(expected)) expect(actual).toEqual(expected);
}

describe('SortedList', () => {
  it('is empty at first', () => {
    const list = numbers();
    expectSame(list, []);
    expect(list.delete(1)).toBe(false);
  });

  it('keeps items in key order whatever the order they come in', () => {
    const list = numbers(2);
    for (const n of [5, 1, 9, 3, 7, 2, 8, 4, 6]) list.insert(n);
    expectSame(list, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('deletes by key, and says whether the key was there', () => {
    const list = numbers(2);
    for (let n = 1; n <= 20; n++) list.insert(n);
    expect(list.delete(7)).toBe(true);
    expect(list.delete(7)).toBe(false);
    expect(list.delete(21)).toBe(false);
    expectSame(list, [1, 2, 3, 4, 5, 6, ...Array.from({ length: 13 }, (_, i) => i + 8)]);
  });

  it('answers for a key that is not in the list from where it would be', () => {
    const list = numbers(2);
    for (const n of [10, 20, 30, 40, 50]) list.insert(n);
    expect(list.after(25, 2)).toEqual([30, 40]);
    expect(list.countAfter(25)).toBe(3);
    expect(list.after(50, 2)).toEqual([]);
    expect(list.countAfter(5)).toBe(5);
  });

  it('splits and merges its chunks as it grows and shrinks, at the default load too', () => {
    const list = numbers();
    const model = Array.from({ length: 5000 }, (_, i) => i * 2);
    for (const n of model) list.insert(n);
    for (let n = 1; n < 10_000; n += 200) {
      list.insert(n);
      model.push(n);
    }
    model.sort((a, b) => a - b);
    expectSame(list, model);
    // Empty the middle and then the start: chunks merge, then go.
    const isDropped = (n: number) => (n > 2000 && n < 8000) || n < 500;
    for (const n of model.filter(isDropped)) expect(list.delete(n)).toBe(true);
    expectSame(
      list,
      model.filter((n) => !isDropped(n)),
    );
    for (const n of model) list.delete(n);
    expectSame(list, []);
  });

  it('answers as a plain sorted array does, through any inserts and deletes', () => {
    // Runs of keys, so that lists grow to many chunks and chunks empty anywhere, the last one too.
    const run = fc.tuple(fc.integer({ min: 0, max: 500 }), fc.integer({ min: 1, max: 80 }));
    const operation = fc.oneof(fc.record({ insert: run }), fc.record({ delete: run }));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(operation, { maxLength: 40 }), (load, operations) => {
        const list = numbers(load);
        const model = new Set<number>();
        const wrongDeletes: number[] = [];
        for (const op of operations) {
          const [from, length] = 'insert' in op ? op.insert : op.delete;
          for (let n = from; n < from + length; n++) {
            if ('delete' in op) {
              if (list.delete(n) !== model.delete(n)) wrongDeletes.push(n);
            } else if (!model.has(n)) {
              list.insert(n); // keys are unique
              model.add(n);
            }
          }
        }
        expect(wrongDeletes, 'keys whose delete said the wrong thing').toEqual([]);
        expectSame(
          list,
          [...model].sort((a, b) => a - b),
        );
      }),
      { numRuns: 300 },
    );
  });
});
