import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { countParams } from '../params.js';
import { runReference } from '../reference/executor.js';
import { conv2d } from '../reference/ops.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { foldSpec } from './fold.js';
import { slakParamCount } from './slak.js';
import {
  applyMask,
  cosinePruneRate,
  erkDensities,
  isUpdateStep,
  pruneByMagnitude,
  randomMask,
  regrowRandom,
  snipDensities,
} from './sparsity.js';

function slakSpec(c: number, K: number, settings: Record<string, unknown> = {}) {
  const b = new SpecBuilder('slak', [c, 8, 7]);
  const x = b.dynamicConv2d(
    'lk',
    b.input,
    { outChannels: c, kernelSize: K, padding: (K - 1) / 2, groups: c },
    { kind: 'slak', smallKernel: 3, ...settings },
  );
  b.output(b.gelu('g', x));
  return b.build();
}

function randomize(w: Map<string, Tensor>, rng: Rng, masked = false): Map<string, Tensor> {
  const out = new Map(w);
  for (const [k, t] of w) {
    let data = rng.normalArray(t.data.length, 0.5);
    if (k.includes('running_var')) data = data.map((v) => 0.5 + Math.abs(v));
    if (masked && k.endsWith('conv.weight'))
      data = applyMask(data, randomMask(data.length, 0.6, rng));
    out.set(k, { shape: t.shape, data });
  }
  return out;
}

const dwGeo = (kh: number, kw: number, c: number) => ({
  stride: [1, 1] as [number, number],
  padding: [(kh - 1) / 2, (kw - 1) / 2] as [number, number],
  dilation: [1, 1] as [number, number],
  groups: c,
});

describe('SLaK mixer (peers.md §7)', () => {
  it('parameter formula 2CKN + CN² + 6C, and dense SLaK-T-like stage arithmetic', () => {
    expect(countParams(slakSpec(4, 7))).toBe(slakParamCount(4, 7, 3));
    expect(slakParamCount(4, 7, 3)).toBe(2 * 4 * 7 * 3 + 4 * 9 + 24);
    expect(countParams(slakSpec(4, 3))).toBe(slakParamCount(4, 3, 3)); // N = K: no small branch
    expect(slakParamCount(4, 3, 3)).toBe(2 * 4 * 9 + 16);
    // K = 51, N = 5: 535 taps per channel vs 2601 dense (§7.2)
    expect((2 * 51 * 5 + 25) / (51 * 51)).toBeCloseTo(0.2057, 4);
  });

  it('forward = three centred branches + BN, hand-built from plain ops (batch 1, 3; inference, train)', () => {
    const rng = new Rng(2);
    const c = 3;
    const spec = slakSpec(c, 7);
    const w = randomize(initWeights(spec, { seed: 1 }), rng);
    for (const mode of ['inference', 'train'] as const) {
      for (const n of [1, 3]) {
        const x = randomInput(rng, [n, c, 8, 7]);
        const got = runReference(spec, w, x, { mode, capture: ['lk'] }).get('lk')!;
        const sum = new Float32Array(got.data.length);
        for (const [b, kh, kw] of [
          ['LoRA1', 7, 3],
          ['LoRA2', 3, 7],
          ['small_conv', 3, 3],
        ] as const) {
          const y = conv2d(x, w.get(`lk.${b}.conv.weight`)!, undefined, dwGeo(kh, kw, c));
          // BN by hand
          const plane = 56;
          for (let ch = 0; ch < c; ch++) {
            let mean = w.get(`lk.${b}.bn.running_mean`)!.data[ch]!;
            let v = w.get(`lk.${b}.bn.running_var`)!.data[ch]!;
            if (mode === 'train') {
              let s = 0;
              let s2 = 0;
              for (let i = 0; i < n; i++)
                for (let p = 0; p < plane; p++) s += y.data[(i * c + ch) * plane + p]!;
              mean = s / (n * plane);
              for (let i = 0; i < n; i++)
                for (let p = 0; p < plane; p++)
                  s2 += (y.data[(i * c + ch) * plane + p]! - mean) ** 2;
              v = s2 / (n * plane);
            }
            const g = w.get(`lk.${b}.bn.weight`)!.data[ch]!;
            const beta = w.get(`lk.${b}.bn.bias`)!.data[ch]!;
            for (let i = 0; i < n; i++)
              for (let p = 0; p < plane; p++) {
                const q = (i * c + ch) * plane + p;
                sum[q]! += ((y.data[q]! - mean) / Math.sqrt(v + 1e-5)) * g + beta;
              }
          }
        }
        expect(maxRelativeError(got.data, sum)).toBeLessThan(1e-5);
      }
    }
  });

  for (const form of ['strips', 'full'] as const) {
    it(`fold (${form}) equals three branches + BN to 1e-5, with 40 % random masks, batch 1 and 3`, () => {
      const rng = new Rng(form === 'full' ? 5 : 6);
      const spec = slakSpec(4, 7, { fold: form });
      const w = randomize(initWeights(spec, { seed: 2 }), rng, true);
      const folded = foldSpec(spec, w);
      const convs = folded.spec.nodes.filter((q) => q.op === 'conv2d');
      expect(convs.length).toBe(form === 'full' ? 1 : 2);
      expect(folded.spec.nodes.some((q) => q.op === 'dynamicConv2d')).toBe(false);
      for (const n of [1, 3]) {
        const x = randomInput(rng, [n, 4, 8, 7]);
        const a = runReference(spec, w, x).get('g')!;
        const b = runReference(folded.spec, folded.weights, x).get('g')!;
        expect(maxRelativeError(b.data, a.data)).toBeLessThan(1e-5);
      }
    });
  }

  it('rejects non-depthwise, non-"same" padding, even smallKernel, bias', () => {
    const b = new SpecBuilder('x', [4, 8, 8]);
    b.output(
      b.dynamicConv2d(
        'q',
        b.input,
        { outChannels: 4, kernelSize: 7, padding: 3, groups: 2 },
        { kind: 'slak' },
      ),
    );
    expect(() => countParams(b.build())).toThrow(/node "q".*depthwise/);
    const b2 = new SpecBuilder('x', [4, 8, 8]);
    b2.output(
      b2.dynamicConv2d(
        'q',
        b2.input,
        { outChannels: 4, kernelSize: 7, padding: 1, groups: 4 },
        { kind: 'slak' },
      ),
    );
    expect(() => countParams(b2.build())).toThrow(/padding/);
    expect(() => slakSpec(4, 7, { smallKernel: 4 })).toThrow(/method\.smallKernel.*odd/);
    expect(() => slakSpec(4, 7, { fold: 'x' })).toThrow(/method\.fold/);
  });
});

describe('SLaK dynamic sparsity (peers.md §7.3)', () => {
  it('ERK: total density is met, densities ∝ Σshape/Πshape, dense layers capped at 1', () => {
    const shapes = [
      [3, 1, 7, 7],
      [256, 256],
      [512, 512],
    ];
    const d = erkDensities(shapes, 0.5);
    const n = shapes.map((s) => s.reduce((a, b) => a * b, 1));
    const kept = d.reduce((a, di, i) => a + di * n[i]!, 0);
    expect(kept / n.reduce((a, b) => a + b, 0)).toBeCloseTo(0.5, 10);
    expect(d[0]).toBe(1); // the small layer saturates
    const r = (s: number[]) => s.reduce((a, b) => a + b, 0) / s.reduce((a, b) => a * b, 1);
    expect(d[1]! / d[2]!).toBeCloseTo(r(shapes[1]!) / r(shapes[2]!), 10);
  });

  it('SNIP: hand case — global top-k threshold, per-layer fraction above it', () => {
    const d = snipDensities([new Float32Array([5, 1, 4, 0]), new Float32Array([3, 2])], 0.5);
    // 6 scores, keep 3: threshold = 3rd largest = 3 -> strictly above: layer0 {5,4}, layer1 {}
    expect(d).toEqual([0.5, 0]);
  });

  it('masks are seeded and hit the density; prune removes the smallest, regrow restores the expected count', () => {
    const m1 = randomMask(20000, 0.6, new Rng(1));
    const m2 = randomMask(20000, 0.6, new Rng(1));
    expect(m1).toEqual(m2);
    expect(m1.reduce((a, b) => a + b, 0) / 20000).toBeCloseTo(0.6, 1);
    const w = new Float32Array([0.1, -3, 0.5, 2, -0.2, 1]);
    const mask = new Uint8Array([1, 1, 0, 1, 1, 1]);
    const { mask: pruned, removed } = pruneByMagnitude(w, mask, 0.5);
    // nonzeros 5 -> remove ceil(2.5) = 3: |0.1|, |-0.2|, |1|; the masked 0.5 stays off
    expect(removed).toBe(3);
    expect([...pruned]).toEqual([0, 1, 0, 1, 0, 0]);
    const rng = new Rng(4);
    const big = rng.normalArray(10000);
    const bm = randomMask(10000, 0.6, rng);
    const p = pruneByMagnitude(big, bm, 0.3);
    const g = regrowRandom(p.mask, p.removed, rng);
    const before = bm.reduce((a, b) => a + b, 0);
    const after = g.reduce((a, b) => a + b, 0);
    expect(Math.abs(after - before) / before).toBeLessThan(0.03);
    for (let i = 0; i < 10000; i++) if (p.mask[i]) expect(g[i]).toBe(1);
  });

  it('cosine prune rate and update interval', () => {
    expect(cosinePruneRate(0, 100, 0.5)).toBeCloseTo(0.5, 12);
    expect(cosinePruneRate(50, 100, 0.5)).toBeCloseTo(0.005 + 0.495 / 2, 12);
    expect(cosinePruneRate(100, 100, 0.5)).toBeCloseTo(0.005, 12);
    expect([1, 99, 100, 200].map((s) => isUpdateStep(s, 100))).toEqual([false, false, true, true]);
    expect(() => isUpdateStep(1, 0)).toThrow(/interval/);
  });
});
