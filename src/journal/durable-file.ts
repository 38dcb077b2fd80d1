import { open } from 'node:fs/promises';

/** Makes the names in `dir` durable: a file created, renamed or removed there survives power loss. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
