import { initWeights } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import { toOnnxWithInfo } from './export.js';
import { GraphBuilder } from './onnx.js';

/** The ops `toOnnx` emits, with their attributes (GraphBuilder.op spied for one export). */
function emitted(spec: unknown, batch?: number) {
  const calls: { type: string; attrs: Record<string, unknown> }[] = [];
  const orig = GraphBuilder.prototype.op;
  GraphBuilder.prototype.op = function (this: GraphBuilder, type, inputs, attrs = {}) {
    calls.push({ type, attrs: attrs as Record<string, unknown> });
    return orig.call(this, type, inputs, attrs);
  };
  try {
    const ex = toOnnxWithInfo(spec, initWeights(spec, { seed: 0 }), { batch });
    return { calls, ex };
  } finally {
    GraphBuilder.prototype.op = orig;
  }
}

describe('KW kernel assembly in the ONNX graph', () => {
  // ResNet18 1/4x: cells split each kernel over (kh, kw, G_out, G_in); the assembled kernel used
  // to be permuted at run time by a rank-7 Transpose per layer (17 % of the run at batch 8).
  for (const batch of [undefined, 1]) {
    it(`no runtime Transpose of kernels (batch ${batch ?? 'dynamic'}): one MatMul writes [O, I, kh, kw]`, () => {
      const spec = createModel('resnet18', {
        budget: '1/4x',
        inputShape: [3, 32, 32],
        classes: 10,
      });
      const { calls, ex } = emitted(spec, batch);
      const kwLayers = 19;
      const transposes = calls.filter((c) => c.type === 'Transpose');
      // what remains permutes the attention [N, kh, kw, G_out, G_in, n] (rank 6) or, for a 1x1 /
      // linear warehouse view, an initializer that onnxruntime folds at load time (rank 3)
      expect(transposes.every((t) => (t.attrs.perm as number[]).length <= 6)).toBe(true);
      expect(transposes.length).toBeLessThanOrEqual(kwLayers + 3);
      // assembly MatMuls: one per layer (+ one per-sample MatMul per layer with a dynamic batch)
      expect(ex.ops.MatMul).toBe(batch === undefined ? 2 * kwLayers : kwLayers);
    });
  }
});
