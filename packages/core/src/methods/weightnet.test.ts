import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { countParams } from '../params.js';
import { runReference } from '../reference/executor.js';
import { conv2d } from '../reference/ops.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { weightNetKernel, weightNetParamCount, weightNetReduce } from './weightnet.js';

function wnSpec(c: number, f: number, groups: number, M: number, G: number) {
  const b = new SpecBuilder('wn', [c, 5, 5]);
  const x = b.dynamicConv2d(
    'wn',
    b.input,
    { outChannels: f, kernelSize: 3, padding: 1, groups },
    { kind: 'weightnet', M, G },
  );
  b.output(b.relu('r', b.batchNorm('bn', x)));
  return b.build();
}

function randomize(w: Map<string, Tensor>, rng: Rng): Map<string, Tensor> {
  const out = new Map(w);
  for (const [k, t] of w)
    if (!k.includes('running_var'))
      out.set(k, { shape: t.shape, data: rng.normalArray(t.data.length, 0.5) });
  return out;
}

describe('WeightNet (peers.md §5)', () => {
  it('parameter formulas (standard and depthwise, Reduce per layer)', () => {
    expect(weightNetReduce(64)).toBe(16);
    expect(weightNetReduce(512)).toBe(32);
    expect(countParams(wnSpec(4, 6, 1, 2, 2))).toBe(weightNetParamCount(4, 6, 3, 3, 2, 2) + 12);
    expect(weightNetParamCount(4, 6, 3, 3, 2, 2)).toBe(4 * 16 + 16 + 16 * 12 + 12 + 6 * 4 * 9);
    expect(countParams(wnSpec(4, 4, 4, 4, 2))).toBe(
      weightNetParamCount(4, 4, 3, 3, 4, 2, true) + 8,
    );
    expect(weightNetParamCount(4, 4, 3, 3, 4, 2, true, false)).toBe(16 * 2 * 4 + 8 + 2 * 4 * 9);
  });

  it('grouped FC hand case: T=2 groups, S=2 outputs, λ=2', () => {
    // alpha (one sample) = [1, 2 | 3, 4]; fc2 rows [a, b]: out r = a·α[t·2] + b·α[t·2+1]
    const alpha = new Float32Array([1, 2, 3, 4]);
    const fc2 = new Float32Array([1, 0, 0, 1, 1, 1, 2, -1]);
    expect([...weightNetKernel(alpha, fc2, 0, 2, 2, 2)]).toEqual([1, 2, 7, 2]);
  });

  it('M = G = 1 is a per-filter gate in weight space: W_o = α_o V_o', () => {
    const rng = new Rng(3);
    const spec = wnSpec(4, 3, 1, 1, 1);
    const w = randomize(initWeights(spec, { seed: 1 }), rng);
    const x = randomInput(rng, [2, 4, 5, 5]);
    const got = runReference(spec, w, x, { capture: ['wn'] }).get('wn')!;
    const V = w.get('wn.wn_fc2.weight')!.data; // [f·c·9, 1]
    const per = 4 * 25;
    for (let b = 0; b < 2; b++) {
      // α = σ(FC1(Reduce(GAP(x_b))))
      const g = [0, 1, 2, 3].map((ch) => {
        let s = 0;
        for (let i = 0; i < 25; i++) s += x.data[b * per + ch * 25 + i]!;
        return s / 25;
      });
      const rw = w.get('wn.reduce.weight')!.data;
      const rb = w.get('wn.reduce.bias')!.data;
      const cg = rb.length;
      const xg = Array.from(
        { length: cg },
        (_, r) => rb[r]! + g.reduce((s, gi, i) => s + gi * rw[r * 4 + i]!, 0),
      );
      const f1 = w.get('wn.wn_fc1.weight')!.data;
      const b1 = w.get('wn.wn_fc1.bias')!.data;
      const alpha = [0, 1, 2].map(
        (o) => 1 / (1 + Math.exp(-(b1[o]! + xg.reduce((s, v, i) => s + v * f1[o * cg + i]!, 0)))),
      );
      const k = new Float32Array(3 * 36);
      for (let o = 0; o < 3; o++)
        for (let i = 0; i < 36; i++) k[o * 36 + i] = alpha[o]! * V[o * 36 + i]!;
      const y = conv2d(
        { shape: [1, 4, 5, 5], data: x.data.slice(b * per, (b + 1) * per) },
        { shape: [3, 4, 3, 3], data: k },
        undefined,
        { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 },
      );
      expect(maxRelativeError(got.data.slice(b * 75, (b + 1) * 75), y.data)).toBeLessThan(1e-5);
    }
  });

  it('runs in train and inference mode, batch 1 and 3, standard and depthwise', () => {
    const rng = new Rng(8);
    for (const [c, f, g] of [
      [4, 6, 1],
      [4, 4, 4],
    ] as const) {
      const spec = wnSpec(c, f, g, 2, 2);
      const w = initWeights(spec, { seed: 2 });
      for (const n of [1, 3]) {
        const x = randomInput(rng, [n, c, 5, 5]);
        const y = runReference(spec, w, x).get('r')!;
        expect(y.shape).toEqual([n, f, 5, 5]);
        expect(y.data.every(Number.isFinite)).toBe(true);
        if (n === 3)
          expect(
            runReference(spec, w, x, { mode: 'train' }).get('r')!.data.every(Number.isFinite),
          ).toBe(true);
      }
    }
  });

  it('rejects M not divisible by G, other groups, and a conv bias, naming node and field', () => {
    expect(() => countParams(wnSpec(4, 6, 1, 3, 2))).toThrow(/node "wn".*M divisible by G/);
    expect(() => countParams(wnSpec(4, 6, 2, 2, 2))).toThrow(/groups = 1 or depthwise/);
    expect(() => wnSpec(4, 6, 1, 0, 1)).toThrow(/method\.M/);
  });
});
