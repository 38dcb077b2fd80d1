import { createServer, type Server, type Socket } from 'node:net';
import { encodeLine, errorResponse, requestError } from '../protocol/index.js';
import { Connection } from './connection.js';
import type { DaemonContext } from './context.js';
import type { HttpFront } from './http/front.js';
import { sniffProtocol } from './sniff.js';

/** The daemon's listening port: lines and HTTP on one socket, whatever store holds the tasks. */
export interface Port {
  port: number;
  /** stops accepting connections */
  refuse(): void;
  /** ends every connection (waiters are told first by the context's `stopping`) */
  close(): Promise<void>;
}

export async function openPort(ctx: DaemonContext): Promise<Port> {
  const { config } = ctx;
  // HTTP's framework is loaded with the first HTTP connection: a daemon spoken to in lines starts without it.
  let http: Promise<HttpFront> | undefined;
  const httpFront = () => (http ??= import('./http/front.js').then(({ startHttpFront }) => startHttpFront(ctx)));
  const connections = new Set<Connection>();
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    if (sockets.size >= config.maxConnections) {
      socket.on('error', () => undefined);
      socket.end(encodeLine(errorResponse(undefined, requestError.TOO_MANY_CONNECTIONS(config.maxConnections))));
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined); // a reset while the protocol is told is no error; 'close' follows
    sniffProtocol(socket, (protocol, ended) => {
      if (protocol === 'http') {
        return void httpFront().then(
          (front) => {
            if (!socket.destroyed) front.accept(socket);
          },
          (error: Error) => {
            http = undefined; // tried again with the next HTTP connection
            config.log(`HTTP could not be served: ${error.stack ?? error.message}`);
            socket.destroy();
          },
        );
      }
      const connection = new Connection(socket, ctx, ended);
      connections.add(connection);
      socket.on('close', () => connections.delete(connection));
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : config.port,
    refuse: () => server.close(),
    close: async () => {
      for (const connection of connections) connection.close();
      await (await http?.catch(() => undefined))?.close();
      const closing = [...sockets].map((socket) => new Promise((done) => socket.once('close', done)));
      const patience = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, 1000);
      await Promise.all(closing);
      clearTimeout(patience);
    },
  };
}
