/**
 * Shared test fixtures for every package: seeded random inputs and small random specs.
 * Import from `@kernelwarehouse/core/testing`.
 */
import { Rng } from './rng.js';
import { SpecBuilder } from './spec/builder.js';
import type { ModelSpec } from './spec/types.js';
import type { Tensor } from './tensor.js';

export { Rng };

/** A random `[N, ...shape]` tensor with N(0, 1) entries. */
export function randomInput(rng: Rng, shape: readonly number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape: [...shape], data: rng.normalArray(n) };
}

/** Random weights-like perturbation: returns a copy of `t` with N(0, std²) added. */
export function perturb(rng: Rng, t: Tensor, std: number): Tensor {
  const data = new Float32Array(t.data);
  for (let i = 0; i < data.length; i++) data[i]! += std * rng.normal();
  return { shape: [...t.shape], data };
}

/** Options of {@link tinyKwSpec}. */
export interface TinyKwOptions {
  budget?: number;
  channels?: number;
  size?: number;
  classes?: number;
  norm?: 'batch' | 'layer';
  cellRatio?: number;
  nonlocalBasisRatio?: number;
  kwClassifier?: boolean;
}

/**
 * A small CNN with two warehouses: stage0 shared by a 3x3 conv, a strided 3x3 conv and a
 * grouped 3x3 conv; stage1 by a 1x1 conv; optionally a KW classifier. Used across packages
 * as the standard KW fixture.
 */
export function tinyKwSpec(o: TinyKwOptions = {}): ModelSpec {
  const c = o.channels ?? 8;
  const size = o.size ?? 8;
  const budget = o.budget ?? 1;
  const b = new SpecBuilder(`tiny-kw-${budget}`, [3, size, size]);
  const wh = (id: string) =>
    b.warehouse({
      id,
      budget,
      norm: o.norm ?? 'batch',
      cellInRatio: o.cellRatio ?? 1,
      cellOutRatio: o.cellRatio ?? 1,
      nonlocalBasisRatio: o.nonlocalBasisRatio ?? 1,
    });
  wh('stage0');
  wh('stage1');
  let x = b.conv2d('stem', b.input, { outChannels: c, kernelSize: 3, padding: 1 });
  x = b.batchNorm('stem_bn', x);
  x = b.relu('stem_relu', x);
  const k0 = { kind: 'kw' as const, warehouse: 'stage0' };
  const y = b.dynamicConv2d('block.conv1', x, { outChannels: c, kernelSize: 3, padding: 1 }, k0);
  const y2 = b.relu('block.relu', b.batchNorm('block.bn1', y));
  const y3 = b.dynamicConv2d(
    'block.conv2',
    y2,
    { outChannels: c, kernelSize: 3, padding: 1, groups: 2, bias: true },
    k0,
  );
  x = b.relu('block.out', b.addNodes('block.add', [x, y3]));
  x = b.dynamicConv2d('down', x, { outChannels: 2 * c, kernelSize: 3, stride: 2, padding: 1 }, k0);
  x = b.dynamicConv2d(
    'pw',
    x,
    { outChannels: 2 * c, kernelSize: 1 },
    { kind: 'kw', warehouse: 'stage1' },
  );
  x = b.relu('pw_relu', b.batchNorm('pw_bn', x));
  x = b.flatten('flat', b.globalAvgPool('pool', x));
  if (o.kwClassifier) {
    wh('head');
    x = b.dynamicLinear('fc', x, o.classes ?? 4, { kind: 'kw', warehouse: 'head' });
  } else {
    x = b.linear('fc', x, o.classes ?? 4);
  }
  b.output(x);
  return b.build();
}

export {
  type BackendRunner,
  CONFORMANCE_TOLERANCE,
  type ConformanceCase,
  type ConformanceCheck,
  type ConformanceRun,
  conformanceCases,
  conformanceChecks,
  conformanceWeights,
  uncoveredMethods,
} from './conformance.js';
