import { describe, expect, it } from 'vitest';
import { Outbox } from '../src/executor/outbox.js';

/** An outbox whose batches are kept, and a promise of the next one. */
function outbox() {
  const batches: string[][] = [];
  let next: (() => void) | undefined;
  const box = new Outbox<string>((batch) => {
    batches.push(batch);
    next?.();
  });
  const sent = () => new Promise<void>((resolve) => (next = resolve));
  return { box, batches, sent };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));

describe('Outbox', () => {
  it('sends what one turn of the event loop pushed as one batch', async () => {
    const { box, batches, sent } = outbox();
    const one = sent();
    box.push('a');
    box.push('b');
    await one;
    const two = sent();
    box.push('c');
    await two;
    expect(batches).toEqual([['a', 'b'], ['c']]);
  });

  it('sends at once on flush, and the turn then sends nothing more', async () => {
    const { box, batches } = outbox();
    box.push('lease');
    box.flush();
    expect(batches).toEqual([['lease']]);
    box.flush();
    await nextTurn();
    expect(batches).toEqual([['lease']]);
  });
});
