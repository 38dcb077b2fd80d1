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

  it('lets a message pushed for later wait for the next batch, or go alone once its time is up', async () => {
    const { box, batches, sent } = outbox();
    const together = sent();
    box.pushLater('spawned 1', 60_000);
    box.push('result 2');
    await together;
    expect(batches).toEqual([['spawned 1', 'result 2']]);
    const alone = sent();
    const start = performance.now();
    box.pushLater('spawned 3', 20);
    await alone;
    expect(performance.now() - start).toBeGreaterThanOrEqual(15);
    expect(batches.at(-1)).toEqual(['spawned 3']);
  });

  it('takes back queued messages that are withdrawn', async () => {
    const { box, batches, sent } = outbox();
    const one = sent();
    box.pushLater('spawned 1', 60_000);
    box.withdraw((message) => message === 'spawned 1');
    box.push('result 1');
    await one;
    expect(batches).toEqual([['result 1']]);
  });
});
