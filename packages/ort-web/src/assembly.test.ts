import { initWeights } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import { toOnnxWithInfo } from './export.js';
import { GraphBuilder } from './onnx.js';

/** The ops `toOnnx` emits, with their attributes (GraphBuilder.op spied for one export). */
function emitted(
  spec: unknown,
  batch?: number,
  threads?: number,
  tapMajor?: boolean,
  scanAssembly?: boolean,
) {
  const calls: { type: string; inputs: string[]; attrs: Record<string, unknown> }[] = [];
  const orig = GraphBuilder.prototype.op;
  GraphBuilder.prototype.op = function (this: GraphBuilder, type, inputs, attrs = {}) {
    calls.push({ type, inputs: [...inputs], attrs: attrs as Record<string, unknown> });
    return orig.call(this, type, inputs, attrs);
  };
  try {
    // (every KW conv assembled: no mixed taps, `tapMixing: false`)
    const ex = toOnnxWithInfo(spec, initWeights(spec, { seed: 0 }), {
      batch,
      threads,
      tapMajor,
      tapMixing: false,
      scanAssembly,
    });
    return { calls, ex };
  } finally {
    GraphBuilder.prototype.op = orig;
  }
}

describe('KW kernel assembly in the ONNX graph', () => {
  // ResNet18 1/4x: cells split each kernel over (kh, kw, G_out, G_in); the assembled kernel used
  // to be permuted at run time by a rank-7 Transpose per layer (17 % of the run at batch 8).
  // These check the assembled-kernel forms: `tapMajor: false` and `tapMixing: false` (at 32x32
  // most layers would run tap by tap, or mix their taps, which assembles no OIHW kernel at all;
  // tested in ort.test.ts). At a dynamic batch, the kernels assembled for the whole batch before
  // the Scan (`scanAssembly: false`; the default assembles them in its body, tested below).
  for (const batch of [undefined, 1]) {
    it(`no runtime Transpose of kernels (batch ${batch ?? 'dynamic, scanAssembly false'}): one MatMul writes [O, I, kh, kw]`, () => {
      const spec = createModel('resnet18', {
        budget: '1/4x',
        inputShape: [3, 32, 32],
        classes: 10,
      });
      const { calls, ex } = emitted(
        spec,
        batch,
        undefined,
        false,
        batch === undefined ? false : undefined,
      );
      const kwLayers = 19;
      const transposes = calls.filter((c) => c.type === 'Transpose');
      // what remains permutes the attention [N, kh, kw, G_out, G_in, n] (rank 6), one per layer
      // at most, or a warehouse initializer into a layer's order (a view onnxruntime folds at
      // load time; the warehouse is stored as [n, cells]), one per (warehouse, layout)
      expect(transposes.every((t) => (t.attrs.perm as number[]).length <= 6)).toBe(true);
      const views = transposes.filter((t) => (t.attrs.perm as number[]).length === 3);
      expect(transposes.length - views.length).toBeLessThanOrEqual(kwLayers);
      expect(views.length).toBeLessThanOrEqual(8);
      // assembly MatMuls: one per layer; the per-sample conv a Scan of Convs with a dynamic
      // batch (the default; im2col + MatMul with `scanBatch: false`, ort.test.ts), one grouped
      // Conv with a fixed one
      expect(ex.ops.MatMul).toBe(kwLayers);
      expect(ex.ops.Scan ?? 0).toBe(batch === undefined ? kwLayers : 0);
    });
  }

  it("a dynamic batch assembles each sample's kernel in the Scan body: the batch-1 products, the warehouse read from outside", () => {
    const spec = createModel('resnet18', { budget: '1/4x', inputShape: [3, 32, 32], classes: 10 });
    const inBody = emitted(spec, undefined, undefined, false);
    const before = emitted(spec, undefined, undefined, false, false);
    const wide = emitted(spec, 1, 1, false);
    const kwLayers = 19;
    // one Scan per KW conv either way; the assembly MatMuls (one per layer) move into the bodies
    expect([inBody.ex.ops.Scan, before.ex.ops.Scan]).toEqual([kwLayers, kwLayers]);
    expect(inBody.ex.ops.MatMul ?? 0).toBe(0);
    expect(before.ex.ops.MatMul).toBe(kwLayers);
    expect([inBody.ex.subgraphOps.MatMul, inBody.ex.subgraphOps.Conv]).toEqual([
      kwLayers,
      kwLayers,
    ]);
    expect(before.ex.subgraphOps.MatMul).toBeUndefined();
    // the body's kernel is the one a fixed batch of 1 exports on one thread: the wide product
    // and its two Transposes in each of the 16 G_in > 1 layers, the broadcast one in the 3 1x1s
    const twoD = (calls: typeof wide.calls) =>
      calls.filter((c) => c.type === 'Transpose' && (c.attrs.perm as number[]).join() === '1,0');
    expect(twoD(inBody.calls).length).toBe(16);
    expect(twoD(wide.calls).length).toBe(16);
    expect(twoD(before.calls).length).toBe(0);
    expect(inBody.ex.subgraphOps.Transpose).toBe(2 * 16);
    // the warehouses stay in the outer graph, stored once: the bodies hold shapes and axes
    expect(Math.abs(inBody.ex.initializerBytes - before.ex.initializerBytes)).toBeLessThan(8192);
    expect(inBody.ex.subgraphInitializerBytes).toBeLessThan(8192);
  });

  it('batch 1 on one thread: a wide product per G_in > 1 layer, the warehouse stored once all the same', () => {
    const spec = createModel('resnet18', { budget: '1/4x', inputShape: [3, 32, 32], classes: 10 });
    const wide = emitted(spec, 1, 1, false);
    const usual = emitted(spec, 1, undefined, false);
    // the 3x3 layers (G_out = G_in = 2: 16 of the 19; the 3 downsample 1x1s keep the broadcast
    // form) each get a 2-D product [rows, n] x [n, c_out·c_in] and a 2-D Transpose of it
    const twoD = wide.calls.filter(
      (c) => c.type === 'Transpose' && (c.attrs.perm as number[]).join() === '1,0',
    );
    expect(twoD.length).toBe(16);
    expect(wide.ex.ops.MatMul).toBe(19);
    // each warehouse is in the file once (as [n, c_out·c_in]; the other layers' order is a
    // Transpose of it that onnxruntime folds at load): same size as the usual export, +-1 KB of
    // shape constants
    expect(Math.abs(wide.ex.initializerBytes - usual.ex.initializerBytes)).toBeLessThan(2048);
    // the usual batch-1 export has no 2-D transposes at all
    expect(
      usual.calls.some(
        (c) => c.type === 'Transpose' && (c.attrs.perm as number[]).join() === '1,0',
      ),
    ).toBe(false);
  });

  for (const threads of [undefined, 1]) {
    it(`layers sharing a warehouse and a cell layout share one view of it (threads ${threads ?? 'unset'})`, () => {
      const spec = createModel('resnet18', {
        budget: '1/4x',
        inputShape: [3, 32, 32],
        classes: 10,
      });
      const { calls } = emitted(spec, 1, threads, false);
      // the ops applied to a warehouse initializer itself (its Transpose / Reshape into a layer's
      // order): one per (warehouse, layout), not one per layer (19 KW layers, 4 warehouses, 3x3
      // and 1x1 layouts)
      const views = calls.filter((c) => c.inputs[0]?.startsWith('warehouses.'));
      expect(views.length).toBeGreaterThan(0);
      expect(views.length).toBeLessThanOrEqual(8);
    });
  }
});
