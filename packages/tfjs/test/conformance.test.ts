// Forward parity of the tfjs layers with core's reference: the shared conformance suite of
// @kernelwarehouse/core/testing (every method, KW at several budgets, inference and train, on cpu
// and wasm; tolerance CONFORMANCE_TOLERANCE) plus every plain op.
import {
  initWeights,
  type ModelSpec,
  runReference,
  SpecBuilder,
  type WeightMap,
} from '@kernelwarehouse/core';
import {
  type BackendRunner,
  CONFORMANCE_TOLERANCE,
  conformanceChecks,
  perturb,
  Rng,
  randomInput,
} from '@kernelwarehouse/core/testing';
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

function randomizedWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  // non-trivial BN stats and affine params so inference mode is a real test
  for (const [k, t] of w) {
    if (k.endsWith('running_var'))
      w.set(k, { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) });
    else if (/(running_mean|bn\d?\.(weight|bias)|bias|gamma)$/.test(k))
      w.set(k, perturb(rng, t, 0.2));
  }
  return w;
}

export const parity: Record<string, number> = {};

/** The tfjs model of a spec as a conformance runner (NCHW in and out at the edge). */
const runner: BackendRunner = {
  modes: ['inference', 'train'],
  run(spec, weights, x, run) {
    const model = buildModel(spec, weights);
    setTemperature(model, run.temperature);
    const xi = toModelInput(x);
    const y = model.apply(xi, { training: run.mode === 'train' }) as tf.Tensor;
    const got = fromModelOutput(y);
    tf.dispose([xi, y]);
    model.dispose();
    return got;
  },
};

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`core conformance suite on ${backend}`, () => {
    for (const check of conformanceChecks(runner.modes)) {
      it(check.name, async () => {
        await useBackend(backend);
        const r = await check.measure(runner);
        parity[`${backend} | ${check.name}`] = r.error;
        expect(r.shape).toEqual(r.want);
        expect(r.error).toBeLessThan(CONFORMANCE_TOLERANCE);
      });
    }
  });

  describe(`plain ops on ${backend}`, () => {
    for (const mode of ['inference', 'train'] as const) {
      it(`every plain op, ${mode}`, async () => {
        await useBackend(backend);
        const spec = plainSpec();
        const weights = randomizedWeights(spec, 7);
        const x = randomInput(new Rng(11), [3, ...spec.inputShape]);
        const want = runReference(spec, weights, x, { mode }).get(spec.outputs[0]!)!;
        const got = await runner.run(spec, weights, x, { mode, temperature: 0 });
        const e = relErr(got.data, want.data);
        parity[`${backend} | plain ops | ${mode}`] = e;
        expect(got.shape).toEqual(want.shape);
        expect(e).toBeLessThan(CONFORMANCE_TOLERANCE);
      });
    }
  });
}

afterAll(() => {
  console.log(
    Object.entries(parity)
      .map(([k, v]) => `${k}: ${v.toExponential(2)}`)
      .join('\n'),
  );
});
