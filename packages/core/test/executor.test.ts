// The executor's entry checks, and one spec with every plain op checked against a hand-written forward.
import { describe, expect, it } from 'vitest';
import {
  checkWeights,
  initWeights,
  KwError,
  maxRelativeError,
  ops,
  runReference,
  SpecBuilder,
  tensor,
} from '../src/index.js';
import { perturb, Rng, randomInput, tinyKwSpec } from '../src/testing.js';

function allOpsSpec() {
  const b = new SpecBuilder('all-ops', [4, 6, 6]);
  const c = b.conv2d('c', b.input, { outChannels: 4, kernelSize: 3, padding: 1, bias: true });
  const ln = b.layerNorm('ln', c);
  const g = b.gelu('g', ln);
  const ls = b.mul('ls', [g], 0.5);
  const se = b.sigmoid('sg', b.globalAvgPool('gp', ls));
  const gated = b.mul('gate', [ls, se]);
  const r6 = b.relu6('r6', b.addNodes('sum', [gated, c]));
  const ap = b.avgPool('ap', b.dropout('do', r6, 0.2), 3, 2, 1);
  const mp = b.maxPool('mp', b.identity('id', ap), 2, 1, 0);
  b.output(b.linear('fc', b.flatten('fl', mp), 3, false));
  return b.build();
}

describe('runReference on every plain op', () => {
  it('equals the ops composed by hand', () => {
    const spec = allOpsSpec();
    const rng = new Rng(4);
    const w = initWeights(spec, { seed: 1 });
    for (const [k, t] of w) w.set(k, perturb(rng, t, 0.2));
    const x = randomInput(rng, [2, 4, 6, 6]);
    const out = runReference(spec, w, x, { capture: ['gate'] });
    const W = (n: string) => w.get(n)!;
    const c = ops.conv2d(x, W('c.weight'), W('c.bias'), {
      stride: [1, 1],
      padding: [1, 1],
      dilation: [1, 1],
      groups: 1,
    });
    const g = ops.map(ops.layerNormChannels(c, W('ln.weight'), W('ln.bias'), 1e-6), ops.gelu);
    const ls = ops.channelScale(g, W('ls.gamma'));
    const se = ops.map({ shape: [2, 4, 1, 1], data: ops.channelMeans(ls) }, ops.sigmoid);
    const gated = ops.mulBroadcast(ls, se);
    expect(maxRelativeError(out.get('gate')!.data, gated.data)).toBeLessThan(1e-6);
    const r6 = ops.map(ops.add([gated, c]), ops.relu6);
    const mp = ops.pool2d(
      ops.pool2d(r6, 'avg', [3, 3], [2, 2], [1, 1]),
      'max',
      [2, 2],
      [1, 1],
      [0, 0],
    );
    const y = ops.linear(
      { shape: [2, mp.data.length / 2], data: mp.data },
      W('fc.weight'),
      undefined,
    );
    expect(out.get('fc')!.shape).toEqual([2, 3]);
    expect(maxRelativeError(out.get('fc')!.data, y.data)).toBeLessThan(1e-6);
    // layer-scale init value is honoured
    expect(
      initWeights(spec)
        .get('ls.gamma')!
        .data.every((v) => v === 0.5),
    ).toBe(true);
  });
});

describe('entry checks', () => {
  const spec = tinyKwSpec();
  const w = initWeights(spec, { seed: 2 });
  const x = randomInput(new Rng(1), [2, 3, 8, 8]);

  it('wrong input rank, channels, batch 0, dtype and NaN are refused with the expected shape', () => {
    expect(() => runReference(spec, w, randomInput(new Rng(1), [3, 8, 8]))).toThrow(
      /expected shape \[N, 3, 8, 8\].*found \[3, 8, 8\]/,
    );
    expect(() => runReference(spec, w, randomInput(new Rng(1), [1, 4, 8, 8]))).toThrow(KwError);
    expect(() => runReference(spec, w, { shape: [0, 3, 8, 8], data: new Float32Array(0) })).toThrow(
      /N >= 1/,
    );
    expect(() =>
      runReference(spec, w, {
        shape: [1, 3, 8, 8],
        data: new Float64Array(192) as unknown as Float32Array,
      }),
    ).toThrow(/Float32Array/);
    const bad = randomInput(new Rng(1), [1, 3, 8, 8]);
    bad.data[7] = Number.NaN;
    expect(() => runReference(spec, w, bad)).toThrow(/element 7 is NaN/);
  });

  it('weights: missing, extra, wrong shape and non-finite tensors are named', () => {
    const miss = new Map(w);
    miss.delete('block.conv1.attention.fc1.weight');
    expect(() => runReference(spec, miss, x)).toThrow(/missing: block.conv1.attention.fc1.weight/);
    const extra = new Map(w).set('stray', tensor([1]));
    expect(() => runReference(spec, extra, x)).toThrow(/not part of spec.*stray/);
    expect(() => checkWeights(spec, extra, { allowExtra: true })).not.toThrow();
    const shape = new Map(w).set('warehouses.stage0', tensor([1, 2]));
    expect(() => runReference(spec, shape, x)).toThrow(
      /"warehouses.stage0": expected shape \[\d+, 8, 4, 1, 1\], found \[1, 2\]/,
    );
    const nan = new Map(w);
    const t = w.get('fc.weight')!;
    const d = new Float32Array(t.data);
    d[3] = Number.POSITIVE_INFINITY;
    nan.set('fc.weight', { shape: t.shape, data: d });
    expect(() => runReference(spec, nan, x)).toThrow(/"fc.weight": element 3 is Infinity/);
    const noBuf = new Map(w);
    noBuf.delete('stem_bn.running_var');
    expect(() => checkWeights(spec, noBuf, { allowMissingBuffers: true })).not.toThrow();
    expect(() => checkWeights(spec, noBuf)).toThrow(/stem_bn.running_var/);
  });

  it('bad options are refused', () => {
    expect(() => runReference(spec, w, x, { temperature: 2 })).toThrow(
      /temperature must be in \[0, 1\]/,
    );
    expect(() => runReference(spec, w, x, { mode: 'eval' as 'train' })).toThrow(/mode must be/);
    expect(() => runReference(spec, w, x, { capture: ['ghost'] })).toThrow(/capture names "ghost"/);
  });

  it('tensor() refuses data that does not fit its shape', () => {
    expect(() => tensor([2, 2], [1, 2, 3])).toThrow(/3 elements but shape \[2, 2\] needs 4/);
    expect(() => tensor([-1])).toThrow(/non-negative integer/);
  });
});
