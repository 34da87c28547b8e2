import { initWeights, SpecBuilder } from '@kernelwarehouse/core';
import { Rng, tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import {
  buildModel,
  registerTrainingKernels,
  setTemperature,
  specVariables,
  TRAINING_KERNELS,
} from '../src/index.js';
import { relErr, useBackend } from './helpers.js';

type Cfg = {
  h: number;
  w: number;
  cin: number;
  cout: number;
  k: number;
  s: number;
  pad: 'same' | 'valid';
};
const cfgs: Cfg[] = [
  { h: 9, w: 9, cin: 3, cout: 4, k: 3, s: 1, pad: 'same' },
  { h: 8, w: 7, cin: 2, cout: 5, k: 3, s: 2, pad: 'same' },
  { h: 8, w: 7, cin: 4, cout: 3, k: 1, s: 2, pad: 'valid' },
  { h: 9, w: 9, cin: 3, cout: 2, k: 5, s: 2, pad: 'valid' },
];

/** Gradients of sum(conv(x, w) * r) wrt x and w, for conv2d and depthwise. */
function grads(c: Cfg, depthwise: boolean): Float32Array[] {
  const rng = new Rng(c.h * 31 + c.k);
  const x = tf.tensor4d(rng.normalArray(2 * c.h * c.w * c.cin), [2, c.h, c.w, c.cin]);
  const wShape: [number, number, number, number] = depthwise
    ? [c.k, c.k, c.cin, 1]
    : [c.k, c.k, c.cin, c.cout];
  const w = tf.tensor4d(rng.normalArray(wShape.reduce((a, b) => a * b)), wShape);
  const f = (xx: tf.Tensor, ww: tf.Tensor) => {
    const y = depthwise
      ? tf.depthwiseConv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.s, c.pad)
      : tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.s, c.pad);
    const r = tf.tensor(new Rng(5).normalArray(y.size), y.shape);
    return tf.sum(tf.mul(y, r));
  };
  const [gx, gw] = tf.grads(f)([x, w]);
  const out = [gx!.dataSync() as Float32Array, gw!.dataSync() as Float32Array];
  tf.dispose([x, w, gx!, gw!]);
  return out;
}

describe('wasm training kernels', () => {
  it('match the cpu backend stock kernels (conv2d and depthwise, stride 1/2, same/valid)', async () => {
    await useBackend('cpu');
    const want = cfgs.flatMap((c) => [grads(c, false), grads(c, true)]);
    await useBackend('wasm');
    expect(registerTrainingKernels('wasm').sort()).toEqual([...TRAINING_KERNELS].sort());
    expect(registerTrainingKernels('wasm')).toEqual([]); // idempotent
    const got = cfgs.flatMap((c) => [grads(c, false), grads(c, true)]);
    let worst = 0;
    got.forEach((pair, i) => {
      pair.forEach((g, j) => {
        worst = Math.max(worst, relErr(g, want[i]![j]!));
      });
    });
    console.log(`worst relative difference wasm-fast vs cpu-stock: ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);
  });

  it('on cpu they match the stock kernels, and cases they do not cover go to the stock kernels', async () => {
    await useBackend('cpu');
    // a depthwise conv with channel multiplier 2 is outside the rebuilt kernels (dilated conv
    // gradients are refused by tfjs itself, on every backend, before any kernel runs)
    const other = () => {
      const rng = new Rng(77);
      const x = tf.tensor4d(rng.normalArray(2 * 9 * 9 * 3), [2, 9, 9, 3]);
      const wd = tf.tensor4d(rng.normalArray(3 * 3 * 3 * 2), [3, 3, 3, 2]);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.square(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'))),
      )([x, wd]);
      const out = g.map((t) => t.dataSync() as Float32Array);
      tf.dispose([x, wd, ...g]);
      return out;
    };
    const want = cfgs.flatMap((c) => [grads(c, false), grads(c, true)]);
    const wantOther = other();
    expect(registerTrainingKernels('cpu').sort()).toEqual([...TRAINING_KERNELS].sort());
    const got = cfgs.flatMap((c) => [grads(c, false), grads(c, true)]);
    let worst = 0;
    got.forEach((pair, i) => {
      pair.forEach((g, j) => {
        worst = Math.max(worst, relErr(g, want[i]![j]!));
      });
    });
    expect(worst).toBeLessThan(1e-5);
    // the fallback is the stock kernel itself: bit-identical
    other().forEach((g, i) => {
      expect(g).toEqual(wantOther[i]);
    });
    // wasm has no stock kernel to fall back to: a clear error
    await useBackend('wasm');
    registerTrainingKernels('wasm');
    const x = tf.ones([1, 7, 7, 2]) as tf.Tensor4D;
    const w = tf.ones([3, 3, 2, 2]) as tf.Tensor4D;
    expect(() =>
      tf.grads((a: tf.Tensor) => tf.sum(tf.depthwiseConv2d(a as tf.Tensor4D, w, 1, 'same')))([x]),
    ).toThrow(/\[BACKEND_UNSUPPORTED\].*channel multiplier must be 1/);
    tf.dispose([x, w]);
  });

  it('KW model gradients on wasm match cpu, and a KW layer matches finite differences', async () => {
    const spec = tinyKwSpec({ budget: 2, cellRatio: 0.5 });
    const weights = initWeights(spec, { seed: 3 });
    const x0 = new Rng(9).normalArray(2 * 8 * 8 * 3);
    const target = new Rng(10).normalArray(2 * 4);
    const run = () => {
      const model = buildModel(spec, weights);
      setTemperature(model, 0.3);
      const vars = specVariables(model);
      const trainable = [...vars.entries()].filter(([, v]) => v.trainable);
      const x = tf.tensor4d(x0, [2, 8, 8, 3]);
      const t = tf.tensor2d(target, [2, 4]);
      const loss = () =>
        tf.sum(tf.square(tf.sub(model.apply(x, { training: true }) as tf.Tensor, t))) as tf.Scalar;
      const { grads: g } = tf.variableGrads(
        loss,
        trainable.map(([, v]) => (v as unknown as { val: tf.Variable }).val),
      );
      const out = new Map<string, Float32Array>();
      trainable.forEach(([n, v]) => {
        const gv = g[(v as unknown as { val: tf.Variable }).val.name];
        out.set(n, gv!.dataSync() as Float32Array);
      });
      return { out, model, x, t, trainable };
    };
    await useBackend('cpu');
    const cpu = run();
    await useBackend('wasm');
    registerTrainingKernels('wasm');
    const wasm = run();
    let worst = 0;
    for (const [n, g] of cpu.out) worst = Math.max(worst, relErr(wasm.out.get(n)!, g));
    console.log(`KW model gradients wasm vs cpu: worst relative error ${worst.toExponential(2)}`);
    expect(cpu.out.size).toBeGreaterThan(10);
    expect(worst).toBeLessThan(1e-3);
  });

  it('gradients of a single KW conv layer match central finite differences (cpu)', async () => {
    await useBackend('cpu');
    const b = new SpecBuilder('one-kw', [4, 6, 6]);
    b.warehouse({ id: 'w', budget: 2, cellInRatio: 0.5, cellOutRatio: 0.5 });
    const y = b.dynamicConv2d(
      'kw',
      b.input,
      { outChannels: 4, kernelSize: 3, padding: 1, stride: 2, bias: true },
      { kind: 'kw', warehouse: 'w' },
    );
    b.output(b.flatten('flat', y));
    const spec = b.build();
    const model = buildModel(spec, initWeights(spec, { seed: 4 }));
    setTemperature(model, 0.5);
    const x = tf.tensor4d(new Rng(1).normalArray(2 * 6 * 6 * 4), [2, 6, 6, 4]);
    const r = tf.tensor2d(new Rng(2).normalArray(2 * 4 * 3 * 3), [2, 36]);
    const loss = () => tf.sum(tf.mul(model.apply(x) as tf.Tensor, r)) as tf.Scalar;
    const vars = specVariables(model);
    let worst = 0;
    let checked = 0;
    for (const name of [
      'warehouses.w',
      'kw.attention.fc1.weight',
      'kw.attention.fc2.weight',
      'kw.bias',
    ]) {
      const v = vars.get(name)!;
      const tv = (v as unknown as { val: tf.Variable }).val;
      const { grads: g } = tf.variableGrads(loss, [tv]);
      const an = g[tv.name]!.dataSync();
      const base = v.read().dataSync().slice() as Float32Array;
      for (const idx of [0, 3, base.length - 1]) {
        const eps = 3e-3;
        const at = (d: number) => {
          const p = base.slice();
          p[idx]! += d;
          v.write(tf.tensor(p, v.shape as number[]));
          return tf.tidy(() => loss().dataSync()[0]!);
        };
        const fd = (at(eps) - at(-eps)) / (2 * eps);
        v.write(tf.tensor(base, v.shape as number[]));
        const e = Math.abs(fd - an[idx]!) / Math.max(Math.abs(an[idx]!), 0.1);
        if (e > 5e-3) console.log(name, idx, fd, an[idx]);
        worst = Math.max(worst, e);
        checked++;
      }
    }
    console.log(
      `finite differences, one KW layer (${checked} entries): worst relative error ${worst.toExponential(2)}`,
    );
    expect(checked).toBe(12);
    expect(worst).toBeLessThan(1e-2);
  });
});
