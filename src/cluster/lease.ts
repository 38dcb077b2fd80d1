import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Database, Query } from './database.js';

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
  /** true while this daemon may start tasks */
  held = false;
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

  /** Takes the node's name: refused while another live daemon holds it; a dead one's tasks are requeued first. */
  async register(): Promise<void> {
    const { node, address, concurrency } = this.options;
    const sent = performance.now();
    await this.db.transaction(async (query) => {
      const [held] = await query<{ live: boolean; lease_until: Date }>(
        'SELECT lease_until > now() AS live, lease_until FROM tm_nodes WHERE name = $1 FOR UPDATE',
        [node],
      );
      if (held?.live) {
        throw new NodeNameTakenError(
          `another live daemon is named "${node}" in this store (its lease runs until ${held.lease_until.toISOString()}): give each daemon its own --node`,
        );
      }
      if (held) await this.options.rescue(query, [node]);
      this.instance = randomUUID();
      await query(
        `INSERT INTO tm_nodes (name, instance, address, concurrency, lease_until) VALUES ($1, $2, $3, $4, now() + $5::interval)
         ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, address = EXCLUDED.address, concurrency = EXCLUDED.concurrency,
           running = 0, started_at = now(), last_seen = now(), lease_until = EXCLUDED.lease_until`,
        [node, this.instance, address, concurrency, this.interval],
      );
    });
    this.renewedAt = sent;
    this.held = true;
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
          this.held = true;
          this.options.log('the store is reachable again and the lease still held: starting tasks again');
          this.options.resume();
        }
      } else {
        // Another daemon found the lease run out and requeued this one's tasks: start over under a new lease.
        this.fenceNow('the lease was taken over by the cluster');
        await this.register();
        this.fenced = false;
        this.options.log('registered again under a new lease');
        this.options.resume();
      }
    } catch {
      this.watch(); // unreachable: the watch decides when to fence
    } finally {
      this.renewing = false;
    }
  }

  /** Fences once half the lease has gone by without a renewal. */
  private watch(): void {
    if (!this.fenced && this.held && performance.now() > this.heldUntil(0.5)) {
      this.fenceNow(`no renewal of the lease for ${Math.round(performance.now() - this.renewedAt)} ms (the store is unreachable)`);
    }
  }

  private fenceNow(why: string): void {
    if (this.fenced) return;
    this.fenced = true;
    this.held = false;
    this.options.log(`${why}: killing this daemon's running tasks, which run again elsewhere; starting nothing until the store is back`);
    this.options.fence(why);
  }

  /** Gives the name back (a graceful stop, once this daemon's tasks are handed back). */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.held = false;
    await this.db.query('DELETE FROM tm_nodes WHERE name = $1 AND instance = $2', [this.options.node, this.instance]);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
