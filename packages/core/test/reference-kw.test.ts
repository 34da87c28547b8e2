// Hand-derived checks of the reference KernelWarehouse layer (reference/kernelwarehouse.md §1.6, §2.2-2.4).
import { describe, expect, it } from 'vitest';
import {
  initWeights,
  type KwLayerPlan,
  type KwWarehousePlan,
  kwAttention,
  kwBeta,
  kwCellPosition,
  type ModelSpec,
  maxRelativeError,
  paramTable,
  runReference,
  staticBaseline,
  type Tensor,
  type WeightMap,
} from '../src/index.js';
import { perturb, Rng, randomInput, tinyKwSpec } from '../src/testing.js';

/** Weights with every tensor randomised (BN stats positive), so no path is trivially zero. */
function randomWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  for (const [name, t] of w) {
    if (name.endsWith('running_var'))
      w.set(name, { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) });
    else w.set(name, perturb(rng, t, 0.1));
  }
  return w;
}

/** The kernel a KW layer has at tau = 1: the beta-selected cells placed by the index map (zero cell -> zeros). */
function betaKernel(l: KwLayerPlan, wh: KwWarehousePlan, warehouse: Tensor): Float32Array {
  const beta = kwBeta(l, wh);
  const [o, ig] = l.weightShape as [number, number];
  const kh = l.kind === 'conv2d' ? l.weightShape[2]! : 1;
  const kw = l.kind === 'conv2d' ? l.weightShape[3]! : 1;
  const out = new Float32Array(o * ig * kh * kw);
  for (let i = 0; i < l.m; i++) {
    const j = beta[i]!;
    if (j === wh.n) continue;
    const pos = kwCellPosition(l, i);
    for (let co = 0; co < wh.cellOut; co++) {
      for (let ci = 0; ci < wh.cellIn; ci++) {
        const v = warehouse.data[(j * wh.cellOut + co) * wh.cellIn + ci]!;
        out[(((pos.o * wh.cellOut + co) * ig + pos.q * wh.cellIn + ci) * kh + pos.h) * kw + pos.w] =
          v;
      }
    }
  }
  return out;
}

/** The static network that a KW network equals at tau = 1. */
function staticEquivalent(spec: ModelSpec, w: WeightMap): { spec: ModelSpec; weights: WeightMap } {
  const t = paramTable(spec);
  const base = staticBaseline(spec);
  const bt = paramTable(base);
  const weights: WeightMap = new Map();
  for (const p of bt.params) {
    const l = t.kw.layers.get(p.node ?? '');
    if (l && p.name === `${l.node}.weight`) {
      const wh = t.kw.warehouses.find((x) => x.id === l.warehouse)!;
      weights.set(p.name, {
        shape: p.shape,
        data: betaKernel(l, wh, w.get(`warehouses.${wh.id}`)!),
      });
    } else {
      weights.set(p.name, w.get(p.name)!);
    }
  }
  return { spec: base, weights };
}

describe('KW at tau = 1 equals a static network of beta-selected cells', () => {
  const cases: [string, ModelSpec][] = [
    ['b = 1', tinyKwSpec({ budget: 1 })],
    ['b = 2', tinyKwSpec({ budget: 2 })],
    ['b = 1/2, cells halved', tinyKwSpec({ budget: 0.5, cellRatio: 0.5, kwClassifier: true })],
    [
      'b = 1, LayerNorm attention, KW classifier',
      tinyKwSpec({ budget: 1, norm: 'layer', kwClassifier: true }),
    ],
  ];
  for (const [label, spec] of cases) {
    it(label, () => {
      const w = randomWeights(spec, 11);
      const x = randomInput(new Rng(5), [3, ...spec.inputShape]);
      const eq = staticEquivalent(spec, w);
      const kwOut = runReference(spec, w, x, { temperature: 1 }).get(spec.outputs[0]!)!;
      const stOut = runReference(eq.spec, eq.weights, x).get(spec.outputs[0]!)!;
      // same arithmetic up to summation order: float32 rounding only
      expect(maxRelativeError(kwOut.data, stOut.data)).toBeLessThan(1e-5);
      // and tau = 0 really is different (the check can fail)
      const kw0 = runReference(spec, w, x, { temperature: 0 }).get(spec.outputs[0]!)!;
      expect(maxRelativeError(kw0.data, stOut.data)).toBeGreaterThan(1e-3);
    });
  }

  it('in inference at tau = 1 the attention is not run (constant); in training, and below 1, it is', () => {
    const spec = tinyKwSpec({ budget: 0.5, cellRatio: 0.5, kwClassifier: true });
    const w = randomWeights(spec, 12);
    const x = randomInput(new Rng(6), [2, ...spec.inputShape]);
    const eq = staticEquivalent(spec, w);
    const want = runReference(eq.spec, eq.weights, x).get(spec.outputs[0]!)!;
    // every attention weight +-1e38 (weights must be finite): a forward that ran the attention
    // overflows to infinite logits, and CAF's z / sum|z| is NaN
    const poisoned: WeightMap = new Map(w);
    let n = 0;
    for (const [name, t] of w)
      if (/\.attention\.fc\d\.weight$/.test(name)) {
        poisoned.set(name, { shape: t.shape, data: t.data.map((v) => (v < 0 ? -1e38 : 1e38)) });
        n++;
      }
    expect(n).toBeGreaterThan(0);
    const out = (o: { temperature: number; mode?: 'train' }) =>
      runReference(spec, poisoned, x, o).get(spec.outputs[0]!)!.data;
    expect(maxRelativeError(out({ temperature: 1 }), want.data)).toBeLessThan(1e-5);
    expect(out({ temperature: 1 - 2 ** -24 }).some(Number.isNaN)).toBe(true);
    expect(out({ temperature: 1, mode: 'train' }).some(Number.isNaN)).toBe(true);
  });

  it('b = 1/2 gives a checkerboard of zero blocks (p = 2: C Z Z C ...)', () => {
    const spec = tinyKwSpec({ budget: 0.5, cellRatio: 0.5 });
    const t = paramTable(spec);
    const l = t.kw.layers.get('block.conv1')!;
    const wh = t.kw.warehouses[0]!;
    const beta = kwBeta(l, wh);
    const pattern = Array.from(beta.slice(0, 8), (j) => (j === wh.n ? 'Z' : 'C')).join('');
    expect(pattern).toBe('CZZCCZZC');
    const zeros = Array.from(beta).filter((j) => j === wh.n).length;
    expect(zeros).toBe(l.m / 2);
    expect(l.end - l.start).toBe(l.m / 2);
    const w = initWeights(spec, { seed: 3 });
    const k = betaKernel(l, wh, w.get('warehouses.stage0')!);
    // every zero-cell block is exactly zero, every real block is not
    for (let i = 0; i < l.m; i++) {
      const pos = kwCellPosition(l, i);
      const [, ig, kh, kw] = l.weightShape as [number, number, number, number];
      let s = 0;
      for (let co = 0; co < wh.cellOut; co++) {
        for (let ci = 0; ci < wh.cellIn; ci++) {
          s += Math.abs(
            k[
              (((pos.o * wh.cellOut + co) * ig + pos.q * wh.cellIn + ci) * kh + pos.h) * kw + pos.w
            ]!,
          );
        }
      }
      expect(s === 0).toBe(beta[i] === wh.n);
    }
  });
});

describe('KW attention', () => {
  it('at tau = 0 every mixture has sum |alpha| < 1 and attentions can be negative', () => {
    const spec = tinyKwSpec({ budget: 1 });
    const t = paramTable(spec);
    const w = randomWeights(spec, 2);
    const l = t.kw.layers.get('down')!;
    const wh = t.kw.warehouses[0]!;
    const x = randomInput(new Rng(9), [2, 8, 8, 8]);
    const { alpha } = kwAttention(l, wh, x, (n) => w.get(`down.${n}`)!, {
      mode: 'inference',
      temperature: 0,
    });
    expect(alpha.length).toBe(2 * l.m * wh.n);
    let negatives = 0;
    for (let r = 0; r < 2 * l.m; r++) {
      let s = 0;
      for (let j = 0; j < wh.n; j++) {
        s += Math.abs(alpha[r * wh.n + j]!);
        if (alpha[r * wh.n + j]! < 0) negatives++;
      }
      expect(s).toBeLessThan(1);
      expect(s).toBeGreaterThan(0);
    }
    expect(negatives).toBeGreaterThan(0);
  });

  it('non-local basis logits are [nonlocal before start | local | nonlocal after | zero] + basis_bias', () => {
    const spec = tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.25 });
    const t = paramTable(spec);
    const w = randomWeights(spec, 4);
    const l = t.kw.layers.get('block.conv2')!; // a layer with start > 0
    const wh = t.kw.warehouses[0]!;
    expect(l.start).toBeGreaterThan(0);
    const { nLocal, nNonlocal, nBasis } = l.basis!;
    expect(nLocal).toBe(l.m);
    expect(nNonlocal).toBe(wh.n - l.m);
    expect(nBasis).toBe(Math.max(Math.trunc(nNonlocal * 0.25), 16));
    const x = randomInput(new Rng(1), [1, 8, 8, 8]);
    const get = (n: string) => w.get(`block.conv2.${n}`)!;
    const { logits } = kwAttention(l, wh, x, get, { mode: 'inference', temperature: 0 });
    // independent recomputation of the hidden vector and the re-assembly
    const c = 8;
    const gap = new Float64Array(c);
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < 64; i++) gap[ch]! += x.data[ch * 64 + i]! / 64;
    const fc1 = get('attention.fc1.weight').data;
    const hdn = new Float64Array(l.hidden);
    for (let h = 0; h < l.hidden; h++) {
      let s = 0;
      for (let ch = 0; ch < c; ch++) s += fc1[h * c + ch]! * gap[ch]!;
      const g = get('attention.norm1.weight').data[h]!;
      const b = get('attention.norm1.bias').data[h]!;
      const mu = get('attention.norm1.running_mean').data[h]!;
      const v = get('attention.norm1.running_var').data[h]!;
      hdn[h] = Math.max(0, ((s - mu) / Math.sqrt(v + 1e-5)) * g + b);
    }
    const fc2 = get('attention.fc2.weight').data;
    const fc3 = get('attention.fc3.weight').data;
    const bb = get('attention.basis_bias').data;
    const per = nLocal + nBasis + 1;
    for (const i of [0, l.m - 1]) {
      const raw = Array.from({ length: per }, (_, r) => {
        let s = 0;
        for (let h = 0; h < l.hidden; h++) s += fc2[(i * per + r) * l.hidden + h]! * hdn[h]!;
        return s;
      });
      const non = Array.from({ length: nNonlocal }, (_, a) => {
        let s = 0;
        for (let k = 0; k < nBasis; k++) s += fc3[a * nBasis + k]! * raw[nLocal + k]!;
        return s;
      });
      const expected = [
        ...non.slice(0, l.start),
        ...raw.slice(0, nLocal),
        ...non.slice(l.start),
        raw[per - 1]!,
      ].map((v, k) => v + bb[i * (wh.n + 1) + k]!);
      const got = Array.from(logits.slice(i * (wh.n + 1), (i + 1) * (wh.n + 1)));
      expect(maxRelativeError(got, expected)).toBeLessThan(1e-5);
    }
  });
});

describe('per-sample kernels', () => {
  it('a batch of 3 equals three batches of 1 (inference), for every KW variant', () => {
    for (const spec of [
      tinyKwSpec({ budget: 1, kwClassifier: true }),
      tinyKwSpec({ budget: 0.5, cellRatio: 0.5, nonlocalBasisRatio: 0.5 }),
    ]) {
      const w = randomWeights(spec, 8);
      const x = randomInput(new Rng(21), [3, ...spec.inputShape]);
      const all = runReference(spec, w, x).get(spec.outputs[0]!)!;
      const per = all.data.length / 3;
      const sampleSize = x.data.length / 3;
      for (let b = 0; b < 3; b++) {
        const xb = {
          shape: [1, ...spec.inputShape],
          data: x.data.slice(b * sampleSize, (b + 1) * sampleSize),
        };
        const yb = runReference(spec, w, xb).get(spec.outputs[0]!)!;
        expect(maxRelativeError(yb.data, all.data.slice(b * per, (b + 1) * per))).toBeLessThan(
          1e-6,
        );
      }
      // and samples really differ (attention is input dependent)
      expect(
        maxRelativeError(all.data.slice(0, per), all.data.slice(per, 2 * per)),
      ).toBeGreaterThan(1e-3);
    }
  });

  it('train mode uses batch statistics (differs from inference) and refuses a single value per channel', () => {
    const spec = tinyKwSpec({ budget: 1 });
    const w = randomWeights(spec, 3);
    const x = randomInput(new Rng(2), [4, ...spec.inputShape]);
    const inf = runReference(spec, w, x).get('fc')!;
    const tr = runReference(spec, w, x, { mode: 'train' }).get('fc')!;
    expect(maxRelativeError(inf.data, tr.data)).toBeGreaterThan(1e-3);
    const x1 = randomInput(new Rng(2), [1, ...spec.inputShape]);
    expect(() => runReference(spec, w, x1, { mode: 'train' })).toThrow(
      /more than 1 value per channel/,
    );
  });
});
