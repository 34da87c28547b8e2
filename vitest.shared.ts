import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * The one vitest configuration of every package (each package's vitest.config.ts calls this).
 * `coverage`: what `vitest run --coverage` reports for the package (and its line-coverage floor).
 */
export function packageTestConfig(options: { coverage?: { lines?: number } } = {}) {
  const c = options.coverage;
  return defineConfig({
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
      // No wall-clock limit on any test or hook (issue 15): on a machine loaded 5x a test is
      // slower, not wrong. A hung test is found by the person or CI job waiting for it, not by a
      // timer.
      testTimeout: 0,
      hookTimeout: 0,
      // turbo runs one package's tests at a time (--concurrency=1); inside it, at most one test
      // file per core (KW_TEST_WORKERS overrides), so the cores are never oversubscribed.
      maxWorkers: Number(process.env.KW_TEST_WORKERS) || availableParallelism(),
      ...(c === undefined
        ? {}
        : {
            coverage: {
              provider: 'v8' as const,
              include: ['src/**/*.ts'],
              exclude: ['src/**/*.test.ts'],
              reporter: ['text-summary', 'json-summary'],
              ...(c.lines === undefined ? {} : { thresholds: { lines: c.lines } }),
            },
          }),
    },
  });
}
