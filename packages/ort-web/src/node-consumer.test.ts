// A second consumer we did not write: the same ONNX bytes load and run in onnxruntime-node (the
// native CPU build; its CUDA post-install download is not run by pnpm) with the same results as
// onnxruntime-web and the core reference.
import { initWeights, type ModelSpec, maxRelativeError, runReference } from '@kernelwarehouse/core';
import { perturb, Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import { createModel } from '@kernelwarehouse/zoo';
import * as ortNode from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { createSession, runSession, toOnnx } from './index.js';

describe('onnxruntime-node runs the exported bytes', () => {
  const cases: [string, ModelSpec][] = [
    ['KW b = 1/2, KW classifier', tinyKwSpec({ budget: 0.5, cellRatio: 0.5, kwClassifier: true })],
    [
      'KW non-local basis, LayerNorm attention',
      tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.25, norm: 'layer' }),
    ],
    [
      'mobilenetv2_050 KW 1x at 16x16',
      createModel('mobilenetv2_050', { budget: 1, inputShape: [3, 16, 16], classes: 6 }),
    ],
  ];
  for (const [label, spec] of cases) {
    it(label, async () => {
      const rng = new Rng(8);
      const w = initWeights(spec, { seed: 8 });
      for (const [k, t] of w)
        w.set(
          k,
          k.endsWith('running_var')
            ? { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) }
            : perturb(rng, t, 0.1),
        );
      const bytes = toOnnx(spec, w, { temperature: 0.25 });
      const native = await ortNode.InferenceSession.create(bytes);
      const web = await createSession(bytes);
      const x = randomInput(new Rng(4), [3, ...spec.inputShape]);
      const res = await native.run({ input: new ortNode.Tensor('float32', x.data, [...x.shape]) });
      const yNode = res[native.outputNames[0]!]!.data as Float32Array;
      const [yWeb] = await runSession(web, x);
      const ref = runReference(spec, w, x, { temperature: 0.25 }).get(spec.outputs[0]!)!;
      expect(maxRelativeError(yNode, ref.data)).toBeLessThan(1e-4);
      expect(maxRelativeError(yNode, yWeb!.data)).toBeLessThan(1e-4);
    });
  }
});
