import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The tests run the daemon, the CLIs and `bin/cmd` as real processes, from
 * what `npm run build` makes: it is made here, once before any test, so that
 * `npx vitest` never tests code older than the source.
 */
export default function buildOnce(): void {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: 'inherit' });
}
