/**
 * Calls `callback` once `signal` aborts; the returned function stops that.
 * Many waits on one signal (every `run` of a burst on the daemon's stop, or
 * on its connection) share one listener: an EventTarget looks through all
 * its listeners at every add and remove, so a thousand waiting requests cost
 * a million steps.
 */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let callbacks = registered.get(signal);
  if (!callbacks) {
    const all = new Set<() => void>();
    callbacks = all;
    registered.set(signal, all);
    signal.addEventListener('abort', () => {
      for (const call of all) call();
      all.clear();
    }, { once: true });
  }
  const own = callbacks;
  // A distinct function per call: the same callback registered twice is called twice.
  const entry = () => callback();
  own.add(entry);
  return () => own.delete(entry);
}

const registered = new WeakMap<AbortSignal, Set<() => void>>();
