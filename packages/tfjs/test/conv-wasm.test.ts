import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isKwError } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackend } from '../src/backend.js';
import {
  conv2dForwardWasm,
  heapOffset,
  kernelsFor,
  matMulNoPack,
  matMulWasm,
  perSampleConvWasm,
  setAssemblyForwardNoPack,
  setOwnWasmKernels,
  setWasmFusedMultiplyAdd,
  setWasmWinograd,
  transposeBlocked,
} from '../src/conv-wasm.js';
import { registerTrainingKernels } from '../src/grads.js';
import { perSampleConv } from '../src/layers.js';
import { convReference, convWithGrads, randomValues, relErr, useBackend } from './helpers.js';

/** One geometry: batch, height, width, in, out, kernel (h, w), stride (h, w), padding (h, w). */
interface Case {
  n: number;
  h: number;
  w: number;
  c: number;
  o: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
}

function outSize(n: number, k: number, s: number, p: number): number {
  return Math.floor((n + 2 * p - k) / s) + 1;
}

/** Float64 direct convolution and its two gradients (per-sample kernels; helpers.ts). */
function reference(cs: Case, x: Float32Array, k: Float32Array, dy: Float32Array) {
  const [kh, kw] = cs.k;
  const [sh, sw] = cs.s;
  const [pt, pl] = cs.p;
  const ho = outSize(cs.h, kh, sh, pt);
  const wo = outSize(cs.w, kw, sw, pl);
  const g = { ...cs, kh, kw, sh, sw, pt, pl, ho, wo, perSample: true };
  return { ...convReference(g, x, k, dy), shape: [cs.n, ho, wo, cs.o] };
}

const random = randomValues;

/** y, dL/dx and dL/dk of L = sum(perSampleConv(x, k) * dy), and the kernels that ran. */
async function run(cs: Case, x: Float32Array, k: Float32Array, dy: Float32Array) {
  const xt = tf.tensor4d(x, [cs.n, cs.h, cs.w, cs.c]);
  const kt = tf.tensor(k, [cs.n, cs.k[0], cs.k[1], cs.c, cs.o]);
  const geometry = { groups: 1, stride: cs.s, padding: cs.p, dilation: [1, 1] as [number, number] };
  const r = await convWithGrads((a, b) => perSampleConv(a, b, geometry), xt, kt, dy);
  tf.dispose([xt, kt]);
  return r;
}

// stride, padding, kernel larger than the image, remainders of every tile (4 pixels, 8 and
// 4 output channels, 2 pixels of the input gradient), batch 1
const CASES: Case[] = [
  { n: 2, h: 5, w: 5, c: 4, o: 12, k: [3, 3], s: [1, 1], p: [1, 1] },
  { n: 3, h: 7, w: 6, c: 8, o: 8, k: [3, 3], s: [2, 2], p: [1, 1] },
  { n: 1, h: 4, w: 4, c: 4, o: 4, k: [1, 1], s: [1, 1], p: [0, 0] },
  { n: 2, h: 9, w: 9, c: 4, o: 16, k: [5, 5], s: [2, 2], p: [2, 2] },
  { n: 2, h: 6, w: 7, c: 12, o: 4, k: [3, 3], s: [2, 1], p: [0, 1] },
  { n: 2, h: 3, w: 3, c: 4, o: 20, k: [7, 7], s: [1, 1], p: [3, 3] },
  { n: 3, h: 8, w: 5, c: 8, o: 12, k: [1, 3], s: [3, 2], p: [0, 1] },
  { n: 5, h: 2, w: 2, c: 16, o: 8, k: [3, 3], s: [1, 1], p: [1, 1] },
  // stride 1 with padding other than (k - 1) / 2: the input gradient as a forward conv pads by
  // k - 1 - p; padding above k - 1 keeps conv_dx1
  { n: 2, h: 6, w: 5, c: 4, o: 8, k: [3, 3], s: [1, 1], p: [0, 2] },
  { n: 2, h: 7, w: 6, c: 8, o: 4, k: [5, 3], s: [1, 1], p: [1, 0] },
  { n: 1, h: 4, w: 4, c: 4, o: 8, k: [3, 3], s: [1, 1], p: [3, 3] },
  // strided, from 100 output pixels (per-sample kernels' input gradient by phases): odd sizes
  // (phases of different sizes), stride 3, non-square strides and kernels, a 1x1 kernel at
  // stride 2 (phases no tap reaches), padding above the taps of a phase (conv_dxs), 20 channels
  // (a second 16-channel block)
  { n: 2, h: 21, w: 20, c: 4, o: 8, k: [3, 3], s: [2, 2], p: [1, 1] },
  { n: 2, h: 20, w: 22, c: 8, o: 4, k: [1, 1], s: [2, 2], p: [0, 0] },
  { n: 1, h: 31, w: 21, c: 4, o: 4, k: [5, 3], s: [3, 2], p: [2, 1] },
  { n: 2, h: 21, w: 21, c: 4, o: 4, k: [3, 3], s: [2, 2], p: [2, 2] },
  { n: 1, h: 23, w: 29, c: 20, o: 8, k: [4, 2], s: [2, 3], p: [1, 0] },
];

describe('per-sample convolution kernels on wasm', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  it.each(CASES)('match float64 direct convolution and its gradients: %j', async (cs) => {
    const ho = outSize(cs.h, cs.k[0], cs.s[0], cs.p[0]);
    const wo = outSize(cs.w, cs.k[1], cs.s[1], cs.p[1]);
    const x = random(cs.n * cs.h * cs.w * cs.c);
    const k = random(cs.n * cs.k[0] * cs.k[1] * cs.c * cs.o);
    const dy = random(cs.n * ho * wo * cs.o);
    const ref = reference(cs, x, k, dy);
    const own = await run(cs, x, k, dy);
    // the path under test ran (forward and both gradients), not the stock loop
    expect(own.kernels).toContain('KwWasmConv2D');
    expect(own.kernels).toContain('KwWasmConv2DBackpropInput');
    expect(own.kernels).toContain('KwWasmConv2DBackpropFilter');
    expect(own.kernels).not.toContain('Conv2D');
    // float32 sums of <= 7*7*20 products against float64: 1e-5 of the largest value
    expect(relErr(own.y, ref.y)).toBeLessThan(1e-5);
    expect(relErr(own.dx, ref.dx)).toBeLessThan(1e-5);
    expect(relErr(own.dk, ref.dk)).toBeLessThan(1e-5);
    // and the stock per-sample loop agrees with both
    setOwnWasmKernels(false);
    const stock = await run(cs, x, k, dy);
    expect(stock.kernels).not.toContain('KwWasmConv2D');
    expect(relErr(own.y, stock.y)).toBeLessThan(1e-5);
    expect(relErr(own.dx, stock.dx)).toBeLessThan(1e-5);
    expect(relErr(own.dk, stock.dk)).toBeLessThan(1e-5);
  });

  it('every output element is written (no stale heap memory shows through)', async () => {
    // fill the heap with garbage first: freed buffers are reused by the next allocations
    const junk = tf.fill([1 << 16], Number.NaN);
    junk.dataSync();
    junk.dispose();
    const cs = CASES[0]!;
    const ho = outSize(cs.h, cs.k[0], cs.s[0], cs.p[0]);
    const x = random(cs.n * cs.h * cs.w * cs.c);
    const k = random(cs.n * 9 * cs.c * cs.o);
    const dy = random(cs.n * ho * ho * cs.o);
    const own = await run(cs, x, k, dy);
    for (const a of [own.y, own.dx, own.dk]) expect(a.every(Number.isFinite)).toBe(true);
  });

  it('cases the kernels do not cover take the stock loop, with the same results', async () => {
    // 3 input channels (not a multiple of 4)
    const cs: Case = { n: 2, h: 5, w: 5, c: 3, o: 8, k: [3, 3], s: [1, 1], p: [1, 1] };
    const x = random(2 * 25 * 3);
    const k = random(2 * 9 * 3 * 8);
    const dy = random(2 * 25 * 8);
    const r = await run(cs, x, k, dy);
    expect(r.kernels).not.toContain('KwWasmConv2D');
    const ref = reference(cs, x, k, dy);
    expect(relErr(r.y, ref.y)).toBeLessThan(1e-5);
    expect(relErr(r.dk, ref.dk)).toBeLessThan(1e-5);
    // groups 2 and dilation 2 as well
    const xt = tf.randomNormal([2, 6, 6, 8]);
    const kt = tf.randomNormal([2, 3, 3, 4, 8]);
    const p = await tf.profile(() =>
      tf.dispose(
        perSampleConv(xt, kt, { groups: 2, stride: [1, 1], padding: [1, 1], dilation: [1, 1] }),
      ),
    );
    expect(p.kernelNames).not.toContain('KwWasmConv2D');
    const kd = tf.randomNormal([2, 3, 3, 8, 8]);
    const q = await tf.profile(() =>
      tf.dispose(
        perSampleConv(xt, kd, { groups: 1, stride: [1, 1], padding: [2, 2], dilation: [2, 2] }),
      ),
    );
    expect(q.kernelNames).not.toContain('KwWasmConv2D');
    tf.dispose([xt, kt, kd]);
  });

  it('hands degenerate convs to the stock route (no empty loop, no division by zero)', () => {
    const g = {
      groups: 1,
      stride: [1, 1] as [number, number],
      padding: [1, 1] as [number, number],
      dilation: [1, 1] as [number, number],
    };
    const cases: [number[], number[], typeof g][] = [
      [[2, 5, 5, 0], [2, 3, 3, 0, 4], g], // no input channels
      [[2, 5, 5, 4], [2, 3, 3, 4, 0], g], // no output channels
      [[2, 5, 5, 4], [2, 0, 3, 4, 4], g], // an empty kernel axis
      [[2, 5, 5, 4], [2, 3, 3, 4, 4], { ...g, stride: [0, 1] }], // stride 0
      [[2, 5, 5, 4], [2, 3, 3, 4, 4], { ...g, padding: [-1, 0] }], // negative padding
      [[2, 5, 5, 4], [3, 3, 3, 4, 4], g], // kernels for another batch size
    ];
    for (const [xs, ks, geometry] of cases) {
      const x = tf.zeros(xs);
      const k = tf.zeros(ks);
      expect(perSampleConvWasm(x, k, geometry)).toBeUndefined();
      tf.dispose([x, k]);
    }
  });

  it('leaves no tensor and no heap memory behind', async () => {
    const xt = tf.randomNormal([3, 6, 6, 8]);
    const kt = tf.randomNormal([3, 3, 3, 8, 12]);
    const geometry = {
      groups: 1,
      stride: [1, 1] as [number, number],
      padding: [1, 1] as [number, number],
      dilation: [1, 1] as [number, number],
    };
    const step = () =>
      tf.tidy(() => {
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(perSampleConv(a, b, geometry)));
        return g([xt, kt]);
      });
    tf.dispose(step()); // first call registers the kernels
    const before = tf.memory();
    for (let i = 0; i < 3; i++) tf.dispose(step());
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
    tf.dispose([xt, kt]);
  });
});

/** An ordinary conv's geometry: one kernel for the batch, tfjs padding mode. */
interface SharedCase {
  n: number;
  h: number;
  w: number;
  c: number;
  o: number;
  k: [number, number];
  s: [number, number];
  pad: 'same' | 'valid';
}

/** Output size and top/left padding as tfjs computes them ('same' pads the extra row below). */
function tfPads(n: number, k: number, s: number, pad: 'same' | 'valid'): [number, number] {
  if (pad === 'valid') return [Math.floor((n - k) / s) + 1, 0];
  const out = Math.ceil(n / s);
  return [out, Math.floor(Math.max((out - 1) * s + k - n, 0) / 2)];
}

/** Float64 gradients of sum(conv2d(x, k) * dy) for a kernel shared by the batch (helpers.ts). */
function sharedReference(cs: SharedCase, x: Float32Array, k: Float32Array, dy: Float32Array) {
  const [ho, pt] = tfPads(cs.h, cs.k[0], cs.s[0], cs.pad);
  const [wo, pl] = tfPads(cs.w, cs.k[1], cs.s[1], cs.pad);
  const [kh, kw] = cs.k;
  const [sh, sw] = cs.s;
  const g = { ...cs, kh, kw, sh, sw, pt, pl, ho, wo, perSample: false };
  return { ...convReference(g, x, k, dy), dyShape: [cs.n, ho, wo, cs.o] };
}

const SHARED: SharedCase[] = [
  { n: 3, h: 8, w: 8, c: 4, o: 12, k: [3, 3], s: [1, 1], pad: 'same' },
  // stride 2 'same' on an even size: no padding above, one row below
  { n: 2, h: 8, w: 6, c: 8, o: 8, k: [3, 3], s: [2, 2], pad: 'same' },
  { n: 2, h: 7, w: 7, c: 12, o: 4, k: [1, 1], s: [2, 2], pad: 'valid' },
  { n: 2, h: 9, w: 6, c: 4, o: 20, k: [5, 3], s: [1, 2], pad: 'valid' },
  { n: 1, h: 5, w: 5, c: 16, o: 16, k: [3, 3], s: [1, 1], pad: 'same' },
  { n: 2, h: 7, w: 6, c: 8, o: 12, k: [3, 5], s: [1, 1], pad: 'valid' },
  // input gradient by phases: stride 3 on sizes it does not divide, 20 output channels of dx
  { n: 2, h: 9, w: 11, c: 20, o: 8, k: [3, 3], s: [3, 3], pad: 'same' },
  { n: 1, h: 10, w: 7, c: 4, o: 4, k: [2, 4], s: [2, 3], pad: 'valid' },
];

describe('ordinary conv gradients on the wasm kernels', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  async function convGrads(cs: SharedCase, x: Float32Array, k: Float32Array, dy: Float32Array) {
    const xt = tf.tensor4d(x, [cs.n, cs.h, cs.w, cs.c]);
    const kt = tf.tensor4d(k, [cs.k[0], cs.k[1], cs.c, cs.o]);
    let dx!: Float32Array;
    let dk!: Float32Array;
    const profile = await tf.profile(() => {
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
        const y = tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, cs.s, cs.pad);
        return tf.sum(tf.mul(y, tf.tensor(dy, y.shape)));
      });
      const [gx, gk] = g([xt, kt]);
      dx = gx!.dataSync() as Float32Array;
      dk = gk!.dataSync() as Float32Array;
      tf.dispose([gx!, gk!]);
    });
    tf.dispose([xt, kt]);
    return { dx, dk, kernels: profile.kernelNames };
  }

  it.each(SHARED)('match float64 and the XNNPACK route: %j', async (cs) => {
    const [ho] = tfPads(cs.h, cs.k[0], cs.s[0], cs.pad);
    const [wo] = tfPads(cs.w, cs.k[1], cs.s[1], cs.pad);
    const x = random(cs.n * cs.h * cs.w * cs.c);
    const k = random(cs.k[0] * cs.k[1] * cs.c * cs.o);
    const dy = random(cs.n * ho * wo * cs.o);
    const ref = sharedReference(cs, x, k, dy);
    const own = await convGrads(cs, x, k, dy);
    expect(own.kernels).toContain('KwWasmConv2DBackpropInput');
    expect(own.kernels).toContain('KwWasmConv2DBackpropFilter');
    // float32 sums over <= 3 samples x 9 x 15 positions x 20 channels against float64
    expect(relErr(own.dx, ref.dx)).toBeLessThan(1e-5);
    expect(relErr(own.dk, ref.dk)).toBeLessThan(1e-5);
    setOwnWasmKernels(false);
    const stock = await convGrads(cs, x, k, dy);
    expect(stock.kernels).not.toContain('KwWasmConv2DBackpropFilter');
    expect(relErr(stock.dx, ref.dx)).toBeLessThan(1e-5);
    expect(relErr(stock.dk, ref.dk)).toBeLessThan(1e-5);
  });

  it.each([
    ['own kernels', true],
    ['stock route', false],
  ])('gradients through a conv with an empty output are zeros (%s)', (_, own) => {
    // explicit padding that leaves no output row: the loss sums nothing, so both gradients are
    // 0 (the XNNPACK route used to return its uninitialised output for the filter gradient)
    setOwnWasmKernels(own);
    const none: [[number, number], [number, number], [number, number], [number, number]] = [
      [0, 0],
      [0, 1],
      [1, 0],
      [0, 0],
    ];
    for (let i = 0; i < 3; i++) {
      const x = tf.randomNormal([1, 1, 5, 8]);
      const k = tf.randomNormal([3, 3, 8, 4]);
      const [gx, gk] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, none)),
      )([x, k]);
      expect(gx!.shape).toEqual([1, 1, 5, 8]);
      expect(gk!.shape).toEqual([3, 3, 8, 4]);
      expect(Array.from(gx!.dataSync()).every((v) => v === 0)).toBe(true);
      expect(Array.from(gk!.dataSync()).every((v) => v === 0)).toBe(true);
      tf.dispose([x, k, gx!, gk!]);
    }
  });

  it('a conv on 3 input channels (the stem) keeps the XNNPACK route', async () => {
    const cs: SharedCase = { n: 2, h: 6, w: 6, c: 3, o: 8, k: [3, 3], s: [1, 1], pad: 'same' };
    const x = random(2 * 36 * 3);
    const k = random(9 * 3 * 8);
    const dy = random(2 * 36 * 8);
    const r = await convGrads(cs, x, k, dy);
    expect(r.kernels).not.toContain('KwWasmConv2DBackpropFilter');
    const ref = sharedReference(cs, x, k, dy);
    expect(relErr(r.dk, ref.dk)).toBeLessThan(1e-5);
    expect(relErr(r.dx, ref.dx)).toBeLessThan(1e-5);
  });
});

describe('ordinary conv forward on the wasm kernels (Conv2D)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  // the gradient cases, and 36 output channels: two 16-wide blocks and a 4-wide one
  const FORWARD: SharedCase[] = [
    ...SHARED,
    { n: 2, h: 6, w: 5, c: 8, o: 36, k: [3, 3], s: [1, 1], pad: 'same' },
  ];

  it.each(FORWARD)('the own kernel and tf.conv2d match float64: %j', (cs) => {
    const x = random(cs.n * cs.h * cs.w * cs.c);
    const k = random(cs.k[0] * cs.k[1] * cs.c * cs.o);
    const ref = sharedReference(cs, x, k, new Float32Array(ref0Size(cs)));
    const before = tf.memory();
    const xt = tf.tensor4d(x, [cs.n, cs.h, cs.w, cs.c]);
    const kt = tf.tensor4d(k, [cs.k[0], cs.k[1], cs.c, cs.o]);
    const info = conv2dForwardWasm(tf.backend(), xt, kt, { strides: cs.s, pad: cs.pad });
    expect(info).toBeDefined();
    const own = tf.engine().makeTensorFromTensorInfo(info!);
    expect(own.shape).toEqual(ref.dyShape);
    const viaTf = tf.conv2d(xt, kt, cs.s, cs.pad);
    // float32 sums of <= 5 x 3 x 20 products against float64
    expect(relErr(own.dataSync() as Float32Array, ref.y)).toBeLessThan(1e-5);
    expect(relErr(viaTf.dataSync() as Float32Array, ref.y)).toBeLessThan(1e-5);
    setOwnWasmKernels(false); // XNNPACK: the same values up to rounding
    const stock = tf.conv2d(xt, kt, cs.s, cs.pad);
    expect(relErr(stock.dataSync() as Float32Array, ref.y)).toBeLessThan(1e-5);
    tf.dispose([xt, kt, own, viaTf, stock]);
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
  });

  it('explicit padding (top/left differ from bottom/right) as tfjs pads it', () => {
    const [n, h, w, c, o] = [2, 7, 6, 4, 8];
    const x = random(n * h * w * c);
    const k = random(3 * 3 * c * o);
    const pad: [[number, number], [number, number], [number, number], [number, number]] = [
      [0, 0],
      [2, 0],
      [0, 1],
      [0, 0],
    ];
    const xt = tf.tensor4d(x, [n, h, w, c]);
    const kt = tf.tensor4d(k, [3, 3, c, o]);
    const info = conv2dForwardWasm(tf.backend(), xt, kt, { strides: [1, 2], pad });
    expect(info).toBeDefined();
    const own = tf.engine().makeTensorFromTensorInfo(info!);
    // the same conv on the image padded by hand, 'valid', on the stock (XNNPACK) kernel
    const padded = tf.pad(xt, pad);
    setOwnWasmKernels(false);
    const stock = tf.conv2d(padded, kt, [1, 2], 'valid');
    expect(own.shape).toEqual(stock.shape);
    expect(relErr(own.dataSync() as Float32Array, stock.dataSync() as Float32Array)).toBeLessThan(
      1e-5,
    );
    tf.dispose([xt, kt, own, padded, stock]);
  });

  it('an empty output is an empty tensor (XNNPACK corrupted the heap on it); a negative size is TENSOR_SHAPE', () => {
    // explicit padding that leaves no output row or column: tfjs-backend-wasm 4.22's own conv
    // (XNNPACK) wrote past its buffers on these, and a later kernel failed with "memory access
    // out of bounds" (five such convs and a few sums were enough without the guard)
    const none: [[number, number], [number, number], [number, number], [number, number]] = [
      [0, 0],
      [0, 1],
      [1, 0],
      [0, 0],
    ];
    // (the sequence that failed without it; [2, 2, 2] leaves one row and column)
    for (const [n, h, w, c, o, shape] of [
      [1, 1, 1, 4, 4, [1, 0, 0, 4]],
      [1, 1, 1, 4, 4, [1, 0, 0, 4]],
      [2, 2, 2, 4, 8, [2, 1, 1, 8]],
      [1, 1, 5, 8, 4, [1, 0, 4, 4]],
      [1, 1, 5, 8, 4, [1, 0, 4, 4]],
      [0, 5, 5, 4, 4, [0, 5, 5, 4]],
    ] as const) {
      const y = tf.conv2d(
        tf.randomNormal([n, h, w, c]) as tf.Tensor4D,
        tf.randomNormal([3, 3, c, o]) as tf.Tensor4D,
        1,
        n ? none : 'same',
      );
      expect(y.shape).toEqual(shape);
      for (let i = 0; i < 5; i++)
        tf.randomNormal([257 + 13 * i])
          .sum()
          .dataSync();
    }
    // the heap is intact: a conv after them still matches float64
    const cs: SharedCase = { n: 2, h: 6, w: 6, c: 4, o: 8, k: [3, 3], s: [1, 1], pad: 'same' };
    const x = random(2 * 36 * 4);
    const k = random(9 * 32);
    const y = tf.conv2d(tf.tensor4d(x, [2, 6, 6, 4]), tf.tensor4d(k, [3, 3, 4, 8]), 1, 'same');
    const ref = sharedReference(cs, x, k, new Float32Array(ref0Size(cs)));
    expect(relErr(y.dataSync() as Float32Array, ref.y)).toBeLessThan(1e-5);
    // a 'valid' conv with a kernel larger than the image: tfjs made a tensor of shape [1, -1, -1, 4]
    expect(() =>
      tf.conv2d(
        tf.zeros([1, 1, 1, 4]) as tf.Tensor4D,
        tf.zeros([3, 3, 4, 4]) as tf.Tensor4D,
        1,
        'valid',
      ),
    ).toThrow(/TENSOR_SHAPE.*3x3 kernel.*1x1 input.*output would be -1x-1/);
  });

  it('leaves what it does not cover to the stock kernel (same values through tf.conv2d)', () => {
    const t = (shape: number[], dtype: 'float32' | 'int32' = 'float32') =>
      dtype === 'int32' ? tf.zeros(shape, 'int32') : tf.randomNormal(shape);
    const not: [string, tf.Tensor, tf.Tensor, Record<string, unknown>][] = [
      ['3 input channels (a stem)', t([1, 5, 5, 3]), t([3, 3, 3, 8]), {}],
      ['6 output channels', t([1, 5, 5, 4]), t([3, 3, 4, 6]), {}],
      ['dilation 2', t([1, 7, 7, 4]), t([3, 3, 4, 8]), { dilations: 2 }],
      ['NCHW', t([1, 4, 5, 5]), t([3, 3, 4, 8]), { dataFormat: 'NCHW' }],
      ['int32', t([1, 5, 5, 4], 'int32'), t([3, 3, 4, 8], 'int32'), {}],
      ['an empty batch', t([0, 5, 5, 4]), t([3, 3, 4, 8]), {}],
      ['channels that do not match', t([1, 5, 5, 8]), t([3, 3, 4, 8]), {}],
    ];
    for (const [label, x, f, extra] of not) {
      const attrs = { strides: 1, pad: 'same' as const, ...extra };
      expect(conv2dForwardWasm(tf.backend(), x, f, attrs), label).toBeUndefined();
    }
    // through tf.conv2d, the stock kernel gives the float64 values for the covered-by-stock ones
    const cs: SharedCase = { n: 2, h: 6, w: 6, c: 3, o: 6, k: [3, 3], s: [1, 1], pad: 'same' };
    const x = random(2 * 36 * 3);
    const k = random(9 * 3 * 6);
    const ref = sharedReference(cs, x, k, new Float32Array(ref0Size(cs)));
    const y = tf.conv2d(tf.tensor4d(x, [2, 6, 6, 3]), tf.tensor4d(k, [3, 3, 3, 6]), 1, 'same');
    expect(relErr(y.dataSync() as Float32Array, ref.y)).toBeLessThan(1e-5);
    tf.dispose([y, ...not.flatMap(([, a, b]) => [a, b])]);
  });
});

/** The size of `dy` for a case (the forward tests pass zeros: only `y` is read). */
function ref0Size(cs: SharedCase): number {
  const [ho] = tfPads(cs.h, cs.k[0], cs.s[0], cs.pad);
  const [wo] = tfPads(cs.w, cs.k[1], cs.s[1], cs.pad);
  return cs.n * ho * wo * cs.o;
}

describe('products with one-pass gradients on the wasm kernels (matMulWasm)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  // [M, K, N]: a row remainder (M % 4), one column block and a part, K = 1 and the largest K (64);
  // K >= 16 runs the no-pack forward (when on), smaller K tfjs's
  const SHAPES: [number, number, number][] = [
    [13, 9, 20],
    [8, 29, 64],
    [6, 1, 4],
    [37, 64, 36],
    [5, 3, 600],
    [288, 9, 1024],
    [300, 38, 36], // more rows than matMulNoPack's gradient limit, K above NOPACK_MIN_K
  ];

  // the forward on the no-pack kernel (default, any number of rows) and on tfjs's BatchMatMul
  const FORMS = SHAPES.flatMap((s) => [true, false].map((noPack) => [...s, noPack] as const));
  it.each(FORMS)(
    'value and both gradients match float64: M %i, K %i, N %i, no-pack forward %s',
    (M, K, N, noPack) => {
      const was = setAssemblyForwardNoPack(noPack);
      const a = random(M * K);
      const b = random(K * N);
      const dy = random(M * N);
      const y = new Float64Array(M * N);
      const da = new Float64Array(M * K);
      const db = new Float64Array(K * N);
      for (let r = 0; r < M; r++)
        for (let j = 0; j < K; j++)
          for (let c = 0; c < N; c++) {
            y[r * N + c]! += a[r * K + j]! * b[j * N + c]!;
            da[r * K + j]! += dy[r * N + c]! * b[j * N + c]!;
            db[j * N + c]! += a[r * K + j]! * dy[r * N + c]!;
          }
      const before = tf.memory();
      const at = tf.tensor2d(a, [M, K]);
      const bt = tf.tensor2d(b, [K, N]);
      const dyt = tf.tensor2d(dy, [M, N]);
      const f = (x: tf.Tensor, w: tf.Tensor) => {
        const out = matMulWasm(x, w);
        expect(out).toBeDefined();
        return out!;
      };
      const yt = f(at, bt);
      const [ga, gb] = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(f(x, w), dyt)))([
        at,
        bt,
      ]);
      // float32 sums of <= 1024 products against float64
      expect(relErr(yt.dataSync() as Float32Array, y)).toBeLessThan(1e-5);
      expect(relErr(ga!.dataSync() as Float32Array, da)).toBeLessThan(1e-5);
      expect(relErr(gb!.dataSync() as Float32Array, db)).toBeLessThan(1e-5);
      tf.dispose([at, bt, dyt, yt, ga!, gb!]);
      const after = tf.memory();
      expect(after.numTensors).toBe(before.numTensors);
      expect(after.numBytes).toBe(before.numBytes);
      setAssemblyForwardNoPack(was);
    },
  );

  it('runs the forward on the no-pack kernel from K = 16 when on, on BatchMatMul otherwise', async () => {
    const kernelsOf = async (K: number, noPack: boolean) => {
      const was = setAssemblyForwardNoPack(noPack);
      const [a, b] = [tf.randomNormal([5, K]), tf.randomNormal([K, 8])];
      const p = await tf.profile(() => matMulWasm(a, b)!);
      setAssemblyForwardNoPack(was);
      tf.dispose([a, b, p.result as tf.Tensor]);
      return p.kernels.map((k) => k.name).filter((n) => /MatMul/.test(n));
    };
    expect(await kernelsOf(16, true)).toEqual(['KwWasmMatMul']);
    expect(await kernelsOf(15, true)).toEqual(['BatchMatMul']);
    expect(await kernelsOf(29, false)).toEqual(['BatchMatMul']);
  });

  it('takes the products it is for and leaves the rest (undefined: the caller takes tf.matMul)', async () => {
    const t = (shape: number[], dtype: 'float32' | 'int32' = 'float32') =>
      dtype === 'int32' ? tf.zeros(shape, 'int32') : tf.randomNormal(shape);
    const yes = [t([7, 9]), t([9, 16])];
    const y = matMulWasm(yes[0]!, yes[1]!);
    expect(y?.shape).toEqual([7, 16]);
    const not: [string, tf.Tensor, tf.Tensor][] = [
      ['N not a multiple of 4', t([7, 9]), t([9, 6])],
      ['K above the limit', t([4, 65]), t([65, 8])],
      ['rank 3', t([2, 7, 9]), t([9, 16])],
      ['int32', t([7, 9], 'int32'), t([9, 16], 'int32')],
      ['an empty axis', t([0, 9]), t([9, 16])],
      ['inner dims that differ', t([7, 9]), t([8, 16])],
    ];
    for (const [label, a, b] of not) expect(matMulWasm(a, b), label).toBeUndefined();
    setOwnWasmKernels(false);
    expect(matMulWasm(yes[0]!, yes[1]!), 'kernels off').toBeUndefined();
    setOwnWasmKernels(true);
    await useBackend('cpu');
    const [ca, cb] = [t([7, 9]), t([9, 16])];
    expect(matMulWasm(ca, cb), 'cpu backend').toBeUndefined();
    tf.dispose([ca, cb]);
    await useBackend('wasm');
    tf.dispose([...yes, y!, ...not.flatMap(([, a, b]) => [a, b])]);
  });
});

describe("gemm_rows: conv_fwd's tiles without the pixel geometry", () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it.each([
    [7, 13, 36],
    [1, 4, 4],
    [64, 64, 16],
    [33, 9, 20],
  ])('rows %i, K %i, N %i: the sums of a 1x1 conv_fwd, bit for bit', (rows, K, N) => {
    const be = tf.backend() as unknown as Parameters<typeof kernelsFor>[0];
    const k = kernelsFor(be)!;
    const a = tf.randomNormal([rows, K]);
    const b = tf.randomNormal([K, N]);
    const [viaGemm, viaConv] = [
      be.makeOutput([rows, N], 'float32'),
      be.makeOutput([rows, N], 'float32'),
    ];
    const [ao, bo, go, co] = [a, b, viaGemm, viaConv].map((t) => heapOffset(be, t));
    k.gemm_rows(ao, bo, go, rows, K, N, N * 4, N * 4);
    // the same product as a 1x1 conv of `rows` pixels (H = 1, no padding: `zero` unread)
    k.conv_fwd(ao, bo, co, 0, 1, rows, K, 1, rows, N, 1, 1, 1, 1, 0, 0, N * 4, N * 4);
    const g = be.typedArrayFromHeap(viaGemm) as Float32Array;
    const c = be.typedArrayFromHeap(viaConv) as Float32Array;
    expect(Array.from(g)).toEqual(Array.from(c));
    // and both are the product (float32 sums of K products against float64)
    const [av, bv] = [a.dataSync(), b.dataSync()];
    const ref = new Float64Array(rows * N);
    for (let r = 0; r < rows; r++)
      for (let kk = 0; kk < K; kk++)
        for (let n = 0; n < N; n++) ref[r * N + n]! += av[r * K + kk]! * bv[kk * N + n]!;
    expect(relErr(g, ref)).toBeLessThan(1e-5);
    be.disposeData(viaGemm.dataId);
    be.disposeData(viaConv.dataId);
    tf.dispose([a, b]);
  });
});

describe('few-row gradient products on the wasm kernels (matMulNoPack)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  /** Float64 a^T b for a [K, M], b [K, N]. */
  function tn(a: Float32Array, b: Float32Array, k: number, m: number, n: number): Float64Array {
    const out = new Float64Array(m * n);
    for (let kk = 0; kk < k; kk++)
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) out[i * n + j]! += a[kk * m + i]! * b[kk * n + j]!;
    return out;
  }

  // N spanning several 256-column blocks with a partial last one, N = 4, K = 1
  it.each([
    [9, 37, 1000],
    [29, 5, 4],
    [3, 1, 520],
    [256, 16, 12],
  ])('a^T b with M=%i K=%i N=%i matches float64, with the kernels on and off', (m, k, n) => {
    const a = random(k * m);
    const b = random(k * n);
    const ref = tn(a, b, k, m, n);
    for (const on of [true, false]) {
      setOwnWasmKernels(on);
      const y = tf.tidy(() => tf.matMul(tf.tensor2d(a, [k, m]), tf.tensor2d(b, [k, n]), true));
      expect(y.shape).toEqual([m, n]);
      // float32 sums of <= 37 products against float64
      expect(relErr(y.dataSync(), ref)).toBeLessThan(1e-5);
      y.dispose();
    }
  });

  it('takes the products it is for and leaves the rest to the stock kernel', () => {
    const be = tf.backend();
    const t = (shape: number[]) => tf.randomNormal(shape);
    const [a, b] = [t([9, 288]), t([288, 1024])];
    const out = matMulNoPack(be, a, b);
    expect(out?.shape).toEqual([9, 1024]);
    const ref = tf.matMul(a, b).dataSync();
    expect(
      relErr((be as unknown as { readSync(id: object): Float32Array }).readSync(out!.dataId), ref),
    ).toBeLessThan(1e-5);
    (be as unknown as { disposeData(id: object): void }).disposeData(out!.dataId);
    const a3 = t([1, 9, 288]);
    const b3 = t([1, 288, 1024]);
    const out3 = matMulNoPack(be, a3, b3);
    expect(out3?.shape).toEqual([1, 9, 1024]);
    (be as unknown as { disposeData(id: object): void }).disposeData(out3!.dataId);
    const odd = t([288, 1022]);
    expect(matMulNoPack(be, a, odd)).toBeUndefined(); // N not a multiple of 4
    const tall = t([257, 288]);
    expect(matMulNoPack(be, tall, b)).toBeUndefined(); // more rows than it pays for
    const batched = t([2, 9, 288]);
    expect(matMulNoPack(be, batched, b3)).toBeUndefined(); // a real batch
    setOwnWasmKernels(false);
    expect(matMulNoPack(be, a, b)).toBeUndefined();
    tf.dispose([a, b, a3, b3, odd, tall, batched]);
  });
});

describe('batched matrix transposes on the wasm kernels (transposeBlocked)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  it.each([
    [
      [32, 3, 3, 1, 1, 16, 24],
      [0, 1, 2, 3, 4, 6, 5],
    ],
    [
      [12, 8],
      [1, 0],
    ],
    [
      [3, 4, 1, 20],
      [0, 3, 2, 1],
    ],
    [
      [2, 3, 5, 6],
      [0, 1, 3, 2],
    ], // 5 x 6: not multiples of 4, stock kernel
    [
      [8, 3, 3, 2, 4, 16, 8],
      [0, 1, 2, 4, 6, 3, 5],
    ], // KW cells with G_out = 2, G_in = 4 to HWIO
    [
      [2, 3, 5, 6, 4],
      [0, 2, 4, 1, 3],
    ], // the same form, 6 x 4 blocks
    [
      [8, 3, 3, 4, 16, 2, 8],
      [0, 1, 2, 5, 3, 6, 4],
    ], // and back (the gradient's direction)
    [
      [2, 3, 4, 5, 8],
      [0, 3, 1, 4, 2],
    ], // the same form, 4 x 8 blocks with rows 40 floats apart
    [
      [2, 6, 3, 4, 8],
      [0, 4, 1, 3, 2],
    ], // another permutation: stock
    [
      [3, 3, 8, 12],
      [3, 2, 0, 1],
    ], // an ordinary conv's HWIO kernel (gradient) to OIHW: [9, I, O] by [2, 1, 0], 9 rows
    [
      [12, 8, 3, 3],
      [2, 3, 1, 0],
    ], // and OIHW to HWIO: [O, I, 9] by [2, 1, 0], 9 columns
    [
      [5, 7, 6],
      [2, 1, 0],
    ], // no side a multiple of 4
    [
      [3, 2, 2],
      [2, 1, 0],
    ], // fewer than 4 rows: every element on the leftover path
  ])('shape %j by %j equals the stock kernel bit for bit', (shape, perm) => {
    const x = tf.randomNormal(shape);
    const own = tf.transpose(x, perm);
    setOwnWasmKernels(false);
    const stock = tf.transpose(x, perm);
    expect(own.shape).toEqual(stock.shape);
    expect(Array.from(own.dataSync())).toEqual(Array.from(stock.dataSync()));
    tf.dispose([x, own, stock]);
  });

  it('takes batches of matrices with sides that are multiples of 4, the reversal of three axes with any, and nothing else', () => {
    const be = tf.backend();
    const x = tf.randomNormal([6, 8, 12]);
    const out = transposeBlocked(be, x, [0, 2, 1]);
    expect(out?.shape).toEqual([6, 12, 8]);
    (be as unknown as { disposeData(id: object): void }).disposeData(out!.dataId);
    expect(transposeBlocked(be, x, [1, 0, 2])).toBeUndefined(); // moves whole rows, not a 2-D transpose
    const cells = tf.randomNormal([2, 3, 2, 8, 4]);
    const hwio = transposeBlocked(be, cells, [0, 2, 4, 1, 3]);
    expect(hwio?.shape).toEqual([2, 2, 4, 3, 8]);
    (be as unknown as { disposeData(id: object): void }).disposeData(hwio!.dataId);
    const grads = tf.randomNormal([2, 3, 4, 5, 8]);
    const back = transposeBlocked(be, grads, [0, 3, 1, 4, 2]);
    expect(back?.shape).toEqual([2, 5, 3, 8, 4]);
    grads.dispose();
    (be as unknown as { disposeData(id: object): void }).disposeData(back!.dataId);
    cells.dispose();
    const odd = tf.randomNormal([6, 8, 10]);
    expect(transposeBlocked(be, odd, [0, 2, 1])).toBeUndefined();
    // the reversal [A, B, C] -> [C, B, A] takes any sides
    const rev = transposeBlocked(be, odd, [2, 1, 0]);
    expect(rev?.shape).toEqual([10, 8, 6]);
    (be as unknown as { disposeData(id: object): void }).disposeData(rev!.dataId);
    const empty = tf.zeros([0, 8, 4]);
    expect(transposeBlocked(be, empty, [0, 2, 1])).toBeUndefined();
    empty.dispose();
    const ints = tf.zeros([4, 4], 'int32');
    expect(transposeBlocked(be, ints, [1, 0])).toBeUndefined();
    tf.dispose([x, odd, ints]);
  });
});

describe('relaxed SIMD multiply-add (engines that have it: Node >= 22, Chrome >= 114)', () => {
  // Node 20 has relaxed SIMD behind a flag: the check runs in a child process started with it,
  // on the package's built dist/ (the check builds before it tests)
  const flag = '--experimental-wasm-relaxed-simd';
  const hasFlag = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' }).includes(
    flag,
  );
  const child = fileURLToPath(new URL('./fixtures/fma/child.mjs', import.meta.url));
  interface ChildResult {
    enabled?: boolean;
    status: { active: boolean; fma: boolean; reason: string };
    unfusedStatus: { fma: boolean };
    vsUnfused: number[];
    vsStock: number[];
  }
  const check = (r: ChildResult) => {
    expect(r.status).toEqual({ active: true, fma: true, reason: 'on, with fused multiply-add' });
    expect(r.unfusedStatus.fma).toBe(false);
    // per-sample, ordinary and Winograd conv: forward, input gradient, filter gradient; float32
    // rounding of sums of <= 72 products (Winograd: of 16 transformed ones per tile)
    expect(r.vsUnfused).toHaveLength(9);
    for (const e of [...r.vsUnfused, ...r.vsStock]) expect(e).toBeLessThan(1e-5);
    // and the fused kernels really round differently (they ran), at least somewhere
    expect(Math.max(...r.vsUnfused)).toBeGreaterThan(0);
  };
  const runChild = (args: string[], env: Record<string, string> = {}) =>
    JSON.parse(
      execFileSync(process.execPath, [...args, child], {
        encoding: 'utf8',
        env: { ...process.env, ...env },
      })
        .trim()
        .split('\n')
        .pop()!,
    ) as ChildResult;

  it.skipIf(!hasFlag)(
    'the fused kernels agree with the unfused ones and with the stock route',
    () => {
      check(runChild([flag]));
    },
  );

  it.skipIf(!hasFlag)(
    'chooseBackend({ fusedMultiplyAdd: true }) turns them on in a Node started without the flag',
    () => {
      const r = runChild([], { KW_ENABLE_RELAXED_SIMD: '1' });
      expect(r.enabled).toBe(true);
      check(r);
    },
  );
});

describe('the public switches refuse what is not true or false, naming it', () => {
  // a string such as 'off' is truthy: taken as given, it would have switched the path on
  it.each([
    ['setOwnWasmKernels', setOwnWasmKernels],
    ['setWasmFusedMultiplyAdd', setWasmFusedMultiplyAdd],
    ['setWasmWinograd', setWasmWinograd],
  ] as const)('%s', (name, set) => {
    for (const bad of ['off', 0, 1, null, undefined, 'false']) {
      let err: unknown;
      try {
        set(bad as unknown as boolean);
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'ARGUMENT_INVALID'), `${name}(${String(bad)})`).toBe(true);
      expect((err as Error).message).toContain(`${name}: the setting must be true or false`);
    }
    // nothing changed: the setting is still the default (on), and a boolean still works
    expect(set(false)).toBe(true);
    expect(set(true)).toBe(false);
  });

  it('chooseBackend refuses a fusedMultiplyAdd that is not a boolean before it picks anything', async () => {
    const before = tf.getBackend();
    await expect(
      chooseBackend({ force: 'cpu', report: null, fusedMultiplyAdd: 'off' as unknown as boolean }),
    ).rejects.toThrow(/chooseBackend: fusedMultiplyAdd must be true, false or undefined, found/);
    expect(tf.getBackend()).toBe(before);
  });
});

describe('perSampleConv refuses shapes and geometry it cannot run, naming them', () => {
  const geo = {
    groups: 1,
    stride: [1, 1] as [number, number],
    padding: [0, 0] as [number, number],
    dilation: [1, 1] as [number, number],
  };
  it.each(['cpu', 'wasm'] as const)('%s', async (backend) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const cases: [string, number[], number[], Partial<typeof geo>, RegExp][] = [
      [
        'a kernel larger than the image',
        [2, 3, 3, 4],
        [2, 5, 5, 4, 4],
        {},
        /TENSOR_SHAPE.*5x5 kernel .*does not fit the 3x3 image.*output -1x-1/,
      ],
      [
        'negative padding',
        [1, 4, 4, 4],
        [1, 3, 3, 4, 4],
        { padding: [-1, -1] },
        /ARGUMENT_INVALID.*padding must be two integers >= 0/,
      ],
      ['stride 0', [1, 4, 4, 4], [1, 3, 3, 4, 4], { stride: [0, 1] }, /ARGUMENT_INVALID.*stride/],
      [
        'more kernels than samples',
        [2, 4, 4, 4],
        [3, 3, 3, 4, 4],
        {},
        /TENSOR_SHAPE.*3 kernels for a batch of 2/,
      ],
      [
        'an empty batch',
        [0, 4, 4, 4],
        [0, 3, 3, 4, 4],
        { padding: [1, 1] },
        /TENSOR_SHAPE.*the batch is empty/,
      ],
      [
        'kernel channels that do not fit',
        [1, 4, 4, 8],
        [1, 3, 3, 4, 4],
        {},
        /TENSOR_SHAPE.*do not fit 8 input channels/,
      ],
      ['a rank-4 kernel stack', [1, 4, 4, 4], [3, 3, 4, 4], {}, /TENSOR_SHAPE.*kernels must be/],
    ];
    for (const [label, xs, ks, g, re] of cases) {
      const [x, k] = [tf.zeros(xs), tf.zeros(ks)];
      expect(() => perSampleConv(x, k, { ...geo, ...g }), label).toThrow(re);
      tf.dispose([x, k]);
    }
    // a valid call afterwards runs and is right: all-ones 3x3x4 kernels on ones, no padding
    const [ox, ok] = [tf.ones([2, 3, 3, 4]), tf.ones([2, 3, 3, 4, 4])];
    const y = perSampleConv(ox, ok, geo);
    expect(y.shape).toEqual([2, 1, 1, 4]);
    expect([...y.dataSync()]).toEqual(new Array(8).fill(36));
    tf.dispose([ox, ok, y]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
