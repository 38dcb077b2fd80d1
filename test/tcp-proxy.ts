import { connect, createServer, type Socket } from 'node:net';

export interface TcpProxy {
  /** the 127.0.0.1 port to connect to instead of the target */
  port: number;
  /** cuts the host off: every open connection is destroyed, and new ones are, as soon as accepted, until restore() */
  cut(): void;
  /** lets new connections through again */
  restore(): void;
  /** closes the listener and every connection */
  close(): Promise<void>;
}

/** A TCP proxy on an ephemeral 127.0.0.1 port to targetHost:targetPort, whose connections can be cut, as a network partition would. */
export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let isCut = false;
  const server = createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, targetHost);
    // Either side's end, reset or error ends the pair: the client sees what the target did.
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', end);
      socket.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  if (typeof address !== 'object' || !address) throw new Error('the proxy has no port');
  const destroyAll = (): void => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };

  return {
    port: address.port,
    cut: () => {
      isCut = true;
      destroyAll();
    },
    restore: () => {
      isCut = false;
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      destroyAll();
      await closed;
    },
  };
}
