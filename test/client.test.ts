import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ConnectionError, TaskManagerClient } from '../src/index.js';

describe('TaskManagerClient', () => {
  it('fails a request whose answer is of another op, and the connection with it', async () => {
    // A server that answers every request as if it were a health check.
    const server = createServer((socket) =>
      socket.on('data', (line) => {
        const { ref } = JSON.parse(line.toString()) as { ref: string };
        socket.write(`${JSON.stringify({ ok: true, ref, op: 'health', version: 'x', uptime_ms: 1 })}\n`);
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const client = await TaskManagerClient.connect({ port: (server.address() as AddressInfo).port });
      const status = client.status('a');
      await expect(status).rejects.toBeInstanceOf(ConnectionError);
      await expect(status).rejects.toThrow('the daemon answered a request of op "status" as one of op "health"');
      await expect(client.health()).rejects.toBeInstanceOf(ConnectionError);
    } finally {
      server.close();
    }
  });
});
