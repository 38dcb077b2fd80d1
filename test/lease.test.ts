import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Database, Query } from '../src/cluster/database.js';
import { Lease } from '../src/cluster/lease.js';

/**
 * The lease's rules with a stand-in store and a clock the test moves: when a
 * daemon may start tasks, and what counts as a renewal.
 */

const LEASE_MS = 1000;

/** A store that holds this daemon's lease (or, once `lost`, no longer does): every statement goes through. */
function storeOfOne() {
  const store = { lost: false, statements: [] as string[] };
  const query = (async (text: string) => {
    store.statements.push(text.split(' ')[0]!);
    if (text.includes('FOR KEY SHARE')) return store.lost ? [] : [{ held: 1 }]; // a claim's check of the lease
    if (text.startsWith('SELECT')) return []; // registering: no one else holds the name
    return store.lost ? [] : [{ name: 'node-a' }];
  }) as Query;
  const db = { query, transaction: <T>(work: (query: Query) => Promise<T>) => work(query) } as unknown as Database;
  return { store, db, query };
}

function leaseOn(db: Database): Lease {
  return new Lease(db, {
    node: 'node-a',
    address: '127.0.0.1:3000',
    concurrency: 1,
    leaseMs: LEASE_MS,
    running: () => 0,
    rescue: async () => undefined,
    fence: () => undefined,
    resume: () => undefined,
    renewed: () => undefined,
    log: () => undefined,
  });
}

describe('the lease', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets the daemon start tasks for half the lease after a renewal, and no longer', async () => {
    const lease = leaseOn(storeOfOne().db);
    await lease.register();
    expect(lease.held).toBe(true);
    vi.advanceTimersByTime(LEASE_MS / 2 - 10);
    expect(lease.held).toBe(true);
    vi.advanceTimersByTime(20);
    expect(lease.held).toBe(false);
  });

  // A store back from an outage: the daemon claims tasks at once, before its next plain renewal is due.
  // Were the claim not a renewal, the daemon would fence itself a moment later and kill what it just started.
  it("counts a claim's renewal, once committed, as a renewal from before its transaction began", async () => {
    const { db, query, store } = storeOfOne();
    const lease = leaseOn(db);
    await lease.register();
    expect(lease.renewalOverdue).toBe(false); // just renewed: a claim writes nothing more
    vi.advanceTimersByTime(LEASE_MS / 2 - 100);
    expect(lease.renewalOverdue).toBe(true); // renewals have failed: a claim renews as well
    const sent = performance.now();
    vi.advanceTimersByTime(50); // the transaction's own time
    expect(await lease.confirm(query)).toBe(true);
    await lease.renewIn(query);
    expect(store.statements.slice(-2)).toEqual(['SELECT', 'UPDATE']);
    lease.renewedBy(sent);
    vi.advanceTimersByTime(150); // past half the lease from registering, within it from the claim
    expect(lease.held).toBe(true);
    vi.advanceTimersByTime(LEASE_MS / 2 - 200 + 10); // half the lease from `sent`, not from the commit
    expect(lease.held).toBe(false);
  });

  it('gives a claim nothing once the store no longer holds the lease for this daemon', async () => {
    const { db, query, store } = storeOfOne();
    const lease = leaseOn(db);
    await lease.register();
    store.lost = true; // another daemon took it over
    expect(await lease.confirm(query)).toBe(false);
  });
});
