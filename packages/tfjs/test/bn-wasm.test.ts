import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { batchNormTrainWasm, setWasmBatchNorm } from '../src/bn-wasm.js';
import { setOwnWasmKernels } from '../src/conv-wasm.js';
import { batchNormLast } from '../src/layers.js';
import { relErr, useBackend } from './helpers.js';

const EPS = 1e-5;

/** Normal-ish values with the given offset and spread (sum of uniforms). */
function values(size: number, offset: number, spread: number): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < a.length; i++)
    a[i] = offset + spread * (Math.random() + Math.random() + Math.random() - 1.5);
  return a;
}

/**
 * Float64 BatchNorm over the last axis and its gradients for L = sum(y · dy), from the
 * definition: the batch mean and biased variance, y = x̂ w + b with x̂ = (x - mean) / sqrt(var +
 * eps); dbias = Σ dy, dweight = Σ dy x̂, dx = w / sqrt(var + eps) · (dy - dbias/M - x̂ dweight/M).
 */
function reference(x: Float32Array, w: Float32Array, b: Float32Array, dy: Float32Array) {
  const C = w.length;
  const M = x.length / C;
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  for (let i = 0; i < x.length; i++) mean[i % C]! += x[i]! / M;
  for (let i = 0; i < x.length; i++) variance[i % C]! += (x[i]! - mean[i % C]!) ** 2 / M;
  const rstd = Array.from(variance, (v) => 1 / Math.sqrt(v + EPS));
  const xhat = Float64Array.from(x, (v, i) => (v - mean[i % C]!) * rstd[i % C]!);
  const y = Float64Array.from(xhat, (v, i) => v * w[i % C]! + b[i % C]!);
  const db = new Float64Array(C);
  const dw = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    db[i % C]! += dy[i]!;
    dw[i % C]! += dy[i]! * xhat[i]!;
  }
  const dx = Float64Array.from(dy, (g, i) => {
    const c = i % C;
    return w[c]! * rstd[c]! * (g - db[c]! / M - (xhat[i]! * dw[c]!) / M);
  });
  return { y, mean, variance, dx, dw, db };
}

/** Variables of a BatchNorm as `batchNormLast` reads them (plain tensors, writable). */
function bnVars(C: number, w: tf.Tensor, b: tf.Tensor) {
  const store = new Map<string, tf.Tensor>([
    ['weight', w],
    ['bias', b],
    ['running_mean', tf.zeros([C])],
    ['running_var', tf.ones([C])],
  ]);
  const vars = new Map<string, tf.LayerVariable>();
  for (const name of store.keys())
    vars.set(name, {
      read: () => store.get(name)!,
      write: (t: tf.Tensor) => {
        tf.keep(t);
        if (name.startsWith('running')) store.get(name)!.dispose();
        store.set(name, t);
      },
    } as unknown as tf.LayerVariable);
  return { vars, store };
}

describe('training BatchNorm on the own wasm kernels (batchNormTrainWasm)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
    setWasmBatchNorm(true);
  });

  // shape, offset and spread of x, tolerance: float32 outputs with float64 sums against float64.
  // The last two cases' values sit 1000x and 10^4 x their spread from zero, where the float32
  // mean alone is off by half an ulp (4e-5 and 4e-4 of the spread, which tfjs's ops carry into
  // x̂); the kernels fold the float64 remainder back in. Three rows: the fewest whose gradient is
  // not ~0 (below).
  const CASES: [number[], number, number, number][] = [
    [[4, 5, 5, 8], 0, 1, 1e-5],
    [[32, 16], 0.3, 2, 1e-5],
    [[2, 3, 3, 12], 10, 1, 1e-5],
    [[3, 1, 1, 4], 0, 1, 1e-5],
    [[3, 7, 7, 36], -2, 0.5, 1e-5],
    [[6, 4, 4, 8], 100, 0.1, 1e-5],
    [[2, 8, 8, 4], -1000, 0.1, 1e-5],
  ];

  it.each(CASES)(
    'x %j (offset %d, spread %d): y, moments and gradients match float64 to %d',
    (shape, offset, spread, tol) => {
      const C = shape[shape.length - 1]!;
      const size = shape.reduce((a, d) => a * d, 1);
      const x = values(size, offset, spread);
      const w = values(C, 1, 0.5);
      const b = values(C, 0, 1);
      const dy = values(size, 0, 1);
      const ref = reference(x, w, b, dy);
      const before = tf.memory();
      const [xt, wt, bt, dyt] = [
        tf.tensor(x, shape),
        tf.tensor1d(w),
        tf.tensor1d(b),
        tf.tensor(dy, shape),
      ];
      const out = batchNormTrainWasm(xt!, wt!, bt!, EPS);
      expect(out).toBeDefined();
      const f = (a: tf.Tensor, p: tf.Tensor, q: tf.Tensor) =>
        tf.sum(tf.mul(batchNormTrainWasm(a, p, q, EPS)!.y, dyt!));
      const [gx, gw, gb] = tf.grads(f)([xt!, wt!, bt!]);
      expect(relErr(out!.y.dataSync(), ref.y)).toBeLessThan(tol);
      expect(relErr(out!.mean.dataSync(), ref.mean)).toBeLessThan(tol);
      expect(relErr(out!.variance.dataSync(), ref.variance)).toBeLessThan(tol);
      expect(relErr(gx!.dataSync(), ref.dx)).toBeLessThan(tol);
      expect(relErr(gw!.dataSync(), ref.dw)).toBeLessThan(tol);
      expect(relErr(gb!.dataSync(), ref.db)).toBeLessThan(tol);
      tf.dispose([xt!, wt!, bt!, dyt!, out!.y, out!.mean, out!.variance, gx!, gw!, gb!]);
      const after = tf.memory();
      expect(after.numTensors).toBe(before.numTensors);
      expect(after.numBytes).toBe(before.numBytes);
    },
  );

  it('one row per channel: y is the bias exactly and dx is ~0 (x̂ = 0; tfjs ops the same)', () => {
    const x = tf.tensor2d([[3, -1, 2.5, 7]]);
    const w = tf.tensor1d([1, 2, 0.5, -1]);
    const b = tf.tensor1d([0.1, -0.2, 0.3, 4]);
    const dy = tf.tensor2d([[1, -2, 3, 0.5]]);
    const out = batchNormTrainWasm(x, w, b, EPS)!;
    expect(Array.from(out.y.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(Array.from(out.variance.dataSync())).toEqual([0, 0, 0, 0]);
    const [gx] = tf.grads((a: tf.Tensor) =>
      tf.sum(tf.mul(batchNormTrainWasm(a, w, b, EPS)!.y, dy)),
    )([x]);
    // the exact gradient is 0; k dy - k dy leaves a rounding of |k dy| = |w dy| / sqrt(eps)
    for (const v of gx!.dataSync()) expect(Math.abs(v)).toBeLessThan((1e-6 * 3) / Math.sqrt(EPS));
    tf.dispose([x, w, b, dy, out.y, out.mean, out.variance, gx!]);
  });

  it('a second-order gradient is refused naming the way out; with the own kernels off it runs', () => {
    const x = tf.tensor(values(4 * 3 * 3 * 8, 0, 1), [4, 3, 3, 8]);
    const w = tf.tensor1d(values(8, 1, 0.5));
    const b = tf.tensor1d(values(8, 0, 1));
    const { vars } = bnVars(8, w, b);
    const f = (u: tf.Tensor) => tf.sum(tf.square(batchNormLast(u, vars, '', EPS, 0.1, true)));
    const g2 = tf.grad((t: tf.Tensor) => tf.sum(tf.square(tf.grad(f)(t))));
    expect(() => g2(x)).toThrow(
      /BACKEND_UNSUPPORTED.*second-order gradients through a training BatchNorm.*setOwnWasmKernels\(false\)/,
    );
    setOwnWasmKernels(false);
    const r = g2(x);
    expect(r.shape).toEqual([4, 3, 3, 8]);
    expect(Array.from(r.dataSync()).every(Number.isFinite)).toBe(true);
    tf.dispose([x, w, b, r]);
  });

  it('its gradient runs even when the own kernels are switched off between forward and backward', () => {
    const shape = [2, 3, 3, 8];
    const [x, w, b, dy] = [
      values(144, 0, 1),
      values(8, 1, 0.5),
      values(8, 0, 1),
      values(144, 0, 1),
    ];
    const ref = reference(x, w, b, dy);
    const [xt, wt, bt, dyt] = [
      tf.tensor(x, shape),
      tf.tensor1d(w),
      tf.tensor1d(b),
      tf.tensor(dy, shape),
    ];
    const f = (a: tf.Tensor) => {
      const y = batchNormTrainWasm(a, wt!, bt!, EPS)!.y;
      setOwnWasmKernels(false); // the backward below runs after this
      return tf.sum(tf.mul(y, dyt!));
    };
    const [gx] = tf.grads(f)([xt!]);
    expect(relErr(gx!.dataSync(), ref.dx)).toBeLessThan(1e-5);
    tf.dispose([xt!, wt!, bt!, dyt!, gx!]);
  });

  it('batchNormLast with it gives what tfjs ops give: output, gradients, running statistics', () => {
    const shape = [8, 6, 6, 16];
    const C = 16;
    const x = tf.tensor(values(8 * 6 * 6 * 16, 0.5, 2), shape);
    const dy = tf.tensor(values(8 * 6 * 6 * 16, 0, 1), shape);
    const w = tf.tensor1d(values(C, 1, 0.5));
    const b = tf.tensor1d(values(C, 0, 1));
    const run = (own: boolean) => {
      setWasmBatchNorm(own);
      const { vars, store } = bnVars(C, w, b);
      let y: ArrayLike<number> = [];
      const f = (a: tf.Tensor, p: tf.Tensor, q: tf.Tensor) => {
        store.set('weight', p);
        store.set('bias', q);
        const out = batchNormLast(a, vars, '', EPS, 0.1, true);
        y = out.dataSync();
        return tf.sum(tf.mul(out, dy));
      };
      const { value, grads } = tf.valueAndGrads(f)([x, w, b]);
      const got = grads.map((t) => t.dataSync());
      const running = ['running_mean', 'running_var'].map((n) => store.get(n)!.dataSync());
      tf.dispose([value, ...grads, store.get('running_mean')!, store.get('running_var')!]);
      return [y, ...got, ...running];
    };
    const tfOps = run(false);
    const own = run(true);
    // y, dx, dweight, dbias, running mean, running variance (unbiased, as PyTorch); not the
    // loss sum(y dy): a sum of terms of both signs, whose relative error its cancellation
    // amplifies (1.1e-5 on one draw)
    for (const [i, v] of own.entries())
      expect(relErr(v, tfOps[i]!), `output ${i}`).toBeLessThan(1e-5);
    tf.dispose([x, dy, w, b]);
  });

  it('takes the BatchNorms it is for and leaves the rest (undefined: the caller takes tfjs ops)', async () => {
    const t = (shape: number[], dtype: 'float32' | 'int32' = 'float32') =>
      dtype === 'int32' ? tf.zeros(shape, 'int32') : tf.randomNormal(shape);
    const yes = batchNormTrainWasm(t([2, 3, 3, 8]), t([8]), t([8]), EPS);
    expect(yes?.y.shape).toEqual([2, 3, 3, 8]);
    const not: [string, tf.Tensor, tf.Tensor, tf.Tensor][] = [
      ['C not a multiple of 4', t([2, 3, 3, 6]), t([6]), t([6])],
      ['C below 4', t([5, 2]), t([2]), t([2])],
      ['rank 1', t([8]), t([8]), t([8])],
      ['int32', t([2, 8], 'int32'), t([8]), t([8])],
      ['weight of another size', t([2, 8]), t([4]), t([8])],
      ['bias of rank 2', t([2, 8]), t([8]), t([1, 8])],
      ['an empty batch', t([0, 8]), t([8]), t([8])],
    ];
    for (const [label, x, w, b] of not)
      expect(batchNormTrainWasm(x, w, b, EPS), label).toBeUndefined();
    const ok = [t([2, 8]), t([8]), t([8])] as const;
    setWasmBatchNorm(false);
    expect(batchNormTrainWasm(...ok, EPS), 'switched off').toBeUndefined();
    setWasmBatchNorm(true);
    setOwnWasmKernels(false);
    expect(batchNormTrainWasm(...ok, EPS), 'own kernels off').toBeUndefined();
    setOwnWasmKernels(true);
    await useBackend('cpu');
    const onCpu = [t([2, 8]), t([8]), t([8])] as const;
    expect(batchNormTrainWasm(...onCpu, EPS), 'cpu backend').toBeUndefined();
    tf.dispose([...onCpu]);
    await useBackend('wasm');
    tf.dispose([
      yes!.y,
      yes!.mean,
      yes!.variance,
      ...ok,
      ...not.flatMap(([, x, w, b]) => [x, w, b]),
    ]);
  });
});
