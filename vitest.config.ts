import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Tests start real daemons and processes: two files at a time suit a 2-core machine.
    maxWorkers: 2,
  },
});
