import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { processStartTime } from '../src/executor/process-info.js';
import type { Addon } from '../src/executor/native-spawner.js';
import { type SpawnRequest, selectSpawner } from '../src/executor/spawner.js';
import { removeDir, tempDir } from './helpers.js';

const dir = tempDir('tm-spawner-');
afterAll(() => removeDir(dir));

/** A start of `file`, its output kept in files named after `name`. */
const request = (file: string, name: string, stdinPipe: boolean): SpawnRequest => ({
  file,
  argv: [],
  env: { base: { PATH: process.env.PATH ?? '' }, own: {} },
  cwd: undefined,
  stdinPipe,
  output: { stdout: join(dir, `${name}.out`), stderr: join(dir, `${name}.err`) },
  limit: 1024,
  sync: false,
});

describe.each(['native', 'node'])('the %s spawner', (path) => {
  const { spawner } = selectSpawner(path);

  // The start time is how a pid is told from a later process given the same pid (after a crash,
  // leftovers are killed only when both match): it must be what /proc shows, to the tick.
  it('reports the start time /proc shows for the process, start after start', async () => {
    const starts = 300;
    const mismatches: string[] = [];
    for (let i = 0; i < starts; i++) {
      // cat waits on its stdin, so the process is there to be read until the pipe is closed.
      const started = spawner.start(request('cat', `${path}-${i}`, true));
      expect(started.pid).toBeGreaterThan(0);
      const shown = processStartTime(started.pid!);
      if (started.startTime !== shown) mismatches.push(`pid ${started.pid}: reported ${started.startTime}, /proc ${shown}`);
      started.stdin!.end();
      expect(await started.ended).toMatchObject({ code: 0, signal: null });
    }
    expect(mismatches).toEqual([]);
  });
});

// The native path takes the start time from the clock around its vfork, and reads /proc only for
// a start that straddles a tick (a vfork takes a fraction of a millisecond; a tick is 10 ms).
it('the native spawner reads /proc for few start times', async () => {
  const addon = createRequire(import.meta.url)('../build/Release/task_manager_spawn.node') as Addon;
  const { spawner } = selectSpawner('native');
  const starts = 200;
  const before = addon.procStartReads();
  for (let i = 0; i < starts; i++) {
    const started = spawner.start(request('true', `reads-${i}`, false));
    expect(await started.ended).toMatchObject({ code: 0, signal: null });
  }
  expect(addon.procStartReads() - before).toBeLessThan(starts / 2);
});
