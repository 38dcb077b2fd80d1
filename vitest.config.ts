import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Tests mostly wait on real daemons and processes: four files at a time keep 2 cores busy
    // (measured: 146 s with four, 188 s with two).
    maxWorkers: 4,
    // A worker process runs file after file instead of starting afresh for each: the suite is bound
    // by 2 cores, and starting a worker and importing the modules again for every file cost about
    // 50 s of CPU (measured: 252 s of CPU and 133 s without isolation, 282-305 s and 148-160 s with).
    // Tests keep no state across files: timers, environment stubs and daemons are restored after each.
    isolate: false,
  },
});
