import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_ROOT_VARIABLE } from './temp-root.js';

/**
 * The tests run the daemon and the CLIs as real processes, from what
 * `npm run build` makes: it is made here, once before any test (`tsc -b`
 * skips it when nothing changed), so that `npx vitest` never tests code
 * older than the source.
 */
export default function setup(): () => void {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: 'inherit' });
  // Every temp dir of the run is made in this one (the workers inherit the variable), and it goes
  // at the end: the data dirs of daemons that tests stop and leave are not left on the machine.
  const root = mkdtempSync(join(tmpdir(), 'tm-tests-'));
  chmodSync(root, 0o755); // a test may run a server as another user inside it
  process.env[TEST_ROOT_VARIABLE] = root;
  return () => {
    try {
      rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (error) {
      console.warn(`the tests' temp dir ${root} could not be removed: ${(error as Error).message}`);
    }
  };
}
