/**
 * `npm install` builds the spawn addon (native/spawn.c) with node-gyp, against
 * the headers of the Node that runs it, so nothing is downloaded. It never
 * fails the install: without a C compiler or headers, tasks start with Node's
 * child_process.spawn instead, and the daemon says so when it starts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const args = ['rebuild'];
// Node's headers beside its binary (/usr/include/node for /usr/bin/node), unless npm names a dir.
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include/node/common.gypi'))) args.push(`--nodedir=${prefix}`);
const built = spawnSync('node-gyp', args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', shell: false });
if (built.status !== 0) {
  const why = built.error ? built.error.message : (built.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
  console.warn(`task-manager: the native spawn addon was not built (${why}); tasks will start with Node's child_process.spawn (docs/performance.md)`);
}
