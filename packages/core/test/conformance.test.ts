// The shared conformance suite itself: it covers every registered method, its checks pass for the
// reference, and it fails a backend that is wrong (a check that cannot fail would prove nothing).
import { describe, expect, it } from 'vitest';
import { runReference } from '../src/index.js';
import {
  type BackendRunner,
  CONFORMANCE_TOLERANCE,
  conformanceChecks,
  uncoveredMethods,
} from '../src/testing.js';

const reference: BackendRunner = {
  modes: ['inference', 'train'],
  run: (spec, w, x, run) => runReference(spec, w, x, run).get(spec.outputs[0]!)!,
};

describe('conformance suite', () => {
  it('has a case for every registered method (KW at several budgets)', () => {
    expect(uncoveredMethods()).toEqual([]);
    const kw = conformanceChecks(['inference']).filter((c) => c.case.method === 'kw');
    expect(new Set(kw.map((c) => c.case.name)).size).toBeGreaterThanOrEqual(4);
  });

  it('every case runs, the reference passes it exactly; a backend off by 1e-3 in one output fails it', {
    timeout: 600_000,
  }, async () => {
    const checks = conformanceChecks(['inference', 'train']);
    // every case builds and runs (once each: batch 1, inference), and the reference matches itself
    for (const c of checks.filter((k) => k.batch === 1)) {
      expect((await c.measure(reference)).error).toBe(0);
    }
    const off: BackendRunner = {
      modes: ['inference'],
      run: (spec, w, x, run) => {
        const y = runReference(spec, w, x, run).get(spec.outputs[0]!)!;
        const data = new Float32Array(y.data);
        let big = 0;
        for (let i = 0; i < data.length; i++)
          if (Math.abs(data[i]!) > Math.abs(data[big]!)) big = i;
        data[big]! *= 1.001;
        return { shape: y.shape, data };
      },
    };
    const r = await checks[0]!.measure(off);
    expect(r.error).toBeGreaterThan(CONFORMANCE_TOLERANCE);
    const wrongShape: BackendRunner = {
      modes: ['inference'],
      run: (spec, w, x, run) => {
        const y = runReference(spec, w, x, run).get(spec.outputs[0]!)!;
        return { shape: [y.data.length], data: y.data };
      },
    };
    expect((await checks[0]!.measure(wrongShape)).error).toBe(Number.POSITIVE_INFINITY);
  });
});
