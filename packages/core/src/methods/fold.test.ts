import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { countParams } from '../params.js';
import { planModel } from '../plan.js';
import { runReference } from '../reference/executor.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { foldSpec } from './fold.js';

/** A small net mixing every method: foldable (DO-Conv, SLaK) and not (DY, CondConv, ODConv, WeightNet). */
function mixedSpec() {
  const b = new SpecBuilder('mixed', [3, 8, 8]);
  let x = b.dynamicConv2d(
    'do',
    b.input,
    { outChannels: 8, kernelSize: 3, padding: 1 },
    { kind: 'doconv' },
  );
  x = b.relu('r0', b.batchNorm('bn0', x));
  x = b.dynamicConv2d(
    'lk',
    x,
    { outChannels: 8, kernelSize: 5, padding: 2, groups: 8 },
    { kind: 'slak', smallKernel: 3 },
  );
  x = b.dynamicConv2d(
    'dy',
    x,
    { outChannels: 8, kernelSize: 3, padding: 1 },
    { kind: 'dyconv', kernels: 2 },
  );
  x = b.dynamicConv2d('cc', x, { outChannels: 8, kernelSize: 1 }, { kind: 'condconv', experts: 2 });
  x = b.dynamicConv2d(
    'od',
    x,
    { outChannels: 8, kernelSize: 3, padding: 1, stride: 2 },
    { kind: 'odconv', kernels: 2 },
  );
  x = b.dynamicConv2d(
    'wn',
    x,
    { outChannels: 8, kernelSize: 3, padding: 1 },
    { kind: 'weightnet' },
  );
  x = b.dynamicConv2d(
    'dog',
    x,
    { outChannels: 8, kernelSize: 3, padding: 1, groups: 2 },
    { kind: 'doconv', dMul: 10 },
  );
  b.output(b.linear('fc', b.flatten('fl', b.globalAvgPool('gp', x)), 3));
  return b.build();
}

function randomize(w: Map<string, Tensor>, rng: Rng): Map<string, Tensor> {
  const out = new Map(w);
  for (const [k, t] of w) {
    if (k.endsWith('d_diag')) continue;
    let data = rng.normalArray(t.data.length, 0.3);
    if (k.includes('running_var')) data = data.map((v) => 0.5 + Math.abs(v));
    out.set(k, { shape: t.shape, data });
  }
  return out;
}

describe('foldSpec over a spec mixing every method', () => {
  it('folds DO-* and SLaK, keeps the rest, same outputs to 1e-5 (batch 1 and 3)', () => {
    const rng = new Rng(12);
    const spec = mixedSpec();
    const w = randomize(initWeights(spec, { seed: 1 }), rng);
    const folded = foldSpec(spec, w);
    const ops = new Map(folded.spec.nodes.map((n) => [n.id, n.op]));
    expect(ops.get('do')).toBe('conv2d');
    expect(ops.get('dog')).toBe('conv2d');
    expect(ops.get('lk')).toBe('add');
    for (const id of ['dy', 'cc', 'od', 'wn']) expect(ops.get(id)).toBe('dynamicConv2d');
    // inference params: DO-Conv folds to |W| (+0), SLaK strips keep 2CKN + C bias
    expect(countParams(folded.spec)).toBeLessThan(countParams(spec));
    for (const n of [1, 3]) {
      const x = randomInput(rng, [n, 3, 8, 8]);
      const a = runReference(spec, w, x).get('fc')!;
      const b = runReference(folded.spec, folded.weights, x).get('fc')!;
      expect(maxRelativeError(b.data, a.data)).toBeLessThan(1e-5);
    }
    // train mode runs through every method
    const x3 = randomInput(rng, [3, 3, 8, 8]);
    expect(
      runReference(spec, w, x3, { mode: 'train' }).get('fc')!.data.every(Number.isFinite),
    ).toBe(true);
  });

  it('planModel reports conv MACs f·(c/g)·k²·Ho·Wo and method overheads', () => {
    const plan = planModel(mixedSpec());
    const byId = new Map(plan.nodes.map((n) => [n.id, n]));
    expect(byId.get('do')!.macs.conv).toBe(8 * 3 * 9 * 64);
    expect(byId.get('do')!.macs.assembly).toBe(8 * 3 * 9 * 9);
    expect(byId.get('lk')!.macs.conv).toBe(8 * 64 * (2 * 5 * 3 + 9));
    expect(byId.get('dy')!.macs.assembly).toBe(2 * 8 * 8 * 9);
    expect(byId.get('od')!.macs.conv).toBe(8 * 8 * 9 * 16);
    expect(byId.get('wn')!.macs.assembly).toBe(8 * 8 * 9);
  });
});
