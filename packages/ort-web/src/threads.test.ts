import { availableParallelism } from 'node:os';
import { initWeights, isKwError } from '@kernelwarehouse/core';
import { tinyKwSpec } from '@kernelwarehouse/core/testing';
import { describe, expect, it } from 'vitest';
import { createSession, defaultThreads, MAX_WASM_THREADS, toOnnx } from './index.js';

describe('default wasm thread count', () => {
  it('is the cores Node reports (os.availableParallelism)', () => {
    expect(defaultThreads()).toBe(availableParallelism());
  });
});

describe('wasm thread count cap', () => {
  // 1000 threads hang session creation (~10 GB); 256 take 15 s and 2.8 GB. The first session
  // here runs on one thread, so a count that slipped through would be ignored, not started.
  it(`refuses numThreads above MAX_WASM_THREADS (${MAX_WASM_THREADS}), naming the option, the value and the maximum`, async () => {
    const spec = tinyKwSpec({ budget: 1 });
    const bytes = toOnnx(spec, initWeights(spec, { seed: 1 }));
    await createSession(bytes, { numThreads: 1 });
    expect(MAX_WASM_THREADS).toBe(64);
    for (const n of [1000, 256, MAX_WASM_THREADS + 1, 0, 2.5, Number.NaN, '4']) {
      let err: unknown;
      try {
        await createSession(bytes, { numThreads: n as number });
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'ARGUMENT_INVALID'), `numThreads ${String(n)}: ${err}`).toBe(true);
      expect((err as Error).message).toMatch(/numThreads must be an integer in \[1, 64\]/);
      expect((err as Error).message).toContain(`found ${typeof n === 'string' ? `"${n}"` : n}`);
    }
    // the maximum itself is accepted (ignored here: the first session already set the count)
    await expect(createSession(bytes, { numThreads: MAX_WASM_THREADS })).resolves.toBeDefined();
  });
});
