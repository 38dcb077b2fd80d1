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
  },
});
