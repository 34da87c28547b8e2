// The zoo backbones (plain and KW at published budgets, small inputs and widths) on the tfjs cpu
// and wasm backends against the core reference, inference mode, batch 2. Tolerance: relative
// error < 1e-4 (float32).
import { initWeights, type ModelSpec, runReference } from '@kernelwarehouse/core';
import { perturb, Rng, randomInput } from '@kernelwarehouse/core/testing';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { buildModel, fromModelOutput, toModelInput } from '../src/index.js';
import { relErr, useBackend } from './helpers.js';

const ZOO: [string, Parameters<typeof createModel>[1]][] = [
  ['resnet8_cifar', { inputShape: [3, 12, 12] }],
  ['resnet8_cifar', { budget: '1x', inputShape: [3, 12, 12] }],
  ['resnet8_cifar', { budget: '1/2x', inputShape: [3, 12, 12] }],
  ['resnet18', { budget: '1x', inputShape: [3, 16, 16], width: 0.25, classes: 7 }],
  ['resnet18', { budget: '4x', inputShape: [3, 16, 16], width: 0.25, classes: 7 }],
  ['resnet50', { budget: '1/2x', inputShape: [3, 16, 16], width: 0.25, classes: 7 }],
  ['mobilenetv2_050', { budget: '1/2x', inputShape: [3, 16, 16], classes: 5 }],
  ['mobilenetv2_050', { budget: '1x', inputShape: [3, 16, 16], classes: 5 }],
  ['convnext_tiny', { budget: '1x', inputShape: [3, 16, 16], width: 0.125, classes: 3 }],
];

function weightsFor(spec: ModelSpec) {
  const rng = new Rng(5);
  const w = initWeights(spec, { seed: 5 });
  for (const [k, t] of w)
    w.set(
      k,
      k.endsWith('running_var')
        ? { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) }
        : perturb(rng, t, 0.05),
    );
  return w;
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`zoo backbones on tfjs ${backend}`, () => {
    for (const [id, opts] of ZOO) {
      it(`${id} ${opts?.budget ?? 'plain'}`, async () => {
        await useBackend(backend);
        const spec = createModel(id, opts);
        const w = weightsFor(spec);
        const x = randomInput(new Rng(6), [2, ...spec.inputShape]);
        const ref = runReference(spec, w, x).get(spec.outputs[0]!)!;
        const model = buildModel(spec, w);
        const y = tf.tidy(() => model.predict(toModelInput(x)) as tf.Tensor);
        const got = fromModelOutput(y);
        y.dispose();
        model.dispose?.();
        expect(got.shape).toEqual(ref.shape);
        expect(relErr(got.data, ref.data)).toBeLessThan(1e-4);
      });
    }
  });
}
