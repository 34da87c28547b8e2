// Long runs must not leak tensors: tf.memory().numTensors stays flat across inference calls and
// training steps, for every layer type (plain ops and KW conv, grouped KW conv, KW linear).
import { initWeights, SpecBuilder } from '@kernelwarehouse/core';
import { Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { buildModel, registerTrainingKernels, setTemperature, toModelInput } from '../src/index.js';
import { useBackend } from './helpers.js';

function everyLayerSpec() {
  const b = new SpecBuilder('leaks', [3, 8, 8]);
  let x = b.layerNorm(
    'ln',
    b.conv2d('c', b.input, { outChannels: 8, kernelSize: 3, padding: 1, bias: true }),
  );
  x = b.mul('ls', [b.gelu('g', x)], 0.5);
  x = b.avgPool('ap', b.maxPool('mp', b.relu6('r6', b.batchNorm('bn', x)), 3, 1, 1), 2, 1, 1);
  x = b.mul('gate', [x, b.sigmoid('s', b.globalAvgPool('gp', x))]);
  b.output(b.linear('fc', b.flatten('f', b.dropout('d', x, 0.1)), 4));
  return b.build();
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`no tensor leaks on ${backend}`, () => {
    for (const [label, spec] of [
      ['KW conv, grouped KW conv, KW linear', tinyKwSpec({ budget: 1, kwClassifier: true })],
      ['every plain op', everyLayerSpec()],
    ] as const) {
      it(label, async () => {
        await useBackend(backend);
        if (backend === 'wasm') registerTrainingKernels('wasm');
        const model = buildModel(spec, initWeights(spec, { seed: 1 }));
        const x = toModelInput(randomInput(new Rng(1), [4, ...spec.inputShape]));
        const y = tf.oneHot(tf.tensor1d([0, 1, 2, 3], 'int32'), 4);
        model.compile({ optimizer: tf.train.sgd(1e-3), loss: 'meanSquaredError' });
        // warm up (optimizer slots, lazily built variables), then count
        tf.dispose(model.predict(x) as tf.Tensor);
        await model.fit(x, y, { epochs: 1, batchSize: 2, verbose: 0 });
        const start = tf.memory().numTensors;
        for (let i = 0; i < 5; i++) {
          setTemperature(model, 0.2 * i);
          tf.dispose(model.predict(x) as tf.Tensor);
          await model.fit(x, y, { epochs: 1, batchSize: 2, verbose: 0 });
        }
        expect(tf.memory().numTensors).toBe(start);
        tf.dispose([x, y]);
      });
    }
  });
}
