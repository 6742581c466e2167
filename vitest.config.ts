import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native kernels use a process-wide thread pool; run files in forks so a
    // native fault in one file cannot take the others down.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
