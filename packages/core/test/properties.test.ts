// Property tests (fast-check, fixed seed): the partition, the ownership and beta for random layers.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  analyzeSpec,
  initWeights,
  KwError,
  kwAssignment,
  kwBeta,
  kwCellPosition,
  planKw,
  SpecBuilder,
} from '../src/index.js';
import { fuzz } from './fuzz.js';

const layerArb = fc.record({
  outMul: fc.integer({ min: 1, max: 4 }),
  inMul: fc.integer({ min: 1, max: 4 }),
  k: fc.constantFrom(1, 3, 5),
  groups: fc.constantFrom(1, 2),
});

const caseArb = fc.record({
  base: fc.constantFrom(2, 4, 8),
  layers: fc.array(layerArb, { minLength: 1, maxLength: 4 }),
  budget: fc.constantFrom(0.25, 0.5, 1, 2, 3, 4),
  ratio: fc.constantFrom(0.5, 1),
});

function build(
  c: fc.Arbitrary<unknown> extends never
    ? never
    : {
        base: number;
        layers: { outMul: number; inMul: number; k: number; groups: number }[];
        budget: number;
        ratio: number;
      },
) {
  const b = new SpecBuilder('prop', [c.base * c.layers[0]!.inMul * c.layers[0]!.groups, 6, 6]);
  b.warehouse({ id: 'w', budget: c.budget, cellInRatio: c.ratio, cellOutRatio: c.ratio });
  let x: string = b.input;
  let cin = b.inputShape[0]!;
  c.layers.forEach((l, i) => {
    const g = cin % l.groups === 0 ? l.groups : 1;
    const out = c.base * l.outMul * g;
    x = b.dynamicConv2d(
      `l${i}`,
      x,
      { outChannels: out, kernelSize: l.k, padding: (l.k - 1) / 2, groups: g },
      { kind: 'kw', warehouse: 'w' },
    );
    cin = out;
  });
  b.output(x);
  return b.build();
}

describe('partition properties', () => {
  it('cells tile every kernel exactly once, for random layer shapes', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const spec = build({ ...c, budget: 1 });
        const plan = planKw(analyzeSpec(spec));
        const wh = plan.warehouses[0]!;
        for (const l of plan.layers.values()) {
          const [o, ig] = l.weightShape as [number, number];
          const kh = l.weightShape[2]!;
          const kw = l.weightShape[3]!;
          const cover = new Uint8Array(o * ig * kh * kw);
          for (let i = 0; i < l.m; i++) {
            const p = kwCellPosition(l, i);
            for (let co = 0; co < wh.cellOut; co++)
              for (let ci = 0; ci < wh.cellIn; ci++)
                cover[
                  (((p.o * wh.cellOut + co) * ig + p.q * wh.cellIn + ci) * kh + p.h) * kw + p.w
                ]!++;
          }
          expect(cover.every((v) => v === 1)).toBe(true);
          expect(l.m * wh.cellOut * wh.cellIn).toBe(o * ig * kh * kw);
        }
      }),
      fuzz(20240607, 150),
    );
  });

  it("owned slices sum to n and beta rows are one-hot inside the layer's own cells (or the zero cell)", () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const spec = build(c);
        let plan: ReturnType<typeof planKw>;
        try {
          plan = planKw(analyzeSpec(spec));
        } catch (e) {
          // only tiling can fail, and only for b < 1 with m not a multiple of p^2
          expect((e as { code: string }).code).toBe('BUDGET_CANNOT_TILE');
          expect(c.budget).toBeLessThan(1);
          return;
        }
        const wh = plan.warehouses[0]!;
        let owned = 0;
        for (const l of plan.layers.values()) {
          owned += l.end - l.start;
          const beta = kwBeta(l, wh);
          expect(beta.length).toBe(l.m);
          const real = Array.from(beta).filter((j) => j !== wh.n);
          // every real pick inside [start, end), all distinct
          expect(real.every((j) => j >= l.start && j < l.end)).toBe(true);
          expect(new Set(real).size).toBe(real.length);
          if (c.budget >= 1) {
            expect(real.length).toBe(l.m);
            expect(l.end - l.start).toBe(l.m * c.budget);
          } else expect(real.length).toBe(l.end - l.start);
          if (c.budget >= 1) expect(real.length).toBe(l.m);
          else if (l.m % (1 / c.budget) ** 2 === 0) expect(real.length).toBe(l.m * c.budget);
        }
        expect(owned).toBe(wh.n);
        expect(wh.n).toBe(Math.max(Math.trunc(wh.mt * c.budget), 1));
      }),
      fuzz(7, 150),
    );
  });

  it('kwAssignment with b >= 1 strides int(b) cells per mixture', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 20 }),
        (m, b, start) => {
          const { beta, end } = kwAssignment(m, b, start, 1000);
          expect(end).toBe(start + m * b);
          beta.forEach((j, i) => {
            expect(j).toBe(start + i * b);
          });
        },
      ),
      fuzz(3, 100),
    );
  });
});

describe('initialisation', () => {
  it('refuses seeds that are not integers in [0, 2^32 - 1] instead of coercing them', () => {
    const b = new SpecBuilder('seed', [3, 8, 8]);
    b.output(b.conv2d('c', b.input, { outChannels: 4, kernelSize: 3 }));
    const spec = b.build();
    const bad = [
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      null,
      'abc',
      '1',
      2 ** 32,
      2 ** 53,
      1e300,
      -1,
      1.5,
    ];
    for (const seed of bad) {
      let err: unknown;
      try {
        initWeights(spec, { seed: seed as number });
      } catch (e) {
        err = e;
      }
      expect(err, String(seed)).toBeInstanceOf(KwError);
      expect((err as KwError).code).toBe('ARGUMENT_INVALID');
      expect((err as KwError).message).toMatch(
        /initWeights: seed must be an integer in \[0, 4294967295\], found /,
      );
      expect((err as KwError).details.actual).toBe(seed);
    }
    expect(() => initWeights(spec, { seed: 0 })).not.toThrow();
    expect(initWeights(spec, { seed: 2 ** 32 - 1 }).get('c.weight')!.data).not.toEqual(
      initWeights(spec).get('c.weight')!.data,
    );
  });

  it('is deterministic per seed and gives each owned slice Kaiming fan-out std over (end - start) * c_out', () => {
    const b = new SpecBuilder('init', [32, 4, 4]);
    b.warehouse({ id: 'w', budget: 1 });
    const x = b.dynamicConv2d(
      'a',
      b.input,
      { outChannels: 32, kernelSize: 3, padding: 1 },
      { kind: 'kw', warehouse: 'w' },
    );
    b.output(
      b.dynamicConv2d('b', x, { outChannels: 64, kernelSize: 1 }, { kind: 'kw', warehouse: 'w' }),
    );
    const spec = b.build();
    const w1 = initWeights(spec, { seed: 5 });
    expect(initWeights(spec, { seed: 5 }).get('warehouses.w')!.data).toEqual(
      w1.get('warehouses.w')!.data,
    );
    expect(initWeights(spec, { seed: 6 }).get('warehouses.w')!.data).not.toEqual(
      w1.get('warehouses.w')!.data,
    );
    const plan = planKw(analyzeSpec(spec));
    const wh = plan.warehouses[0]!;
    const data = w1.get('warehouses.w')!.data;
    const cell = wh.cellOut * wh.cellIn;
    for (const l of plan.layers.values()) {
      const slice = data.slice(l.start * cell, l.end * cell);
      const std = Math.sqrt(slice.reduce((a, v) => a + v * v, 0) / slice.length);
      const expected = Math.sqrt(2 / ((l.end - l.start) * wh.cellOut));
      expect(Math.abs(std / expected - 1)).toBeLessThan(0.05); // >= 2048 draws per slice
    }
    // attention fc2: Kaiming fan-out over its out_features, bias zero
    const fc2 = w1.get('a.attention.fc2.weight')!;
    const s2 = Math.sqrt(fc2.data.reduce((a, v) => a + v * v, 0) / fc2.data.length);
    expect(Math.abs(s2 / Math.sqrt(2 / fc2.shape[0]!) - 1)).toBeLessThan(0.05);
    expect(w1.get('a.attention.fc2.bias')!.data.every((v) => v === 0)).toBe(true);
  });
});
