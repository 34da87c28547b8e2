import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setOwnWasmKernels } from '../src/conv-wasm.js';
import { globalAvgPoolWasm, setWasmGlobalAvgPool } from '../src/gap-wasm.js';
import { TfOps } from '../src/ops.js';
import { relErr, useBackend } from './helpers.js';

/** Values around `offset` with the given spread. */
function values(size: number, offset: number, spread: number): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < a.length; i++) a[i] = offset + spread * (Math.random() - 0.5);
  return a;
}

/** Float64 mean over H and W of an NHWC array, and the gradient of sum(mean · dy): dy / (H·W). */
function reference(x: Float32Array, [N, H, W, C]: number[], dy: Float32Array) {
  const mean = new Float64Array(N! * C!);
  const rows = H! * W!;
  for (let i = 0; i < x.length; i++) {
    const b = Math.floor(i / (rows * C!));
    mean[b * C! + (i % C!)]! += x[i]! / rows;
  }
  const dx = Float64Array.from(x, (_, i) => {
    const b = Math.floor(i / (rows * C!));
    return dy[b * C! + (i % C!)]! / rows;
  });
  return { mean, dx };
}

const ops = () => new TfOps(new Map(), new Map(), true, 'test');

describe('global average pool on the own wasm kernels (globalAvgPoolWasm)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
    setWasmGlobalAvgPool(true);
  });

  // shape, offset and spread: float32 outputs from float64 sums against float64; the last case's
  // values sit 1000x their spread from zero (a float32 running sum would lose ~1e-4 of the spread)
  const CASES: [number[], number, number][] = [
    [[4, 5, 5, 8], 0, 1],
    [[2, 1, 1, 4], 0.3, 2],
    [[3, 7, 7, 36], -2, 0.5],
    [[2, 28, 28, 64], 0, 1],
    [[1, 3, 9, 12], 1000, 1],
  ];

  it.each(CASES)(
    'x %j (offset %d, spread %d): mean and gradient match float64 to 1e-6',
    (shape, offset, spread) => {
      const [N, , , C] = shape as [number, number, number, number];
      const size = shape.reduce((a, d) => a * d, 1);
      const x = values(size, offset, spread);
      const dy = values(N * C, 0, 2);
      const ref = reference(x, shape, dy);
      const before = tf.memory();
      const [xt, dyt] = [tf.tensor(x, shape), tf.tensor2d(dy, [N, C])];
      const y = globalAvgPoolWasm(xt!);
      expect(y?.shape).toEqual([N, C]);
      const [gx] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(globalAvgPoolWasm(a)!, dyt!)))([xt!]);
      // one rounding to float32 of each float64 result: half an ulp, 6e-8
      expect(relErr(y!.dataSync(), ref.mean)).toBeLessThan(1e-6);
      expect(relErr(gx!.dataSync(), ref.dx)).toBeLessThan(1e-6);
      tf.dispose([xt!, dyt!, y!, gx!]);
      const after = tf.memory();
      expect(after.numTensors).toBe(before.numTensors);
      expect(after.numBytes).toBe(before.numBytes);
    },
  );

  it('a hand-derived case: the mean of 1..4 per channel, and a gradient of dy / 4', () => {
    // x [1, 2, 2, 4]: channel c holds c + 1, c + 5, c + 9, c + 13 -> mean c + 7
    const x = tf.tensor(
      Float32Array.from({ length: 16 }, (_, i) => i + 1),
      [1, 2, 2, 4],
    );
    expect(Array.from(globalAvgPoolWasm(x)!.dataSync())).toEqual([7, 8, 9, 10]);
    const dy = tf.tensor2d([[4, -8, 2, 1]]);
    const [gx] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(globalAvgPoolWasm(a)!, dy)))([x]);
    expect(Array.from(gx!.dataSync())).toEqual([
      1, -2, 0.5, 0.25, 1, -2, 0.5, 0.25, 1, -2, 0.5, 0.25, 1, -2, 0.5, 0.25,
    ]);
  });

  it('TfOps.globalAvgPool runs it on wasm and gives what the two means give', async () => {
    const shape = [8, 14, 14, 32];
    const x = tf.tensor(values(8 * 14 * 14 * 32, 0.5, 3), shape);
    const dy = tf.tensor(values(8 * 32, 0, 1), [8, 32]);
    const run = (own: boolean) => {
      setWasmGlobalAvgPool(own);
      const o = ops();
      const { value, grads } = tf.valueAndGrads((a: tf.Tensor) =>
        tf.sum(tf.mul(o.globalAvgPool(a), dy)),
      )([x]);
      const out = [o.globalAvgPool(x).dataSync(), grads[0]!.dataSync()];
      tf.dispose([value, ...grads]);
      return out;
    };
    const tfOps = run(false);
    const own = run(true);
    for (const [i, v] of own.entries())
      expect(relErr(v, tfOps[i]!), `output ${i}`).toBeLessThan(1e-6);
    setWasmGlobalAvgPool(true);
    const profile = await tf.profile(() => {
      const [g] = tf.grads((a: tf.Tensor) => tf.sum(ops().globalAvgPool(a)))([x]);
      return g!;
    });
    const names = profile.kernels.map((k) => k.name);
    expect(names).toContain('KwWasmGlobalAvgPool');
    expect(names).toContain('KwWasmGlobalAvgPoolGrad');
    expect(names).not.toContain('Mean');
    tf.dispose([x, dy]);
  });

  it('second and third derivatives match the two-mean path (the gradient kernel has a gradient)', () => {
    const x = tf.tensor(values(2 * 3 * 5 * 8, 0.5, 2), [2, 3, 5, 8]);
    const w = tf.tensor(values(2 * 8, 0, 1), [2, 8]);
    const run = (own: boolean) => {
      setWasmGlobalAvgPool(own);
      const o = ops();
      // f(u) = sum(pool(u)^2 · w); its gradient's gradient and one order more
      const f = (u: tf.Tensor) => tf.sum(tf.mul(tf.square(o.globalAvgPool(u)), w));
      const g2 = tf.grad((t: tf.Tensor) => tf.sum(tf.square(tf.grad(f)(t))));
      const g3 = tf.grad((t: tf.Tensor) => tf.sum(g2(t)));
      return [g2(x).dataSync(), g3(x).dataSync()];
    };
    const tfOps = run(false);
    const own = run(true);
    for (const [i, v] of own.entries())
      expect(relErr(v, tfOps[i]!), `order ${i + 2}`).toBeLessThan(1e-5);
    // not trivially zero
    expect(Math.max(...Array.from(own[0]!, Math.abs))).toBeGreaterThan(1e-6);
    tf.dispose([x, w]);
  });

  it('its gradient runs even when the own kernels are switched off between forward and backward', () => {
    const shape = [2, 3, 3, 8];
    const x = values(144, 0, 1);
    const dy = values(16, 0, 1);
    const ref = reference(x, shape, dy);
    const [xt, dyt] = [tf.tensor(x, shape), tf.tensor2d(dy, [2, 8])];
    const f = (a: tf.Tensor) => {
      const y = globalAvgPoolWasm(a)!;
      setOwnWasmKernels(false); // the backward below runs after this
      return tf.sum(tf.mul(y, dyt!));
    };
    const [gx] = tf.grads(f)([xt!]);
    expect(relErr(gx!.dataSync(), ref.dx)).toBeLessThan(1e-6);
    tf.dispose([xt!, dyt!, gx!]);
  });

  it('takes the maps it is for and leaves the rest (undefined: the caller takes tfjs ops)', async () => {
    const not: [string, tf.Tensor][] = [
      ['C not a multiple of 4', tf.randomNormal([2, 3, 3, 6])],
      ['rank 2', tf.randomNormal([2, 8])],
      ['int32', tf.zeros([2, 3, 3, 8], 'int32')],
      ['an empty batch', tf.zeros([0, 3, 3, 8])],
      ['an empty map', tf.zeros([2, 0, 3, 8])],
    ];
    for (const [label, x] of not) expect(globalAvgPoolWasm(x), label).toBeUndefined();
    const ok = tf.randomNormal([2, 3, 3, 8]);
    setWasmGlobalAvgPool(false);
    expect(globalAvgPoolWasm(ok), 'switched off').toBeUndefined();
    setWasmGlobalAvgPool(true);
    setOwnWasmKernels(false);
    expect(globalAvgPoolWasm(ok), 'own kernels off').toBeUndefined();
    setOwnWasmKernels(true);
    // C not a multiple of 4 still pools through TfOps (tfjs's means), to the same values
    const odd = tf.tensor(values(2 * 3 * 3 * 6, 0, 1), [2, 3, 3, 6]);
    const want = tf.mean(odd, [1, 2]);
    expect(relErr(ops().globalAvgPool(odd).dataSync(), want.dataSync())).toBeLessThan(1e-6);
    await useBackend('cpu');
    const onCpu = tf.randomNormal([2, 3, 3, 8]);
    expect(globalAvgPoolWasm(onCpu), 'cpu backend').toBeUndefined();
    tf.dispose([onCpu]);
    await useBackend('wasm');
    tf.dispose([...not.map(([, x]) => x), ok, odd, want]);
  });
});
