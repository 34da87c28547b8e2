// recalibrateBatchNorm re-estimates running statistics for the current weights. Hand-derived
// check: repeated passes over one batch drive a BatchNorm's running mean to that batch's mean
// and its running variance to the unbiased batch variance (EMA with momentum 0.1: after 200
// passes the initial values weigh 0.9^200 = 7e-10). The batch statistics come from the core
// reference executor (the conv output captured), not from tfjs.
import {
  initWeights,
  maxRelativeError,
  runReference,
  SpecBuilder,
  type WeightMap,
} from '@kernelwarehouse/core';
import { Rng, randomInput } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { buildModel, exportWeights, recalibrateBatchNorm, toModelInput } from '../src/index.js';
import { useBackend } from './helpers.js';

function spec() {
  const b = new SpecBuilder('recal', [3, 6, 6]);
  b.warehouse({ id: 'w', budget: 1 });
  let x = b.batchNorm('bn', b.conv2d('c', b.input, { outChannels: 8, kernelSize: 3, padding: 1 }));
  x = b.dynamicConv2d(
    'k',
    b.relu('r', x),
    { outChannels: 8, kernelSize: 3, padding: 1 },
    { kind: 'kw', warehouse: 'w' },
  );
  b.output(b.batchNorm('bn2', x));
  return b.build();
}

/** Stale statistics: means far off, variances wrong. */
function stale(w: WeightMap): WeightMap {
  const out = new Map(w);
  for (const [k, t] of w) {
    if (k.endsWith('running_mean')) out.set(k, { shape: t.shape, data: t.data.map(() => 3) });
    if (k.endsWith('running_var')) out.set(k, { shape: t.shape, data: t.data.map(() => 40) });
  }
  return out;
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`recalibrateBatchNorm on ${backend}`, () => {
    it('repeated passes over one batch converge to its mean and unbiased variance', async () => {
      await useBackend(backend);
      const s = spec();
      const w0 = stale(initWeights(s, { seed: 3 }));
      const x = randomInput(new Rng(4), [16, 3, 6, 6]);
      const model = buildModel(s, w0);
      const xin = toModelInput(x);
      expect(recalibrateBatchNorm(model, xin, { batchSize: 16, batches: 200 })).toBe(200);
      const w = exportWeights(model);
      // the first BatchNorm's input is the conv output: its per-channel batch statistics
      const conv = runReference(s, w0, x, { capture: ['c'] }).get('c')!;
      const [n, c, h, wd] = conv.shape as [number, number, number, number];
      const count = n * h * wd;
      const mean = new Float64Array(c);
      const sq = new Float64Array(c);
      for (let b = 0; b < n; b++)
        for (let ch = 0; ch < c; ch++)
          for (let i = 0; i < h * wd; i++) {
            const v = conv.data[(b * c + ch) * h * wd + i]!;
            mean[ch]! += v / count;
            sq[ch]! += (v * v) / count;
          }
      const unbiased = Array.from(mean, (m, ch) => ((sq[ch]! - m * m) * count) / (count - 1));
      expect(maxRelativeError(w.get('bn.running_mean')!.data, mean)).toBeLessThan(1e-4);
      expect(maxRelativeError(w.get('bn.running_var')!.data, unbiased)).toBeLessThan(1e-4);
      // the KW attention BatchNorm moved from its stale values too
      const att = w.get('k.attention.norm1.running_mean')!.data;
      expect(Math.max(...Array.from(att, (v) => Math.abs(v - 3)))).toBeGreaterThan(1);
      // inference on the batch now matches the batch-statistics forward up to the biased /
      // unbiased variance (count 16*36 and 16 per channel: well under 1 %); before: far off
      const inference = (m: tf.LayersModel) => m.predict(xin) as tf.Tensor;
      const train = model.apply(xin, { training: true }) as tf.Tensor;
      const after = inference(model);
      const before = inference(buildModel(s, w0));
      const rel = (a: tf.Tensor) => maxRelativeError(a.dataSync(), train.dataSync());
      expect(rel(after)).toBeLessThan(0.05);
      expect(rel(before)).toBeGreaterThan(0.5);
      tf.dispose([xin, train, after, before]);
    });

    it('refuses bad options and leaves weights alone with batches = 0', async () => {
      await useBackend(backend);
      const s = spec();
      const w0 = stale(initWeights(s, { seed: 3 }));
      const model = buildModel(s, w0);
      const xin = toModelInput(randomInput(new Rng(5), [4, 3, 6, 6]));
      expect(() => recalibrateBatchNorm(model, xin, { batchSize: 1 })).toThrow(
        /batchSize must be an integer >= 2/,
      );
      expect(() => recalibrateBatchNorm(model, xin, { batches: -1 })).toThrow(
        /batches must be an integer >= 0/,
      );
      expect(recalibrateBatchNorm(model, xin, { batches: 0 })).toBe(0);
      expect(exportWeights(model).get('bn.running_mean')!.data[0]).toBe(3);
      const one = toModelInput(randomInput(new Rng(6), [1, 3, 6, 6]));
      expect(() => recalibrateBatchNorm(model, one)).toThrow(/needs >= 2 images/);
      tf.dispose([xin, one]);
    });
  });
}
