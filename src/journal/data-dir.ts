import { chmod, mkdir, stat } from 'node:fs/promises';

/**
 * Creates the data dir (mode 700), or tightens an existing one that others
 * can list or enter: it holds task commands, environments and output. A
 * directory with the sticky bit (such as /tmp) is shared by design, and
 * changing its mode would lock its other users out: it is only warned about.
 */
export async function prepareDataDir(dir: string, warn: (message: string) => void): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const mode = (await stat(dir)).mode & 0o7777;
  if ((mode & 0o077) === 0) return;
  const shown = mode.toString(8);
  if (mode & 0o1000) {
    warn(`data dir ${dir} is a shared directory (mode ${shown}); its mode was left alone, but a dedicated --data-dir is safer: it holds task commands, environments and output`);
    return;
  }
  await chmod(dir, 0o700);
  warn(`data dir ${dir} had mode ${shown}; changed it to 700, since it holds task commands, environments and output`);
}
