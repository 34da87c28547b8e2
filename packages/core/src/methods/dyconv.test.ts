import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { temperatureAt } from '../kw/attention.js';
import { ReferenceOps } from '../ops/reference.js';
import { countParams, layerContext, paramTable } from '../params.js';
import { runReference } from '../reference/executor.js';
import { conv2d } from '../reference/ops.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { condConvParamCount } from './condconv.js';
import { dyConvHidden, dyConvParamCount } from './dyconv.js';
import { METHODS } from './registry.js';
import type { DynamicNode } from './types.js';

const geo = {
  stride: [1, 1] as [number, number],
  padding: [1, 1] as [number, number],
  dilation: [1, 1] as [number, number],
};

function mixSpec(
  kind: 'dyconv' | 'condconv',
  settings: Record<string, unknown>,
  c = 4,
  f = 5,
  groups = 1,
) {
  const b = new SpecBuilder(kind, [c, 5, 6]);
  const x = b.dynamicConv2d(
    'd',
    b.input,
    { outChannels: f, kernelSize: 3, padding: 1, groups, bias: true },
    { kind, ...settings },
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

/** Expected per-sample output: plain conv with the mixture Σ a_k W_k, Σ a_k b_k. */
function mixtureRef(
  x: Tensor,
  bank: Tensor,
  bias: Tensor,
  a: number[][],
  groups: number,
): Float32Array[] {
  const out: Float32Array[] = [];
  const K = bank.shape[0]!;
  const size = bank.data.length / K;
  const f = bias.shape[1]!;
  const per = x.data.length / x.shape[0]!;
  for (let b = 0; b < x.shape[0]!; b++) {
    const wk = new Float32Array(size);
    const bk = new Float32Array(f);
    for (let k = 0; k < K; k++) {
      for (let i = 0; i < size; i++) wk[i]! += a[b]![k]! * bank.data[k * size + i]!;
      for (let i = 0; i < f; i++) bk[i]! += a[b]![k]! * bias.data[k * f + i]!;
    }
    const xb = { shape: [1, ...x.shape.slice(1)], data: x.data.slice(b * per, (b + 1) * per) };
    out.push(
      conv2d(
        xb,
        {
          shape: bank.shape.length === 5 ? bank.shape.slice(1) : [f, x.shape[1]! / groups, 3, 3],
          data: wk,
        },
        { shape: [f], data: bk },
        { ...geo, groups },
      ).data,
    );
  }
  return out;
}

function gapOf(x: Tensor, b: number): number[] {
  const [, c, h, w] = x.shape as number[];
  const v: number[] = [];
  for (let ch = 0; ch < c!; ch++) {
    let s = 0;
    for (let i = 0; i < h! * w!; i++) s += x.data[(b * c! + ch) * h! * w! + i]!;
    v.push(s / (h! * w!));
  }
  return v;
}

describe('DY-Conv (peers.md §3)', () => {
  it('hidden width and parameter formula K|W| + ch + hK + K (+Kf)', () => {
    expect(dyConvHidden(64, 4)).toBe(17);
    expect(dyConvHidden(3, 4)).toBe(4);
    const spec = mixSpec('dyconv', { kernels: 3 });
    expect(countParams(spec)).toBe(dyConvParamCount(4, 5, 3, 3, 3, 1, true) + 10);
    expect(dyConvParamCount(4, 5, 3, 3, 3, 1, true)).toBe(3 * 5 * 4 * 9 + 4 * 2 + 2 * 3 + 3 + 15);
  });

  it('K = 1 equals a plain conv with that kernel (softmax of one logit is 1)', () => {
    const rng = new Rng(1);
    const spec = mixSpec('dyconv', { kernels: 1 });
    const w = randomize(initWeights(spec, { seed: 2 }), rng);
    for (const n of [1, 3]) {
      const x = randomInput(rng, [n, 4, 5, 6]);
      const got = runReference(spec, w, x, { capture: ['d'] }).get('d')!;
      const bank = w.get('d.weight')!;
      const plain = conv2d(
        x,
        { shape: bank.shape.slice(1), data: bank.data },
        { shape: [5], data: w.get('d.bias')!.data },
        { ...geo, groups: 1 },
      );
      expect(maxRelativeError(got.data, plain.data)).toBeLessThan(1e-6);
    }
  });

  it('per-sample softmax(z/τ) mixture, hand-computed attention, grouped, batch 3, train and inference', () => {
    const rng = new Rng(7);
    for (const tau of [1, 30]) {
      const spec = mixSpec('dyconv', { kernels: 3, temperature: tau }, 4, 6, 2);
      const w = randomize(initWeights(spec, { seed: 4 }), rng);
      const x = randomInput(rng, [3, 4, 5, 6]);
      const got = runReference(spec, w, x, { capture: ['d'] }).get('d')!;
      const w1 = w.get('d.attention.fc1.weight')!;
      const w2 = w.get('d.attention.fc2.weight')!;
      const b2 = w.get('d.attention.fc2.bias')!;
      const h = w1.shape[0]!;
      const a: number[][] = [];
      for (let b = 0; b < 3; b++) {
        const g = gapOf(x, b);
        const v = Array.from({ length: h }, (_, r) =>
          Math.max(
            0,
            g.reduce((s, gi, i) => s + gi * w1.data[r * 4 + i]!, 0),
          ),
        );
        const z = Array.from(
          { length: 3 },
          (_, k) => (b2.data[k]! + v.reduce((s, vi, i) => s + vi * w2.data[k * h + i]!, 0)) / tau,
        );
        const m = Math.max(...z);
        const e = z.map((q) => Math.exp(q - m));
        const s = e.reduce((p, q) => p + q, 0);
        a.push(e.map((q) => q / s));
      }
      const ref = mixtureRef(x, w.get('d.weight')!, w.get('d.bias')!, a, 2);
      const per = got.data.length / 3;
      for (let b = 0; b < 3; b++)
        expect(maxRelativeError(got.data.slice(b * per, (b + 1) * per), ref[b]!)).toBeLessThan(
          1e-5,
        );
      // BN in train mode runs through
      const tr = runReference(spec, w, x, { mode: 'train' }).get('r')!;
      expect(tr.data.every(Number.isFinite)).toBe(true);
    }
  });

  it('annealing 30 → 1 reuses temperatureAt', () => {
    const s = { epochs: 10, itersPerEpoch: 5, initValue: 30, endValue: 1 };
    expect(temperatureAt(s, 0, 0)).toBeCloseTo(1 + 29 * (49 / 50), 12);
    expect(temperatureAt(s, 10, 0)).toBe(1);
  });

  it('bad settings name the node and field', () => {
    expect(() => mixSpec('dyconv', { kernels: 0 })).toThrow(/node "d".*method\.kernels/);
    expect(() => mixSpec('dyconv', { temperature: -1 })).toThrow(/method\.temperature/);
  });

  it('refuses temperatures below 1e-3 (a subnormal gave NaN logits), in the spec and at run time', () => {
    for (const t of [5e-324, 1e-310, 1e-4, 0])
      expect(() => mixSpec('dyconv', { temperature: t }), String(t)).toThrow(
        /node "d".*field "method\.temperature" must be a finite number >= 0\.001 .*found /,
      );
    // the smallest accepted value still gives finite outputs
    const spec = mixSpec('dyconv', { temperature: 1e-3 });
    const x = randomInput(new Rng(3), [2, 4, 5, 6]);
    const w = initWeights(spec, { seed: 3 });
    expect(runReference(spec, w, x).get('r')!.data.every(Number.isFinite)).toBe(true);
    // the run-time override a trainer anneals (tfjs passes it to the same forward)
    const table = paramTable(spec);
    const node = table.analyzed.byId.get('d') as DynamicNode;
    const ops = new ReferenceOps({ param: (n) => w.get(`d.${n}`), training: false });
    const ctx = {
      ...layerContext(table, node),
      outShape: table.analyzed.shapes.get('d')!,
      temperature: 0,
    };
    for (const t of [1e-310, Number.NaN, 0])
      expect(() =>
        METHODS.get('dyconv')!.forward(ops, x, { ...ctx, methodTemperature: t }),
      ).toThrow(
        /\[ARGUMENT_INVALID\] node "d": method temperature must be a finite number >= 0\.001/,
      );
    const y = METHODS.get('dyconv')!.forward(ops, x, { ...ctx, methodTemperature: 30 });
    expect(y.data.every(Number.isFinite)).toBe(true);
  });
});

describe('CondConv (peers.md §2)', () => {
  it('parameter formula n|W| + nf + cn + n', () => {
    const spec = mixSpec('condconv', { experts: 3 });
    expect(countParams(spec)).toBe(condConvParamCount(4, 5, 3, 3, 3, 1, true) + 10);
    expect(condConvParamCount(4, 5, 3, 3, 3, 1, true)).toBe(3 * 180 + 15 + 12 + 3);
  });

  it('sigmoid routing mixture, hand-computed, batch 1 and 3', () => {
    const rng = new Rng(9);
    const spec = mixSpec('condconv', { experts: 3 }, 4, 6, 2);
    const w = randomize(initWeights(spec, { seed: 4 }), rng);
    for (const n of [1, 3]) {
      const x = randomInput(rng, [n, 4, 5, 6]);
      const got = runReference(spec, w, x, { capture: ['d'] }).get('d')!;
      const R = w.get('d.routing_fn.weight')!;
      const bR = w.get('d.routing_fn.bias')!;
      const a: number[][] = [];
      for (let b = 0; b < n; b++) {
        const g = gapOf(x, b);
        a.push(
          [0, 1, 2].map(
            (k) =>
              1 /
              (1 +
                Math.exp(-(bR.data[k]! + g.reduce((s, gi, i) => s + gi * R.data[k * 4 + i]!, 0)))),
          ),
        );
      }
      const ref = mixtureRef(x, w.get('d.weight')!, w.get('d.bias')!, a, 2);
      const per = got.data.length / n;
      for (let b = 0; b < n; b++)
        expect(maxRelativeError(got.data.slice(b * per, (b + 1) * per), ref[b]!)).toBeLessThan(
          1e-5,
        );
    }
  });

  it('rejects dynamicLinear and bad experts', () => {
    const b = new SpecBuilder('x', [4]);
    b.output(b.dynamicLinear('l', b.input, 3, { kind: 'condconv' }));
    expect(() => countParams(b.build())).toThrow(/node "l".*dynamicConv2d only/);
    expect(() => mixSpec('condconv', { experts: 1.5 })).toThrow(/method\.experts/);
  });
});

describe('method settings written as null, and CondConv defaults', () => {
  // `x ?? default` read null as "left out": { experts: null } built 8 experts, DO-Conv's
  // { dMul: null } was planned as dMul 1
  it.each([
    ['condconv', { experts: null }, 'experts'],
    ['dyconv', { kernels: null }, 'kernels'],
    ['dyconv', { temperature: null }, 'temperature'],
    ['odconv', { reduction: null }, 'reduction'],
    ['weightnet', { M: null }, 'M'],
    ['doconv', { dMul: null }, 'dMul'],
    ['slak', { smallKernel: null }, 'smallKernel'],
  ] as const)('%s %o: SPEC_BAD_FIELD naming method.%s', (kind, settings, field) => {
    const b = new SpecBuilder('nul', [4, 5, 5]);
    const conv = { outChannels: 4, kernelSize: 3, padding: 1 };
    b.output(b.dynamicConv2d('c', b.input, conv, { kind, ...settings } as never));
    expect(() => b.build()).toThrow(
      new RegExp(`SPEC_BAD_FIELD.*setting "method\\.${field}" is null`),
    );
  });

  it('condConvParamCount defaults to the experts a { kind: "condconv" } node gets', () => {
    const b = new SpecBuilder('cc', [16, 5, 5]);
    b.output(
      b.dynamicConv2d(
        'c',
        b.input,
        { outChannels: 16, kernelSize: 3, padding: 1 },
        { kind: 'condconv' },
      ),
    );
    expect(countParams(b.build())).toBe(condConvParamCount(16, 16, 3, 3));
    expect(condConvParamCount(16, 16, 3, 3)).toBe(8 * 16 * 16 * 9 + 16 * 8 + 8);
  });
});
