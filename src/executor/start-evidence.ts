import { renameSync, writeFileSync } from 'node:fs';
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What an executor process leaves behind when its daemon is gone: which
 * attempts it had started lately. A crash can come between a task's process
 * starting and the journal recording its pid; without this, the next daemon
 * could not tell an attempt that ran (and ended) from one that never started,
 * and the record would count starts wrongly one way or the other.
 */
const PREFIX = 'started.';
/** How long after it ended an attempt is still reported (its result may not have reached the disk). */
export const KEEP_ENDED_MS = 10_000;

/** The starts (by start id) of one executor process: running, and ended within KEEP_ENDED_MS. */
export class StartLedger {
  private readonly running = new Map<number, string>();
  private readonly ended: { key: string; at: number }[] = [];

  started(attempt: number, key: string): void {
    this.running.set(attempt, key);
  }

  finished(attempt: number): void {
    const key = this.running.get(attempt);
    if (key === undefined) return;
    this.running.delete(attempt);
    const now = Date.now();
    this.ended.push({ key, at: now });
    while (this.ended.length > 0 && this.ended[0]!.at < now - KEEP_ENDED_MS) this.ended.shift();
  }

  /** Synchronously, since the process exits right after: written whole under its final name, or not at all. */
  leave(dir: string): void {
    const keys = [...this.running.values(), ...this.ended.map((entry) => entry.key)];
    if (keys.length === 0) return;
    const file = join(dir, `${PREFIX}${process.pid}`);
    writeFileSync(`${file}.tmp`, `${keys.join('\n')}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }
}

/** The attempts that earlier executor processes reported starting, and the files that said so. */
export async function readStartEvidence(dir: string): Promise<{ attempts: Set<string>; files: string[] }> {
  const files = (await readdir(dir)).filter((name) => name.startsWith(PREFIX)).map((name) => join(dir, name));
  const attempts = new Set<string>();
  for (const file of files) {
    if (file.endsWith('.tmp')) continue;
    for (const key of (await readFile(file, 'utf8')).split('\n')) if (key) attempts.add(key);
  }
  return { attempts, files };
}

/** Once what the evidence told is in the journal. */
export async function removeStartEvidence(files: string[]): Promise<void> {
  await Promise.all(files.map((file) => unlink(file).catch(() => undefined)));
}
