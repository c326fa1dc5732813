import { defineConfig } from 'vitest/config';

// Integration tests start real brokers and LB processes: generous but bounded timeouts.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A test's process.kill(0 | -1 | -its own group) throws instead of killing vitest and the CI job with it.
    setupFiles: ['test/helpers/signal-guard.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // 2-core machine: real brokers + LB processes per file; keep concurrency modest.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
