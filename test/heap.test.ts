import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Heap } from '../src/scheduler/heap.js';

/** A task's order in the ready queue: higher priority first, then the earlier submitted. */
interface Entry {
  priority: number;
  seq: number;
}
const before = (a: Entry, b: Entry) => (a.priority !== b.priority ? a.priority > b.priority : a.seq < b.seq);
const sorted = (entries: Entry[]) => [...entries].sort((a, b) => b.priority - a.priority || a.seq - b.seq);

function drain(heap: Heap<Entry>): Entry[] {
  const out: Entry[] = [];
  for (let entry = heap.pop(); entry; entry = heap.pop()) out.push(entry);
  return out;
}

/** Operations on a heap: a push (of a priority; the entry takes the next seq), or a pop. */
const operations = fc.array(fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constant('pop' as const)), { maxLength: 300 });

describe('Heap', () => {
  it('is empty at first', () => {
    const heap = new Heap(before);
    expect(heap.size).toBe(0);
    expect(heap.peek()).toBeUndefined();
    expect(heap.pop()).toBeUndefined();
  });

  it('gives out what it was given, highest priority first, in submission order within one', () => {
    fc.assert(
      fc.property(operations, (ops) => {
        const heap = new Heap(before);
        let model: Entry[] = [];
        let seq = 0;
        for (const op of ops) {
          if (op === 'pop') {
            const expected = sorted(model)[0];
            expect(heap.peek()).toBe(expected);
            expect(heap.pop()).toBe(expected);
            model = model.filter((entry) => entry !== expected);
          } else {
            const entry = { priority: op, seq: seq++ };
            heap.push(entry);
            model.push(entry);
          }
          expect(heap.size).toBe(model.length);
        }
        expect(drain(heap)).toEqual(sorted(model));
      }),
    );
  });

  it('keeps only what filter keeps, still in order', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -3, max: 3 }), { maxLength: 200 }), fc.integer({ min: 2, max: 5 }), (priorities, every) => {
        const heap = new Heap(before);
        const entries = priorities.map((priority, seq) => ({ priority, seq }));
        for (const entry of entries) heap.push(entry);
        heap.filter((entry) => entry.seq % every !== 0);
        expect(drain(heap)).toEqual(sorted(entries.filter((entry) => entry.seq % every !== 0)));
      }),
    );
  });
});
