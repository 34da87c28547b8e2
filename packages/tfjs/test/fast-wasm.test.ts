// The faster wasm kernels (src/fast-wasm.ts) against the cpu backend on fresh random tensors:
// slices, unpack, split and reverse are copies and must be bit-identical; matMul products
// equal to float32 rounding (relative error < 1e-5: the summation order may differ).
import { Rng } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import {
  FAST_WASM_KERNELS,
  registerFastWasmKernels,
  unregisterFastWasmKernels,
} from '../src/index.js';
import { relErr, useBackend } from './helpers.js';

const rng = new Rng(2024);

/** `f` on the same random inputs on cpu and on wasm (with the fast kernels), outputs as arrays. */
async function both(
  shapes: number[][],
  f: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<[Float32Array[], Float32Array[]]> {
  const data = shapes.map((s) => rng.normalArray(s.reduce((a, b) => a * b, 1)));
  const run = async (backend: 'cpu' | 'wasm') => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const xs = shapes.map((s, i) => tf.tensor(data[i]!, s));
    const out = tf.tidy(() => f(...xs));
    const list = Array.isArray(out) ? out : [out];
    const arrays = list.map((t) => t.dataSync() as Float32Array);
    tf.dispose([...xs, ...list]);
    expect(tf.memory().numTensors).toBe(before); // nothing leaked by the kernels
    return arrays;
  };
  return [await run('cpu'), await run('wasm')];
}

describe('fast wasm kernels', () => {
  it('registers once, in front of the stock kernels, and can be undone', async () => {
    await useBackend('wasm');
    const fast = tf.getKernel('Slice', 'wasm')!.kernelFunc;
    expect(registerFastWasmKernels()).toEqual([]); // useBackend registered them already
    expect(unregisterFastWasmKernels().sort()).toEqual([...FAST_WASM_KERNELS].sort());
    const stockSlice = tf.getKernel('Slice', 'wasm')!.kernelFunc;
    expect(stockSlice).not.toBe(fast);
    expect(registerFastWasmKernels().sort()).toEqual([...FAST_WASM_KERNELS].sort());
    expect(tf.getKernel('Slice', 'wasm')!.kernelFunc).not.toBe(stockSlice);
  });

  const copies: [string, number[][], (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[]][] = [
    ['slice, contiguous (leading axis)', [[6, 3, 3, 5, 7]], (x) => tf.slice(x!, [2], [3])],
    ['slice, contiguous (one row of a 2-D)', [[9, 40]], (x) => tf.slice(x!, [4, 0], [1, 40])],
    ['slice, strided (stock path)', [[6, 5, 4]], (x) => tf.slice(x!, [1, 1, 1], [3, 3, 2])],
    ['slice, empty', [[4, 5]], (x) => tf.slice(x!, [2, 0], [0, 5])],
    ['unstack axis 0', [[5, 3, 3, 4, 6]], (x) => tf.unstack(x!)],
    ['unstack axis 2 (not contiguous)', [[2, 3, 4]], (x) => tf.unstack(x!, 2)],
    ['split axis 0, sizes', [[7, 6, 5]], (x) => tf.split(x!, [2, 4, 1], 0)],
    ['split axis 1 (not contiguous)', [[3, 6, 5]], (x) => tf.split(x!, 3, 1)],
    ['reverse spatial of HWIO', [[3, 3, 8, 16]], (x) => tf.reverse(x!, [0, 1])],
    ['reverse batched spatial', [[4, 3, 5, 6, 7]], (x) => tf.reverse(x!, [1, 2])],
    ['reverse axis 0 of 2-D', [[5, 33]], (x) => tf.reverse(x!, 0)],
    ['reverse last axis (stock path)', [[5, 33]], (x) => tf.reverse(x!, -1)],
  ];
  for (const [label, shapes, f] of copies) {
    it(`${label}: bit-identical to cpu`, async () => {
      const [want, got] = await both(shapes, f);
      expect(got.length).toBe(want.length);
      got.forEach((g, i) => {
        expect(g).toEqual(want[i]);
      });
    });
  }

  const products: [string, number[][], (...xs: tf.Tensor[]) => tf.Tensor][] = [
    [
      'matMul NN',
      [
        [17, 29],
        [29, 40],
      ],
      (a, b) => tf.matMul(a!, b!),
    ],
    [
      'matMul TN',
      [
        [29, 17],
        [29, 40],
      ],
      (a, b) => tf.matMul(a!, b!, true, false),
    ],
    [
      'matMul NT',
      [
        [17, 29],
        [40, 29],
      ],
      (a, b) => tf.matMul(a!, b!, false, true),
    ],
    [
      'matMul TT',
      [
        [29, 17],
        [40, 29],
      ],
      (a, b) => tf.matMul(a!, b!, true, true),
    ],
    [
      'batched matMul TN',
      [
        [3, 29, 17],
        [3, 29, 40],
      ],
      (a, b) => tf.matMul(a!, b!, true, false),
    ],
    [
      'batched matMul NT, broadcast',
      [
        [3, 17, 29],
        [1, 40, 29],
      ],
      (a, b) => tf.matMul(a!, b!, false, true),
    ],
    [
      'fused matMul NT + bias + relu',
      [[17, 29], [40, 29], [40]],
      (a, b, c) =>
        tf.fused.matMul({ a: a!, b: b!, transposeB: true, bias: c!, activation: 'relu' }),
    ],
    [
      'gradients of a matMul (both flags inside)',
      [
        [17, 29],
        [29, 40],
      ],
      (a, b) => {
        const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
          tf.sum(tf.square(tf.matMul(x, y))),
        )([a!, b!]);
        return tf.concat([tf.reshape(ga!, [-1]), tf.reshape(gb!, [-1])]);
      },
    ],
  ];
  for (const [label, shapes, f] of products) {
    it(`${label}: equal to cpu (rel < 1e-5)`, async () => {
      const [[want], [got]] = await both(shapes, f);
      expect(got!.length).toBe(want!.length);
      expect(relErr(got!, want!)).toBeLessThan(1e-5);
    });
  }

  // tfjs-backend-wasm 4.22 caches one XNNPACK operator per b tensor id, packed for the shape
  // of the first product: a reshape of b (same id) got the first product's values back
  it('a product with b reshaped to another [K, N] after one with b: the right values (XNNPACK operator cache)', async () => {
    const wData = rng.normalArray(24);
    const aData = rng.normalArray(8);
    const bData = rng.normalArray(12);
    const bias6 = rng.normalArray(6);
    const bias4 = rng.normalArray(4);
    const run = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      const out = tf.tidy(() => {
        const w = tf.tensor2d(wData, [4, 6]);
        const a = tf.tensor2d(aData, [2, 4]);
        const b = tf.tensor2d(bData, [2, 6]);
        const w64 = tf.reshape(w, [6, 4]);
        const w3 = tf.reshape(w, [3, 2, 4]); // a batch of 3: the stock kernel's own loop
        return [
          tf.matMul(a, w),
          tf.matMul(b, w64),
          tf.matMul(a, w), // the first shape again
          tf.matMul(b, tf.reshape(w, [1, 6, 4])), // leading axis of 1: XNNPACK too
          tf.matMul(tf.ones([3, 1, 2]), w3),
          tf.fused.matMul({ a, b: w, bias: tf.tensor1d(bias6), activation: 'relu' }),
          tf.fused.matMul({ a: b, b: w64, bias: tf.tensor1d(bias4), activation: 'relu' }),
          // a transposed product becomes a plain one on a transposed copy (a new id)
          tf.matMul(b, tf.reshape(w, [4, 6]), false, true),
        ].map((t) => t.dataSync() as Float32Array);
      });
      expect(tf.memory().numTensors).toBe(before);
      return out;
    };
    const want = await run('cpu');
    const got = await run('wasm');
    // a hand-derived check of the aliased product: column j of b @ w64 sums b[0, i]·w[4i + j]
    const hand = [0, 1, 2, 3].map((j) =>
      [0, 1, 2, 3, 4, 5].reduce((s, i) => s + bData[i]! * wData[4 * i + j]!, 0),
    );
    expect(relErr(got[1]!.subarray(0, 4), Float32Array.from(hand))).toBeLessThan(1e-5);
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) {
      expect(got[i]!.length, `output ${i}`).toBe(want[i]!.length);
      expect(relErr(got[i]!, want[i]!), `output ${i}`).toBeLessThan(1e-5);
    }
  });

  const reductions: [string, number[], (x: tf.Tensor) => tf.Tensor][] = [
    ['sum over leading axes (BatchNorm)', [6, 5, 7, 4], (x) => tf.sum(x, [0, 1, 2])],
    ['mean over leading axes, keepDims', [6, 5, 7, 4], (x) => tf.mean(x, [0, 1, 2], true)],
    ['mean over the middle axes (GAP)', [3, 5, 7, 4], (x) => tf.mean(x, [1, 2])],
    ['sum over the last axis', [9, 11], (x) => tf.sum(x, -1)],
    ['sum of everything', [4, 5, 6], (x) => tf.sum(x)],
    ['mean over one middle axis, keepDims', [3, 5, 7, 4], (x) => tf.mean(x, 1, true)],
    [
      'sum over axes 0 and 2 (not contiguous: stock kernel)',
      [3, 5, 7, 4],
      (x) => tf.sum(x, [0, 2]),
    ],
    [
      'sum of int32 (stock kernel)',
      [5, 6],
      (x) => tf.cast(tf.sum(tf.cast(tf.mul(x, 10), 'int32'), 0), 'float32'),
    ],
    [
      'gradient of moments (the BatchNorm backward)',
      [4, 3, 5, 2],
      (x) =>
        tf.grad((t: tf.Tensor) => {
          const m = tf.moments(t, [0, 1, 2]);
          return tf.sum(tf.mul(tf.div(tf.sub(t, m.mean), tf.sqrt(tf.add(m.variance, 1e-5))), t));
        })(x),
    ],
  ];
  for (const [label, shape, f] of reductions) {
    it(`${label}: equal to cpu (rel < 1e-6) with the same shape`, async () => {
      let shapes: number[][] = [];
      const [[want], [got]] = await both([shape], (x) => {
        const y = f(x!);
        shapes.push(y.shape);
        return y;
      });
      expect(shapes[0]).toEqual(shapes[1]);
      shapes = [];
      expect(got!.length).toBe(want!.length);
      expect(relErr(got!, want!)).toBeLessThan(1e-6);
    });
  }

  it("Identity (tf.clone, the tape's saved inputs) and a same-dtype Cast share memory, references right", async () => {
    await useBackend('wasm');
    const be = tf.backend() as unknown as {
      dataIdMap: {
        get(id: object): { memoryOffset: number; refCount: number } | undefined;
        has(id: object): boolean;
      };
    };
    const data = rng.normalArray(3 * 5 * 7);
    const before = tf.memory();
    const x = tf.tensor(data, [3, 5, 7]);
    const c = tf.clone(x);
    // the clone is the same memory (one more reference), not a copy
    expect(be.dataIdMap.get(c.dataId)!.memoryOffset).toBe(be.dataIdMap.get(x.dataId)!.memoryOffset);
    expect(be.dataIdMap.get(x.dataId)!.refCount).toBe(2);
    expect(c.shape).toEqual([3, 5, 7]);
    // either can go first; the other keeps its values
    x.dispose();
    expect(Array.from(c.dataSync())).toEqual(Array.from(Float32Array.from(data)));
    c.dispose();
    expect(be.dataIdMap.has(c.dataId)).toBe(false); // the memory went with the last reference
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numBytes).toBe(before.numBytes);
    // gradients through ops whose inputs the tape keeps (Reshape, Cast) are unchanged
    const w = rng.normalArray(12);
    const grad = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      return tf.tidy(() =>
        tf
          .grad((v: tf.Tensor) => tf.sum(tf.square(tf.reshape(tf.cast(v, 'float32'), [3, 4]))))(
            tf.tensor(w, [12]),
          )
          .dataSync(),
      );
    };
    expect(relErr(await grad('wasm'), await grad('cpu'))).toBeLessThan(1e-6);
    // a Cast to the dtype it has is the same sharing; a real conversion converts
    await useBackend('wasm');
    const f = tf.tensor([1.5, -2, 0]);
    const same = tf.cast(f, 'float32');
    expect(be.dataIdMap.get(same.dataId)!.memoryOffset).toBe(
      be.dataIdMap.get(f.dataId)!.memoryOffset,
    );
    const int = tf.cast(f, 'int32');
    expect(be.dataIdMap.get(int.dataId)!.memoryOffset).not.toBe(
      be.dataIdMap.get(f.dataId)!.memoryOffset,
    );
    expect(Array.from(int.dataSync())).toEqual([1, -2, 0]);
    tf.dispose([f, same, int]);
    expect(tf.memory().numTensors).toBe(before.numTensors);
    // strings take the stock kernel
    const s = tf.tensor(['a', 'b']);
    const sc = tf.clone(s);
    s.dispose();
    expect(sc.arraySync()).toEqual(['a', 'b']);
    sc.dispose();
  });

  it('Sum and Mean of empty tensors give what cpu gives (zeros, or empty), not a wasm crash', async () => {
    const cases: [number[], number[]][] = [
      [
        [0, 3, 3, 4],
        [1, 2],
      ],
      [
        [2, 0, 3, 4],
        [1, 2],
      ],
      [[2, 3, 0, 6], [1]],
      [[0, 5], [0]],
    ];
    const run = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      return cases.map(([shape, axes]) =>
        tf.tidy(() => {
          const x = tf.zeros(shape);
          return [tf.sum(x, axes), tf.mean(x, axes)].map((t) => ({
            shape: t.shape,
            data: Array.from(t.dataSync()),
          }));
        }),
      );
    };
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    expect(wasm).toEqual(cpu);
    // and the cases are the interesting ones: values from an empty input, and an empty result
    expect(cpu[1]![1]).toEqual({ shape: [2, 4], data: new Array(8).fill(0) });
    expect(cpu[0]![0]!.shape).toEqual([0, 4]);
  });

  it('Sum and Mean accumulate in float64: a BatchNorm-sized sum as exact as cpu', async () => {
    // 16x28x28 values per channel, all of one sign: float32 one-by-one adds drift ~1e-6
    const n = 16 * 28 * 28;
    const c = 4;
    const data = Float32Array.from(rng.normalArray(n * c), (v) => 0.5 + 0.1 * v);
    const exact = new Float64Array(c);
    for (let i = 0; i < data.length; i++) exact[i % c]! += data[i]!;
    const errs: Record<string, number> = {};
    for (const fast of [false, true]) {
      await useBackend('wasm');
      if (!fast) unregisterFastWasmKernels();
      const got = tf.tidy(() => tf.sum(tf.tensor2d(data, [n, c]), 0).dataSync());
      registerFastWasmKernels();
      errs[fast ? 'fast' : 'stock'] = relErr(got, exact);
    }
    // float64 sum rounded once to float32: within half an ulp
    expect(errs.fast).toBeLessThan(1e-7);
    // the stock kernel is what this replaces (if tfjs ever sums exactly, this documents it)
    expect(errs.stock).toBeGreaterThan(errs.fast!);
  });
});
