import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { processStartTime } from '../src/executor/process-info.js';
import { selectSpawner } from '../src/executor/spawner.js';
import { removeDir, tempDir } from './helpers.js';

const dir = tempDir('tm-spawner-');
afterAll(() => removeDir(dir));

describe.each(['native', 'node'])('the %s spawner', (path) => {
  const { spawner } = selectSpawner(path);

  // The start time is how a pid is told from a later process given the same pid (after a crash,
  // leftovers are killed only when both match): it must be what /proc shows, to the tick.
  it('reports the start time /proc shows for the process, start after start', async () => {
    const starts = 300;
    const mismatches: string[] = [];
    for (let i = 0; i < starts; i++) {
      const output = { stdout: join(dir, `${path}-${i}.out`), stderr: join(dir, `${path}-${i}.err`) };
      // cat waits on its stdin, so the process is there to be read until the pipe is closed.
      const started = spawner.start({ file: 'cat', argv: [], env: { base: { PATH: process.env.PATH ?? '' }, own: {} }, cwd: undefined, stdinPipe: true, output, limit: 1024, sync: false });
      expect(started.pid).toBeGreaterThan(0);
      const shown = processStartTime(started.pid!);
      if (started.startTime !== shown) mismatches.push(`pid ${started.pid}: reported ${started.startTime}, /proc ${shown}`);
      started.stdin!.end();
      expect(await started.ended).toMatchObject({ code: 0, signal: null });
    }
    expect(mismatches).toEqual([]);
  });
});
