// KW's kernel assembly on tfjs: the backend's per-sample conv is HWIO (`TfOps.kernelLayout`), so
// core assembles each layer's cells from the transposed warehouse and a layer with G_out = 1 gets
// its N·m assembled cells in HWIO order with no per-sample Transpose, forward or backward (a KW
// 1x ResNet-8 training step moved 63 -> 17 ms of transposes, bench:tfjs-profile). Checked here by the kernels that
// run (tf.profile) on a training step of a model with both kinds of layer; the values are the
// conformance suite's (tfjs vs the reference executor, 1e-4) and the gradients torch-parity's.
import { analyzeSpec, initWeights, planKw } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { buildModel, registerTrainingKernels, toModelInput } from '../src/index.js';
import { useBackend } from './helpers.js';

describe('KW kernel assembly in the HWIO layout', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    it(`a G_out = 1 layer's assembled cells are never transposed (${backend})`, async () => {
      await useBackend(backend);
      registerTrainingKernels();
      const spec = createModel('resnet8_cifar', {
        budget: 1,
        inputShape: [3, 8, 8],
        classes: 5,
      });
      const plan = planKw(analyzeSpec(spec));
      const layers = [...plan.layers.values()].filter((l) => l.kind === 'conv2d');
      const n = 3;
      // the model has both kinds, so the check below can tell them apart
      const single = layers.filter((l) => l.gOut === 1);
      expect(single.length).toBeGreaterThan(0);
      const model = buildModel(spec, initWeights(spec, { seed: 1 }));
      const x = toModelInput({
        shape: [n, 3, 8, 8],
        data: Float32Array.from({ length: n * 192 }, (_, i) => Math.sin(i)),
      });
      const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
      const profile = await tf.profile(() => {
        const { grads } = tf.variableGrads(
          () => tf.sum(tf.square(model.apply(x, { training: true }) as tf.Tensor)),
          vars,
        );
        tf.dispose(grads);
      });
      // a per-sample cell transpose is rank 7, [N, kh, kw, G_out, G_in, c, c] (or its inverse in
      // the backward); one of a G_out = 1 layer would have a size-1 axis 3 on one side
      const cellTransposes = profile.kernels.filter(
        (k) => k.name === 'Transpose' && k.inputShapes[0]?.length === 7,
      );
      for (const k of cellTransposes) {
        const shapes = [k.inputShapes[0]!, k.outputShapes[0]!];
        expect(shapes.every((s) => s![3]! > 1 || s![4]! > 1)).toBe(true);
      }
      // every G_out = 1 layer with G_in = 1 got no rank-7 transpose at all
      const cells = (l: (typeof layers)[number]) =>
        n * l.weightShape[0]! * l.weightShape[1]! * l.weightShape[2]! * l.weightShape[3]!;
      for (const l of single.filter((l) => l.gIn === 1)) {
        const sized = cellTransposes.filter(
          (k) => k.inputShapes[0]!.reduce((a, d) => a * d!, 1) === cells(l),
        );
        expect(sized).toEqual([]);
      }
      tf.dispose(x);
      model.dispose();
    });
  }
});
