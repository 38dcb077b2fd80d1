/** Where a daemon listens and a client connects when nothing else is said (docs/protocol.md). */
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 3000;
