import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    // No wall-clock limit on any test or hook (issue 15): on a machine loaded 5x a test is slower,
    // not wrong. A hung test is found by the person or CI job waiting for it, not by a timer.
    testTimeout: 0,
    hookTimeout: 0,
    // turbo runs one package's tests at a time (--concurrency=1); inside it, at most one test file
    // per core (KW_TEST_WORKERS overrides), so the cores are never oversubscribed by the check.
    maxWorkers: Number(process.env.KW_TEST_WORKERS) || availableParallelism(),
  },
});
