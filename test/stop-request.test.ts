import { describe, expect, it } from 'vitest';
import { StopRequest } from '../src/executor/index.js';

describe('StopRequest', () => {
  it('tells its listener once, at once if the stop was asked for before it listened, and not after it was forgotten', () => {
    const calls: string[] = [];
    const stop = new StopRequest();
    stop.listen(() => calls.push('first'));
    expect(stop.requested).toBe(false);
    stop.request();
    stop.request();
    expect(stop.requested).toBe(true);
    stop.listen(() => calls.push('late'));
    expect(calls).toEqual(['first', 'late']);

    const forgotten = new StopRequest();
    forgotten.listen(() => calls.push('forgotten'));
    forgotten.listen(undefined);
    forgotten.request();
    expect(calls).toEqual(['first', 'late']);
  });
});
