import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../bench/postgres-server.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

const HOOK_TIMEOUT = 60_000;

/** A connected client; the error events of a cut connection are ignored: the tests look at what its queries do. */
async function connected(port: number): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  client.on('error', () => {});
  await client.connect();
  return client;
}

async function selectOne(client: pg.Client): Promise<unknown> {
  const result = await client.query<{ one: number }>('select 1 as one');
  return result.rows[0]?.one;
}

describe('test PostgreSQL server', () => {
  let server: PostgresServer;
  let proxy: TcpProxy;

  beforeAll(async () => {
    server = await startPostgres();
    proxy = await startTcpProxy(server.port);
  }, HOOK_TIMEOUT);

  afterAll(async () => {
    await proxy?.close();
    await server?.stop();
  }, HOOK_TIMEOUT);

  it('answers at its url, and again after a restart, with its data kept', async () => {
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    expect(await selectOne(client)).toBe(1);
    await client.query('create table kept (n int); insert into kept values (42)');
    await client.end();

    await server.restart();
    const again = await connected(server.port);
    expect(await selectOne(again)).toBe(1);
    expect((await again.query('select n from kept')).rows).toEqual([{ n: 42 }]);
    await again.end();
  });

  it('through the proxy: works, fails once cut (open and new connections), works once restored', async () => {
    const client = await connected(proxy.port);
    expect(await selectOne(client)).toBe(1);

    proxy.cut();
    await expect(selectOne(client)).rejects.toThrow();
    await expect(connected(proxy.port)).rejects.toThrow();

    proxy.restore();
    const after = await connected(proxy.port);
    expect(await selectOne(after)).toBe(1);
    await after.end();
  });
});
