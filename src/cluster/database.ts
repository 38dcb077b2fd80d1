import { EventEmitter } from 'node:events';
import pg from 'pg';

/** Runs one statement; the rows it returns. */
export type Query = <Row extends object = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<Row[]>;

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', '57P01', '57P02', '57P03', '53300', '25P03']);
/** Errors of a transaction that a new try may not meet: serialization failure, deadlock. */
const RETRY_CODES = new Set(['40001', '40P01']);

/** The server could not be reached, went away or is starting: worth trying again later. */
export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08'))) return true;
  const message = error instanceof Error ? error.message : '';
  return /Connection terminated|connection timeout|timeout exceeded|Query read timeout|Client has encountered a connection error|not queryable|the database system is/i.test(message);
}

/** How often the listening connection is checked. */
const PING_MS = 5000;

/** How long a start or a request waits for a store that cannot be reached: 10 s, or the lease if shorter, since a fence comes at half of it. */
export const storePatienceMs = (leaseMs: number): number => Math.min(10_000, leaseMs);

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A pool of connections to the store, and transactions tried again when the server went away before they committed. */
export class Database {
  private readonly pool: pg.Pool;

  constructor(
    readonly url: string,
    /** a statement that has not answered by then counts as unreachable */
    readonly queryTimeoutMs: number,
    connections = 8,
  ) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: connections,
      connectionTimeoutMillis: queryTimeoutMs,
      query_timeout: queryTimeoutMs,
      // A daemon frozen inside a transaction (SIGSTOP, a stalled event loop) would hold its row locks
      // for as long as it stays frozen, and the others skip locked rows: the server ends it instead.
      idle_in_transaction_session_timeout: queryTimeoutMs,
      keepAlive: true,
    });
    this.pool.on('error', () => undefined); // an idle connection lost: the pool opens another when one is needed
  }

  async query<Row extends object = Record<string, unknown>>(text: string, values?: unknown[]): Promise<Row[]> {
    return (await this.pool.query<Row>(text, values)).rows;
  }

  /** One transaction: committed if `work` resolves, rolled back if it throws. */
  async transaction<T>(work: (query: Query) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    // The server going away is told to a checked-out client as an 'error' event as well: the statement's rejection reports it.
    const lost = (error: Error) => (broken ??= error);
    client.on('error', lost);
    const query: Query = async <Row extends object>(text: string, values?: unknown[]) => (await client.query<Row>(text, values)).rows;
    try {
      await client.query('BEGIN');
      const result = await work(query);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
      if (isUnreachable(error)) broken ??= error as Error;
      throw error;
    } finally {
      client.off('error', lost);
      client.release(broken); // a connection in doubt is closed, not reused
    }
  }

  /**
   * Runs `work` again while the store is unreachable (or a transaction met a
   * deadlock), for up to `patienceMs`; then the last error is thrown.
   */
  async patiently<T>(work: () => Promise<T>, patienceMs: number): Promise<T> {
    const giveUpAt = Date.now() + patienceMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        return await work();
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        const again = isUnreachable(error) || (typeof code === 'string' && RETRY_CODES.has(code));
        if (!again || Date.now() + delay > giveUpAt) throw error;
        await pause(delay);
      }
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

interface ListenerEvents {
  notification: [channel: string, payload: string];
  /** listening (again): notices sent while it was not may have been missed */
  connected: [];
}

/** One connection that LISTENs, opened again whenever it is lost. */
export class Listener extends EventEmitter<ListenerEvents> {
  private client: pg.Client | undefined;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly channels: readonly string[],
    private readonly connectTimeoutMs: number,
  ) {
    super();
  }

  start(): void {
    void this.connect(100);
  }

  private async connect(nextDelay: number): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.url,
      connectionTimeoutMillis: this.connectTimeoutMs,
      query_timeout: this.connectTimeoutMs,
      keepAlive: true,
    });
    this.client = client;
    let lost = false;
    const reconnect = () => {
      if (lost) return;
      lost = true;
      client.removeAllListeners('notification');
      void client.end().catch(() => undefined);
      if (!this.closed) this.retry = setTimeout(() => void this.connect(Math.min(nextDelay * 2, 2000)), nextDelay);
    };
    client.on('error', reconnect);
    client.on('end', reconnect);
    client.on('notification', ({ channel, payload }) => this.emit('notification', channel, payload ?? ''));
    try {
      await client.connect();
      for (const channel of this.channels) await client.query(`LISTEN ${channel}`);
      nextDelay = 100;
      this.emit('connected');
      // A connection gone silent (a host cut off without a reset) tells nothing: a query now and then finds out.
      const ping = setInterval(() => {
        if (lost) return clearInterval(ping);
        client.query('SELECT 1').catch(() => {
          clearInterval(ping);
          reconnect();
        });
      }, PING_MS);
      ping.unref();
    } catch {
      reconnect();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.client?.end().catch(() => undefined);
  }
}
