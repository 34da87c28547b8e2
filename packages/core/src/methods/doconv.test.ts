import { describe, expect, it } from 'vitest';
import { isKwError } from '../errors.js';
import { initWeights } from '../init.js';
import { countParams } from '../params.js';
import { runReference } from '../reference/executor.js';
import { conv2d } from '../reference/ops.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { composeDoConvKernel, doConvDiag, doConvParamCount } from './doconv.js';
import { foldSpec } from './fold.js';

function doSpec(groups: number, c: number, f: number, k: number, dMul?: number, bias = true) {
  const b = new SpecBuilder('do', [c, 6, 5]);
  const m = dMul === undefined ? { kind: 'doconv' } : { kind: 'doconv', dMul };
  const x = b.dynamicConv2d(
    'c1',
    b.input,
    { outChannels: f, kernelSize: k, padding: 1, groups, bias },
    m,
  );
  const bn = b.batchNorm('bn', x);
  b.output(b.relu('r', bn));
  return b.build();
}

function randomize(w: Map<string, Tensor>, rng: Rng, skip = 'd_diag'): Map<string, Tensor> {
  const out = new Map(w);
  for (const [k, t] of w) {
    if (k.endsWith(skip) || k.includes('running_var')) continue;
    out.set(k, { shape: t.shape, data: rng.normalArray(t.data.length, 0.5) });
  }
  return out;
}

describe('DO-Conv (peers.md §6)', () => {
  it('hand-derived 1 in, 1 out, 2x1 kernel, D_mul = 3 composition', () => {
    // W = [1, 2, 3]; D + D_diag rows m=0: [1,0,5], m=1: [0,1,7]
    const w = new Float32Array([1, 2, 3]);
    const dd = new Float32Array([1, 0, 5, 0, 1, 7]);
    const k = composeDoConvKernel(w, dd, 1, 1, 1, 2, 3);
    expect([...k]).toEqual([1 + 15, 2 + 21]);
  });

  it('D_diag is the identity repeated floor(D_mul/MN) times, zero padded', () => {
    const d = doConvDiag(1, 2, 5);
    expect([...d]).toEqual([1, 0, 1, 0, 0, 0, 1, 0, 1, 0]);
  });

  it('grouped index rule: c=4, f=6, g=2 uses D rows [0,1],[2,3],... per output (§6.4)', () => {
    // W = 1 everywhere, D_diag = 0, D[i] = i+1 on every entry -> kernel[o, j] = MN? no: sum_s D[i,m,s]
    const c = 4;
    const f = 6;
    const g = 2;
    const mn = 1;
    const dMul = 1;
    const w = new Float32Array((f * c) / g).fill(1);
    const dd = new Float32Array([1, 2, 3, 4]);
    const k = composeDoConvKernel(w, dd, c, f, g, mn, dMul);
    expect([...k]).toEqual([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
  });

  it('rejects D_mul < kh*kw naming the node and field', () => {
    let err: unknown;
    try {
      countParams(doSpec(1, 2, 3, 3, 8));
    } catch (e) {
      err = e;
    }
    expect(isKwError(err, 'SPEC_BAD_FIELD')).toBe(true);
    expect(String(err)).toMatch(/node "c1".*method\.dMul.*>= kh\*kw = 9/);
    expect(() => doSpec(1, 2, 3, 3, 0)).toThrow(/method\.dMul/);
    const typo = new SpecBuilder('x', [2, 4, 4]);
    typo.output(
      typo.dynamicConv2d(
        'q',
        typo.input,
        { outChannels: 2, kernelSize: 3 },
        { kind: 'doconv', dmul: 9 },
      ),
    );
    expect(() => typo.build()).toThrow(/node "q".*no setting "dmul"/);
  });

  it('parameter count matches f(c/g)D_mul + c MN D_mul (+ bias), d_diag not counted', () => {
    for (const [g, c, f, k, d] of [
      [1, 4, 6, 3, 9],
      [1, 4, 6, 3, 11],
      [2, 4, 6, 3, 9],
      [4, 4, 4, 3, 9],
      [1, 4, 6, 1, 1],
    ] as const) {
      const spec = doSpec(g, c, f, k, k === 1 ? undefined : d, true);
      // + 2f for the BatchNorm after the conv
      expect(countParams(spec)).toBe(doConvParamCount(c, f, k, k, g, d, true) + 2 * f);
    }
    const s = doSpec(1, 4, 6, 3, 11);
    expect(countParams(s)).toBe(6 * 4 * 11 + 4 * 9 * 11 + 6 + 12);
    expect(doConvParamCount(64, 64, 3, 3) / (64 * 64 * 9)).toBeCloseTo(1 + 9 / 64, 12);
  });

  for (const [name, g, c, f] of [
    ['DO-Conv', 1, 3, 4],
    ['DO-DConv', 4, 4, 4],
    ['DO-GConv', 2, 4, 6],
  ] as const) {
    it(`${name}: untrained equals the plain conv of the composed W; fold is exact (batch 1 and 3)`, () => {
      const rng = new Rng(11 + g);
      const spec = doSpec(g, c, f, 3);
      const w = initWeights(spec, { seed: 3 });
      for (const n of [1, 3]) {
        const x = randomInput(rng, [n, c, 6, 5]);
        // untrained (D = 0, D_mul = MN): W' = W reshaped to [f, c/g, 3, 3]
        const wt = w.get('c1.W')!;
        const plain = conv2d(x, { shape: [f, c / g, 3, 3], data: wt.data }, w.get('c1.bias'), {
          stride: [1, 1],
          padding: [1, 1],
          dilation: [1, 1],
          groups: g,
        });
        const got = runReference(spec, w, x, { capture: ['c1'] }).get('c1')!;
        expect(maxRelativeError(got.data, plain.data)).toBeLessThan(1e-6);
      }
      const wr = randomize(w, rng);
      const folded = foldSpec(spec, wr);
      expect(folded.spec.nodes[0]!.op).toBe('conv2d');
      expect(folded.weights.has('c1.D')).toBe(false);
      for (const mode of ['inference', 'train'] as const) {
        for (const n of [1, 3]) {
          if (mode === 'train' && n === 1) continue;
          const x = randomInput(rng, [n, c, 6, 5]);
          const a = runReference(spec, wr, x, { mode }).get('r')!;
          const b = runReference(folded.spec, folded.weights, x, { mode }).get('r')!;
          expect(maxRelativeError(b.data, a.data)).toBeLessThan(1e-5);
        }
      }
    });
  }

  it('feature composition (depthwise with multiplier D_mul, then 1x1) equals kernel composition (§6.2)', () => {
    const rng = new Rng(5);
    const c = 2;
    const f = 3;
    const mn = 4;
    const dMul = 5;
    const w = rng.normalArray(f * c * dMul);
    const dd = rng.normalArray(c * mn * dMul);
    const k = composeDoConvKernel(w, dd, c, f, 1, mn, dMul);
    const x = randomInput(rng, [1, c, 4, 4]);
    // depthwise: channel (i, s) kernel D[i, :, s] as 2x2
    const dw = new Float32Array(c * dMul * mn);
    for (let i = 0; i < c; i++)
      for (let s = 0; s < dMul; s++)
        for (let m = 0; m < mn; m++) dw[(i * dMul + s) * mn + m] = dd[(i * mn + m) * dMul + s]!;
    const geo = {
      stride: [1, 1] as [number, number],
      padding: [0, 0] as [number, number],
      dilation: [1, 1] as [number, number],
    };
    const mid = conv2d(x, { shape: [c * dMul, 1, 2, 2], data: dw }, undefined, {
      ...geo,
      groups: c,
    });
    const y1 = conv2d(mid, { shape: [f, c * dMul, 1, 1], data: w }, undefined, {
      ...geo,
      groups: 1,
    });
    const y2 = conv2d(x, { shape: [f, c, 2, 2], data: k }, undefined, { ...geo, groups: 1 });
    expect(maxRelativeError(y1.data, y2.data)).toBeLessThan(1e-5);
  });

  it('1x1 kernel: no D, plain conv', () => {
    const spec = doSpec(1, 3, 4, 1);
    const w = initWeights(spec, { seed: 1 });
    expect([...w.keys()].filter((k) => k.startsWith('c1.'))).toEqual(['c1.W', 'c1.bias']);
  });
});
