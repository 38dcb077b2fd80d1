import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Database, Query } from './database.js';

/** Whether a process of this host exists (a pid of another user's process counts as alive). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class NodeNameTakenError extends Error {
  override readonly name = 'NodeNameTakenError';
}

export interface LeaseOptions {
  node: string;
  address: string;
  concurrency: number;
  leaseMs: number;
  /** how many tasks this daemon runs now, shown to the others */
  running: () => number;
  /** requeues the tasks a daemon whose lease ran out left RUNNING (in the same transaction) */
  rescue: (query: Query, nodes: string[]) => Promise<void>;
  /** the lease may no longer be ours: kill every task now and start nothing */
  fence: (why: string) => void;
  /** the lease is ours again */
  resume: () => void;
  /** a renewal succeeded: `heldUntil` has moved on */
  renewed: () => void;
  log: (line: string) => void;
}

/**
 * This daemon's lease in the store. It is renewed every sixth of its length;
 * when no renewal has succeeded for half of it (counted on this host's
 * monotonic clock from when the last successful renewal was sent, which is
 * before the store set its end), the daemon fences itself: it kills its
 * tasks and starts nothing. It does so while the lease still runs, so no
 * other daemon can have taken its tasks yet (docs/cluster.md).
 */
export class Lease {
  private registered = false;
  private instance = randomUUID();
  private renewedAt = 0;
  private fenced = false;
  private renewing = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Database,
    private readonly options: LeaseOptions,
  ) {}

  private get interval(): string {
    return `${this.options.leaseMs} milliseconds`;
  }

  /**
   * Takes the node's name; a dead holder's tasks are requeued first. A name
   * held by a live lease is taken only from a daemon of this host that is
   * gone (a restart after a crash); otherwise the lease is waited for, up to
   * one and a half of its length, and NodeNameTakenError if it is renewed.
   */
  async register(): Promise<void> {
    const held = await this.tryRegister();
    if (held === undefined) return;
    // A lease that runs out without a renewal was a dead daemon's; one renewed meanwhile is a live one's.
    this.options.log(`the name "${this.options.node}" is held by ${held.by}: waiting ${Math.ceil(held.forMs)} ms for its lease to run out`);
    await new Promise((resolve) => setTimeout(resolve, held.forMs + 250));
    const still = await this.tryRegister();
    if (still !== undefined) {
      throw new NodeNameTakenError(`another live daemon is named "${this.options.node}" in this store (${still.by}): give each daemon its own --node`);
    }
  }

  /** Registers, or tells who holds the name, and for how long its lease holds yet. */
  private async tryRegister(): Promise<{ by: string; forMs: number } | undefined> {
    const { node, address, concurrency } = this.options;
    const sent = performance.now();
    const holder = await this.db.transaction(async (query) => {
      const [held] = await query<{ live: boolean; for_ms: number; host: string | null; pid: number | null; address: string }>(
        'SELECT lease_until > now() AS live, extract(epoch FROM lease_until - now()) * 1000 AS for_ms, host, pid, address FROM tm_nodes WHERE name = $1 FOR UPDATE',
        [node],
      );
      const goneFromHere = held?.host === hostname() && held.pid !== null && !isAlive(held.pid);
      if (held?.live && !goneFromHere) return { by: `the daemon at ${held.address}, pid ${held.pid} on ${held.host}`, forMs: Number(held.for_ms) };
      if (held) await this.options.rescue(query, [node]);
      this.instance = randomUUID();
      // Conditional: a daemon registering the same name at the same moment gets no row, and waits.
      const rows = await query(
        `INSERT INTO tm_nodes (name, instance, address, concurrency, lease_until, host, pid) VALUES ($1, $2, $3, $4, now() + $5::interval, $6, $7)
         ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, address = EXCLUDED.address, concurrency = EXCLUDED.concurrency,
           running = 0, started_at = now(), last_seen = now(), lease_until = EXCLUDED.lease_until, host = EXCLUDED.host, pid = EXCLUDED.pid
         WHERE $8 OR tm_nodes.lease_until < now()
         RETURNING name`,
        // $8: the row was there and is locked by this transaction, which decided to take it.
        [node, this.instance, address, concurrency, this.interval, hostname(), process.pid, held !== undefined],
      );
      return rows.length > 0 ? undefined : { by: 'another daemon starting at the same moment', forMs: this.options.leaseMs };
    });
    if (holder !== undefined) return holder;
    this.renewedAt = sent;
    this.registered = true;
    this.options.renewed();
    return undefined;
  }

  /** True while this daemon may start tasks: registered, not fenced, and within half the lease of its last renewal. */
  get held(): boolean {
    return this.registered && !this.fenced && performance.now() < this.heldUntil(0.5);
  }

  /**
   * In a claim's transaction, first: whether the store still has this
   * daemon's lease, renewed within the last half of it. The row stays
   * share-locked to the end of the transaction, so no other daemon takes
   * the lease over meanwhile (a renewal's update is not held up by it).
   */
  async confirm(query: Query): Promise<boolean> {
    const rows = await query(
      'SELECT 1 FROM tm_nodes WHERE name = $1 AND instance = $2 AND lease_until > now() + $3::interval FOR KEY SHARE',
      [this.options.node, this.instance, `${this.options.leaseMs / 2} milliseconds`],
    );
    return rows.length > 0;
  }

  /**
   * In a claim's transaction, last, once it has claimed tasks while a
   * renewal is overdue: renews the lease, from the store's clock as the statement runs (not the
   * transaction's start), and never to an earlier end. Once the transaction
   * has committed, `renewedBy` counts it from a moment taken before the
   * transaction began, so the daemon's count stays behind the store's. A
   * daemon that claims tasks on a store just back from an outage thus does
   * not fence itself a moment later for the renewals the outage cost.
   */
  async renewIn(query: Query): Promise<void> {
    await query(
      'UPDATE tm_nodes SET lease_until = GREATEST(lease_until, clock_timestamp() + $3::interval), last_seen = clock_timestamp() WHERE name = $1 AND instance = $2',
      [this.options.node, this.instance, this.interval],
    );
  }

  /**
   * Whether a claim should renew the lease as well: more than a quarter of it since the last
   * renewal, so at least one of the renewals every sixth has failed or is late (the store was away
   * or slow). Not on every claim: that would be a write more per task.
   */
  get renewalOverdue(): boolean {
    return performance.now() > this.heldUntil(0.25);
  }

  /** A renewal made by `renewIn`, whose transaction began after `sent` and has committed. */
  renewedBy(sent: number): void {
    if (this.fenced || sent <= this.renewedAt) return;
    this.renewedAt = sent;
    this.options.renewed();
  }

  /**
   * A point (performance.now()) before the lease can run out: `fraction` of
   * it past the sending of the last renewal that succeeded.
   */
  heldUntil(fraction: number): number {
    return this.renewedAt + this.options.leaseMs * fraction;
  }

  /** Renews the lease, and watches that it is renewed in time. */
  start(): void {
    const every = Math.max(50, Math.floor(this.options.leaseMs / 6));
    this.timer = setInterval(() => {
      this.watch();
      void this.renew();
    }, every);
  }

  private async renew(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    const sent = performance.now();
    try {
      const rows = await this.db.query(
        'UPDATE tm_nodes SET lease_until = now() + $3::interval, last_seen = now(), running = $4 WHERE name = $1 AND instance = $2 RETURNING name',
        [this.options.node, this.instance, this.interval, this.options.running()],
      );
      if (rows.length > 0) {
        this.renewedAt = sent;
        this.options.renewed();
        if (this.fenced) {
          this.fenced = false;
          this.options.log('the store is reachable again and the lease still held: starting tasks again');
          this.options.resume();
        }
      } else {
        // Another daemon found the lease run out and requeued this one's tasks: whatever still runs here
        // (even started after a fence) goes, and the daemon starts over under a new lease.
        this.fenceNow('the lease was taken over by the cluster', true);
        await this.register();
        this.fenced = false;
        this.options.log('registered again under a new lease');
        this.options.resume();
      }
    } catch (error) {
      if (error instanceof NodeNameTakenError) this.options.log(`${error.message}; starting nothing`);
      this.watch(); // unreachable: the watch decides when to fence
    } finally {
      this.renewing = false;
    }
  }

  /** Fences once half the lease has gone by without a renewal. */
  private watch(): void {
    if (!this.fenced && this.registered && performance.now() > this.heldUntil(0.5)) {
      this.fenceNow(`no renewal of the lease for ${Math.round(performance.now() - this.renewedAt)} ms (the store is unreachable)`);
    }
  }

  private fenceNow(why: string, again = false): void {
    if (this.fenced && !again) return;
    this.fenced = true;
    this.options.log(`${why}: killing this daemon's running tasks, which run again elsewhere; starting nothing until the store is back`);
    this.options.fence(why);
  }

  /** Stops renewing, and gives the name back (a graceful stop, once this daemon's tasks are handed back). */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.registered = false;
    await this.db.query('DELETE FROM tm_nodes WHERE name = $1 AND instance = $2', [this.options.node, this.instance]);
  }
}
