import {
  initWeights,
  type ModelSpec,
  runReference,
  SpecBuilder,
  type WeightMap,
} from '@kernelwarehouse/core';
import { perturb, Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModel, fromModelOutput, setTemperature, toModelInput } from '../src/index.js';
import { relErr, useBackend } from './helpers.js';

/** A spec with every plain op. */
function plainSpec(): ModelSpec {
  const b = new SpecBuilder('plain-all', [4, 9, 9]);
  let x = b.conv2d('c1', b.input, { outChannels: 6, kernelSize: 3, padding: 1, bias: true });
  x = b.batchNorm('bn', x);
  x = b.relu6('r6', x);
  const g = b.conv2d('gc', x, { outChannels: 6, kernelSize: 3, padding: 1, groups: 2 });
  const dw = b.conv2d('dw', x, { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 });
  x = b.addNodes('add', [g, dw]);
  x = b.layerNorm('ln', x);
  x = b.gelu('gelu', x);
  const se = b.sigmoid('sig', b.globalAvgPool('gap0', x));
  x = b.mul('semul', [x, se]);
  x = b.mul('ls', [x], 0.5);
  x = b.maxPool('mp', x, 3, 2, 1);
  x = b.avgPool('ap', x, 2, 1, 1);
  x = b.conv2d('dil', x, { outChannels: 4, kernelSize: 3, padding: 2, dilation: 2, stride: 2 });
  x = b.dropout('drop', b.relu('relu', x), 0.1);
  x = b.flatten('flat', b.identity('id', x));
  x = b.linear('fc', x, 5);
  b.output(x);
  return b.build();
}

const cases: [string, () => ModelSpec][] = [
  ['tiny kw b=1', () => tinyKwSpec({ budget: 1 })],
  ['tiny kw b=1 cellRatio 0.5', () => tinyKwSpec({ budget: 1, cellRatio: 0.5 })],
  ['tiny kw b=2 cellRatio 0.5', () => tinyKwSpec({ budget: 2, cellRatio: 0.5 })],
  ['tiny kw b=1/3', () => tinyKwSpec({ budget: 1 / 3 })],
  ['tiny kw layerNorm', () => tinyKwSpec({ budget: 1, norm: 'layer' })],
  ['tiny kw nonlocal basis 0.5', () => tinyKwSpec({ budget: 2, nonlocalBasisRatio: 0.5 })],
  ['tiny kw classifier', () => tinyKwSpec({ budget: 1, kwClassifier: true })],
  ['plain ops', plainSpec],
];

function randomizedWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  // non-trivial BN stats and affine params so inference mode is a real test
  for (const [k, t] of w) {
    if (k.endsWith('running_var'))
      w.set(k, { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) });
    else if (/(running_mean|norm1?\.(weight|bias)|bn\d?\.(weight|bias)|bias|gamma)$/.test(k))
      w.set(k, perturb(rng, t, 0.2));
  }
  return w;
}

export const parity: Record<string, number> = {};

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`forward parity on ${backend}`, () => {
    for (const [name, make] of cases) {
      for (const mode of ['inference', 'train'] as const) {
        for (const tau of mode === 'train' ? [0, 0.4] : [0]) {
          it(`${name}, ${mode}, tau ${tau}`, async () => {
            await useBackend(backend);
            const spec = make();
            const weights = randomizedWeights(spec, 7);
            const rng = new Rng(11);
            const x = randomInput(rng, [3, ...spec.inputShape]);
            const want = runReference(spec, weights, x, { mode, temperature: tau }).get(
              spec.outputs[0]!,
            )!;
            const model = buildModel(spec, weights);
            setTemperature(model, tau);
            const xi = toModelInput(x);
            const y = model.apply(xi, { training: mode === 'train' }) as tf.Tensor;
            const got = fromModelOutput(y);
            tf.dispose([xi, y]);
            const e = relErr(got.data, want.data);
            parity[`${backend} | ${name} | ${mode} tau=${tau}`] = e;
            expect(got.shape).toEqual(want.shape);
            expect(e).toBeLessThan(1e-4);
            model.dispose();
          });
        }
      }
    }
    it('batch 1 inference works with the KW attention BatchNorm', async () => {
      await useBackend(backend);
      const spec = tinyKwSpec({ budget: 1 });
      const weights = randomizedWeights(spec, 3);
      const x = randomInput(new Rng(5), [1, ...spec.inputShape]);
      const want = runReference(spec, weights, x).get(spec.outputs[0]!)!;
      const model = buildModel(spec, weights);
      const xi = toModelInput(x);
      const y = model.predict(xi) as tf.Tensor;
      const e = relErr(fromModelOutput(y).data, want.data);
      parity[`${backend} | tiny kw b=1 | batch 1 inference`] = e;
      expect(e).toBeLessThan(1e-4);
      tf.dispose([xi, y]);
      model.dispose();
    });
  });
}

afterAll(() => {
  console.log(
    Object.entries(parity)
      .map(([k, v]) => `${k}: ${v.toExponential(2)}`)
      .join('\n'),
  );
});
