import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  convPassProducts,
  setOwnWasmKernels,
  setWasmWinograd,
  setWinogradChunkFloats,
  setWinogradPadding,
  setWinogradTiles,
} from '../src/conv-wasm.js';
import { registerTrainingKernels } from '../src/grads.js';
import { perSampleConv } from '../src/layers.js';
import { WINOGRAD_FORMS, winogradStride } from '../src/winograd-kernels.js';
import { convReference, convWithGrads, randomValues, relErr, useBackend } from './helpers.js';

/**
 * 3x3 stride-1 convs on the own wasm kernels run as Winograd F(4x4, 3x3) or F(2x2, 3x3)
 * (conv-wasm.ts `winogradConv` / `winogradFilterGrad`, winograd-kernels.ts): the forward, the
 * input gradient (a forward conv of dy) and the filter gradient, for a kernel shared by the
 * batch and, from 100 input pixels, for a kernel per sample. Each form checked against float64
 * sums straight from the definition, and against the direct kernels (`setWasmWinograd(false)`),
 * on fresh random inputs.
 */

/** One 3x3 stride-1 case: padding as [top, bottom, left, right]. */
interface Case {
  n: number;
  h: number;
  w: number;
  c: number;
  o: number;
  pad: [number, number, number, number];
  perSample: boolean;
}

const random = randomValues;

const outSize = (cs: Case) =>
  [cs.h + cs.pad[0] + cs.pad[1] - 2, cs.w + cs.pad[2] + cs.pad[3] - 2] as const;

/** Float64 y, dL/dx and dL/dk of L = sum(conv(x, k) * dy); k per sample or shared. */
function reference(cs: Case, x: Float32Array, k: Float32Array, dy: Float32Array) {
  const [ho, wo] = outSize(cs);
  const [sh, sw, kh, kw, pt, pl] = [1, 1, 3, 3, cs.pad[0], cs.pad[2]];
  return convReference({ ...cs, kh, kw, sh, sw, pt, pl, ho, wo }, x, k, dy);
}

/** y, dx and dk on the own kernels (tf.conv2d or perSampleConv), and the kernels that ran. */
async function run(cs: Case, x: Float32Array, k: Float32Array, dy: Float32Array) {
  const xt = tf.tensor4d(x, [cs.n, cs.h, cs.w, cs.c]);
  const kt = tf.tensor(k, cs.perSample ? [cs.n, 3, 3, cs.c, cs.o] : [3, 3, cs.c, cs.o]);
  const [pt, pb, pl, pr] = cs.pad;
  const conv = (a: tf.Tensor, b: tf.Tensor) =>
    cs.perSample
      ? perSampleConv(a as tf.Tensor4D, b, {
          groups: 1,
          stride: [1, 1],
          padding: [pt, pl],
          dilation: [1, 1],
        })
      : tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, [
          [0, 0],
          [pt, pb],
          [pl, pr],
          [0, 0],
        ]);
  const r = await convWithGrads(conv, xt, kt, dy);
  tf.dispose([xt, kt]);
  return r;
}

const differs = (a: Float32Array, b: Float32Array) => a.some((v, i) => v !== b[i]);

// odd and even maps (a last tile row or column half outside), padding 'same', 'valid' and
// uneven; 36 output channels (blocks of 16, 16 and 4 in the transformed kernel); a 28x28x32->48
// map at batch 3, whose transformed inputs fill more than one pass (the filter gradient summed
// over passes); per-sample kernels from 100 input pixels
const CASES: Case[] = [
  { n: 2, h: 7, w: 7, c: 8, o: 12, pad: [1, 1, 1, 1], perSample: false },
  { n: 3, h: 6, w: 5, c: 4, o: 36, pad: [1, 1, 1, 1], perSample: false },
  { n: 2, h: 9, w: 8, c: 12, o: 8, pad: [0, 0, 0, 0], perSample: false },
  { n: 2, h: 7, w: 6, c: 4, o: 8, pad: [2, 0, 0, 1], perSample: false },
  { n: 3, h: 28, w: 28, c: 32, o: 48, pad: [1, 1, 1, 1], perSample: false },
  { n: 2, h: 10, w: 11, c: 8, o: 20, pad: [1, 1, 1, 1], perSample: true },
  { n: 3, h: 11, w: 10, c: 4, o: 36, pad: [0, 0, 2, 2], perSample: true },
  { n: 2, h: 14, w: 14, c: 16, o: 12, pad: [1, 1, 1, 1], perSample: true },
];

describe('Winograd F(4x4, 3x3) and F(2x2, 3x3) on the wasm kernels', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
  });
  afterEach(() => {
    setWasmWinograd(true);
    setWinogradTiles('auto');
    setWinogradPadding(true);
    setOwnWasmKernels(true);
  });

  const FORMS = CASES.flatMap((cs) => [2, 4].map((tiles) => ({ ...cs, tiles: tiles as 2 | 4 })));
  it.each(FORMS)('both forms match float64 and the direct kernels: %j', async (c) => {
    const { tiles, ...cs } = c;
    setWinogradTiles(tiles);
    const [ho, wo] = outSize(cs);
    const x = random(cs.n * cs.h * cs.w * cs.c);
    const k = random((cs.perSample ? cs.n : 1) * 9 * cs.c * cs.o);
    const dy = random(cs.n * ho * wo * cs.o);
    const ref = reference(cs, x, k, dy);
    const wino = await run(cs, x, k, dy);
    const own = cs.perSample ? 'KwWasmConv2D' : 'KwWasmConv2DBackpropFilter';
    expect(wino.kernels).toContain(own);
    // float32 sums of <= 28·28·3 products, and the transforms, against float64: 5e-5 of the
    // largest value (F(4x4, 3x3)'s constants, up to 8 and 16/15, round more than F(2x2, 3x3)'s
    // halvings: `bench:winograd` measured up to 2e-5 against the direct kernels at 64-256
    // channels, batch 32; these cases stay near 1e-5 and below)
    expect(relErr(wino.y, ref.y)).toBeLessThan(5e-5);
    expect(relErr(wino.dx, ref.dx)).toBeLessThan(5e-5);
    expect(relErr(wino.dk, ref.dk)).toBeLessThan(5e-5);
    expect(setWasmWinograd(false)).toBe(true);
    const direct = await run(cs, x, k, dy);
    expect(direct.kernels).toContain(own);
    expect(relErr(direct.y, ref.y)).toBeLessThan(1e-5);
    expect(relErr(direct.dk, ref.dk)).toBeLessThan(1e-5);
    // the switch changed the computation: Winograd rounds differently from the direct sums
    expect(differs(wino.y, direct.y)).toBe(true);
    expect(differs(wino.dx, direct.dx)).toBe(true);
    expect(differs(wino.dk, direct.dk)).toBe(true);
  });

  it('takes F(4x4, 3x3) on 28x28, 8x8 and 7x7 maps in every pass of a shared kernel and in the filter gradient of per-sample kernels, F(2x2, 3x3) elsewhere', async () => {
    // which form ran, from the results: the two forms round differently, so the default's
    // results are one of the forced forms', bit for bit
    const forms = async (h: number, w: number, perSample: boolean) => {
      const n = perSample ? 2 : 1;
      const cs: Case = { n, h, w, c: 4, o: 4, pad: [1, 1, 1, 1], perSample };
      const x = random(n * h * w * 4);
      const k = random((perSample ? n : 1) * 9 * 16);
      const dy = random(n * h * w * 4);
      const runs = new Map<string, Awaited<ReturnType<typeof run>>>();
      for (const tiles of ['auto', 2, 4] as const) {
        setWinogradTiles(tiles);
        runs.set(String(tiles), await run(cs, x, k, dy));
      }
      const [auto, two, four] = ['auto', '2', '4'].map((t) => runs.get(t)!);
      const form = (key: 'y' | 'dx' | 'dk') => {
        const [is2, is4] = [!differs(auto![key], two![key]), !differs(auto![key], four![key])];
        expect(is2 !== is4, key).toBe(true);
        return is4 ? 4 : 2;
      };
      return [form('y'), form('dx'), form('dk')];
    };
    expect(await forms(28, 28, false)).toEqual([4, 4, 4]);
    expect(await forms(8, 8, false)).toEqual([4, 4, 4]);
    expect(await forms(7, 7, false)).toEqual([4, 4, 4]);
    expect(await forms(14, 14, false)).toEqual([2, 2, 2]);
    expect(await forms(6, 5, false)).toEqual([2, 2, 2]);
    // per-sample kernels (Winograd from 100 input pixels): F(4x4, 3x3) in the filter gradient only
    expect(await forms(28, 28, true)).toEqual([2, 2, 4]);
    expect(await forms(14, 14, true)).toEqual([2, 2, 2]);
  });

  it('counts the multiplies of the form each pass takes (convPassProducts), by hand', () => {
    const geo = (h: number, c: number, s = 1, k = 3, o = c) => {
      const ho = Math.floor((h + 2 * (k >> 1) - k) / s) + 1;
      return { kh: k, kw: k, sh: s, sw: s, H: h, W: h, C: c, Ho: ho, Wo: ho, O: o };
    };
    const all = (g: ReturnType<typeof geo>, perSample: boolean) =>
      (['forward', 'inputGrad', 'filterGrad'] as const).map((p) =>
        convPassProducts(g, p, perSample),
      );
    // 28x28, shared: F(4x4) in every pass, 7x7 tiles of 36; per sample: F(2x2) (14x14 tiles of
    // 16) in the forward and the input gradient, F(4x4) in the filter gradient
    expect(all(geo(28, 64), false)).toEqual([36 * 49, 36 * 49, 36 * 49]);
    expect(all(geo(28, 64), true)).toEqual([16 * 196, 16 * 196, 36 * 49]);
    // 14x14: F(2x2) everywhere (7x7 tiles of 16)
    expect(all(geo(14, 128), false)).toEqual([16 * 49, 16 * 49, 16 * 49]);
    // 7x7: shared F(4x4) (2x2 tiles of 36, the last row and column half outside); per sample
    // under 100 input pixels: direct, 9 per output pixel
    expect(all(geo(7, 256), false)).toEqual([144, 144, 144]);
    expect(all(geo(7, 256), true)).toEqual([441, 441, 441]);
    // stride 2, 1x1 kernels and channels the own kernels do not take: direct
    expect(all(geo(14, 128, 2), false)).toEqual([9 * 49, 9 * 49, 9 * 49]);
    expect(all(geo(14, 128, 2, 1), false)).toEqual([49, 49, 49]);
    expect(all({ ...geo(28, 1), O: 64 }, false)).toEqual([9 * 784, 9 * 784, 9 * 784]);
    // the input gradient's tiles cover the input map: 'valid' 10x10 -> 8x8
    const valid = { kh: 3, kw: 3, sh: 1, sw: 1, H: 10, W: 10, C: 8, Ho: 8, Wo: 8, O: 8 };
    expect(convPassProducts(valid, 'forward', false)).toBe(36 * 4); // F(4x4): 0.56 of F(2x2)
    expect(convPassProducts(valid, 'inputGrad', false)).toBe(16 * 25); // 10x10: F(2x2) (0.81)
    setWasmWinograd(false);
    expect(all(geo(28, 64), false)).toEqual([9 * 784, 9 * 784, 9 * 784]);
  });

  it('each form is exactly a 3x3 correlation in float64: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A', () => {
    // the matrices themselves, apart from float32 rounding: every output of a tile from fresh
    // random data and kernels, against the 9-term sums, to float64 rounding
    for (const F of WINOGRAD_FORMS) {
      const { a, m } = F;
      const mat = (A: number[][], B: number[][]) =>
        A.map((r) => B[0]!.map((_, j) => r.reduce((acc, v, k) => acc + v * B[k]![j]!, 0)));
      const tr = (A: number[][]) => A[0]!.map((_, j) => A.map((r) => r[j]!));
      for (let trial = 0; trial < 20; trial++) {
        const d = Array.from({ length: a }, () =>
          Array.from({ length: a }, () => Math.random() * 2 - 1),
        );
        const g = Array.from({ length: 3 }, () =>
          Array.from({ length: 3 }, () => Math.random() * 2 - 1),
        );
        const U = mat(mat(F.G, g), tr(F.G));
        const V = mat(mat(F.BT, d), tr(F.BT));
        const M = U.map((r, i) => r.map((u, j) => u * V[i]![j]!));
        const Y = mat(mat(F.AT, M), tr(F.AT));
        for (let i = 0; i < m; i++)
          for (let j = 0; j < m; j++) {
            let want = 0;
            for (let p = 0; p < 3; p++)
              for (let q = 0; q < 3; q++) want += d[i + p]![j + q]! * g[p]![q]!;
            expect(Math.abs(Y[i]![j]! - want), `F(${m}x${m}) output (${i}, ${j})`).toBeLessThan(
              1e-12,
            );
          }
      }
    }
  });

  it.each([false, true])(
    'a scratch budget under one sample takes bands of tile rows (per-sample kernels: %s)',
    async (perSample) => {
      const cs: Case = { n: 2, h: 28, w: 27, c: 12, o: 20, pad: [1, 1, 1, 1], perSample };
      const [ho, wo] = outSize(cs);
      const x = random(cs.n * cs.h * cs.w * cs.c);
      const k = random((perSample ? cs.n : 1) * 9 * cs.c * cs.o);
      const dy = random(cs.n * ho * wo * cs.o);
      const whole = await run(cs, x, k, dy);
      // one tile row of transformed inputs is 16 * 14 * 20 floats (F(2x2, 3x3)) and 36 * 7 * 20
      // (F(4x4, 3x3), the filter gradient): a budget of 6000 floats gives bands of 1 tile row
      const was = setWinogradChunkFloats(6000);
      let bands: Awaited<ReturnType<typeof run>>;
      try {
        bands = await run(cs, x, k, dy);
      } finally {
        setWinogradChunkFloats(was);
      }
      // every output tile comes from the same products: bit for bit
      expect(differs(bands.y, whole.y)).toBe(false);
      expect(differs(bands.dx, whole.dx)).toBe(false);
      // the filter gradient adds the bands' sums one after another: the same to rounding
      const ref = reference(cs, x, k, dy);
      expect(relErr(bands.dk, ref.dk)).toBeLessThan(5e-5);
      expect(relErr(whole.dk, ref.dk)).toBeLessThan(5e-5);
    },
  );

  it('keeps the transformed matrices an odd number of cache lines apart, with the results of unpadded ones bit for bit', async () => {
    // U of 64x64, 128x128, 256x256 kernels; V and M rows of 196 and 49 tiles; small and odd sizes
    for (const floats of [1, 4, 16, 32, 48, 4096, 16384, 65536, 196 * 64, 49 * 256, 7 * 12]) {
      const b = winogradStride(floats);
      expect(b % 64, `${floats}`).toBe(0);
      expect((b / 64) % 2, `${floats}`).toBe(1);
      expect(b, `${floats}`).toBeGreaterThanOrEqual(4 * floats);
      expect(b, `${floats}`).toBeLessThan(4 * floats + 128);
      expect(winogradStride(floats, false)).toBe(4 * floats);
    }
    // both forms, a shared and a per-sample kernel, 36 output channels (blocks of 16, 16 and 4),
    // whole samples and bands of tile rows (a small chunk budget)
    const cases: Case[] = [
      { n: 3, h: 12, w: 12, c: 8, o: 36, pad: [1, 1, 1, 1], perSample: false },
      { n: 2, h: 14, w: 13, c: 12, o: 36, pad: [1, 1, 1, 1], perSample: true },
    ];
    const keys = ['y', 'dx', 'dk'] as const;
    for (const cs of cases)
      for (const tiles of [2, 4] as const)
        for (const chunk of [1 << 17, 512]) {
          setWinogradTiles(tiles);
          const was = setWinogradChunkFloats(chunk);
          const [ho, wo] = outSize(cs);
          const x = random(cs.n * cs.h * cs.w * cs.c);
          const k = random((cs.perSample ? cs.n : 1) * 9 * cs.c * cs.o);
          const dy = random(cs.n * ho * wo * cs.o);
          const padded = await run(cs, x, k, dy);
          expect(setWinogradPadding(false)).toBe(true);
          const unpadded = await run(cs, x, k, dy);
          expect(setWinogradPadding(true)).toBe(false);
          setWinogradChunkFloats(was);
          const ref = reference(cs, x, k, dy);
          for (const key of keys) {
            expect(differs(padded[key], unpadded[key]), `${key} F${tiles} chunk ${chunk}`).toBe(
              false,
            );
            expect(relErr(padded[key], ref[key])).toBeLessThan(5e-5);
          }
        }
    expect(() => setWinogradPadding('no' as unknown as boolean)).toThrow(/true or false/);
  });

  it('per-sample kernels on maps under 100 pixels keep the direct kernels (bit for bit)', async () => {
    const cs: Case = { n: 2, h: 9, w: 9, c: 8, o: 8, pad: [1, 1, 1, 1], perSample: true };
    const x = random(2 * 81 * 8);
    const k = random(2 * 9 * 64);
    const dy = random(2 * 81 * 8);
    const on = await run(cs, x, k, dy);
    setWasmWinograd(false);
    const off = await run(cs, x, k, dy);
    expect(differs(on.y, off.y) || differs(on.dx, off.dx) || differs(on.dk, off.dk)).toBe(false);
    expect(relErr(on.y, reference(cs, x, k, dy).y)).toBeLessThan(1e-5);
  });

  it('leaves no tensor and no heap memory behind', async () => {
    const xt = tf.randomNormal([2, 12, 12, 8]);
    const shared = tf.randomNormal([3, 3, 8, 12]);
    const perSample = tf.randomNormal([2, 3, 3, 8, 12]);
    const geometry = {
      groups: 1,
      stride: [1, 1] as [number, number],
      padding: [1, 1] as [number, number],
      dilation: [1, 1] as [number, number],
    };
    const step = () =>
      tf.tidy(() => [
        ...tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')),
        )([xt, shared]),
        ...tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(perSampleConv(a, b, geometry)))([
          xt,
          perSample,
        ]),
      ]);
    tf.dispose(step()); // first call registers the kernels
    const before = tf.memory();
    for (let i = 0; i < 3; i++) tf.dispose(step());
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
    tf.dispose([xt, shared, perSample]);
  });
});
