// Data-parallel training steps (Trainer `shards`, `shardWorkers`): shard workers give the numbers
// of the in-process shards; a step over two identical shards is the plain step over one of them;
// the bounds and the averaging. The workers run the package's built dist/shard-worker.js.
import { isKwError, type WeightMap } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { setWasmBatchNorm } from '../src/bn-wasm.js';
import { setInputGradByForward, setWinogradTiles } from '../src/conv-wasm.js';
import { setWasmGlobalAvgPool } from '../src/gap-wasm.js';
import {
  registerTrainingKernels,
  setOwnWasmKernels,
  setWasmTapMixing,
  setWasmWinograd,
  Trainer,
} from '../src/index.js';
import { ShardWorkers, shardBounds, weightedSum } from '../src/shards.js';
import { patternImages, relErr, useBackend } from './helpers.js';

const data = (n: number, hw: number, classes: number) => patternImages(n, hw, classes, 777);

const small = (opts: Parameters<typeof createModel>[1]) =>
  createModel('resnet8_cifar', { classes: 4, inputShape: [1, 8, 8], width: 0.5, ...opts });

/** Largest relative difference over the tensors of two weight maps (same names), but `skip`. */
function weightsErr(a: WeightMap, b: WeightMap, skip?: RegExp): number {
  let e = 0;
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, t] of a) if (!skip?.test(k)) e = Math.max(e, relErr(t.data, b.get(k)!.data));
  return e;
}

/** Weights after `epochs` of two-shard training on `d` (batch 8), in workers or in process. */
async function twoShards(
  spec: ReturnType<typeof small>,
  d: ReturnType<typeof data>,
  epochs: number,
  shardWorkers: boolean,
): Promise<WeightMap> {
  const t = new Trainer({ spec, epochs, batchSize: 8, shards: 2, shardWorkers, bnPasses: 0 });
  await t.fit(d);
  const w = t.exportWeights();
  t.dispose();
  return w;
}

beforeAll(async () => {
  await useBackend('wasm');
  registerTrainingKernels('wasm');
});

describe('data-parallel shards', () => {
  it('shardBounds covers 0..n in k near-equal parts; weightedSum accumulates in float64', () => {
    for (const [n, k] of [
      [10, 3],
      [64, 2],
      [5, 5],
      [7, 2],
    ] as const) {
      const b = shardBounds(n, k);
      expect(b).toHaveLength(k);
      expect(b[0]![0]).toBe(0);
      expect(b.at(-1)![1]).toBe(n);
      b.forEach(([s, e], i) => {
        if (i > 0) expect(s).toBe(b[i - 1]![1]);
        expect(e - s === Math.floor(n / k) || e - s === Math.ceil(n / k)).toBe(true);
      });
    }
    // 1 + 1e-8 - 1 is lost in float32 accumulation, kept in float64
    const s = weightedSum(
      [Float32Array.of(1), Float32Array.of(1e-8), Float32Array.of(-1)],
      [1, 1, 1],
    );
    expect(s[0]).toBeCloseTo(1e-8, 14);
    // fresh random arrays, 1-4 of them, uneven weights: exactly the float64 sum in order, rounded
    // to float32 once (tolerance 0); rounding each product or partial sum to float32 differs on
    // most of the 4096 elements
    for (let k = 1; k <= 4; k++) {
      const xs = Array.from({ length: k }, () =>
        Float32Array.from(
          { length: 4096 },
          () => (Math.random() - 0.5) * 10 ** (Math.random() * 6 - 3),
        ),
      );
      const w = Array.from({ length: k }, () => Math.random());
      const want = new Float32Array(4096);
      for (let j = 0; j < 4096; j++) {
        let acc = 0;
        for (let i = 0; i < k; i++) acc += w[i]! * xs[i]![j]!;
        want[j] = acc;
      }
      let f32 = 0;
      for (let j = 0; j < 4096; j++) {
        let acc = 0;
        for (let i = 0; i < k; i++) acc = Math.fround(acc + Math.fround(w[i]! * xs[i]![j]!));
        if (acc !== want[j]) f32++;
      }
      expect(Array.from(weightedSum(xs, w)), `${k} arrays`).toEqual(Array.from(want));
      if (k > 1) expect(f32, `${k} arrays: float32 accumulation differs`).toBeGreaterThan(100);
    }
  });

  it('two identical shards give the plain step over one of them (plain ResNet-8, one step)', async () => {
    // two copies of one image: the full-batch BatchNorm statistics and mean gradient are those of
    // one copy, so shards of one copy each must give the unsharded result. One step: the two
    // runs sum the filter gradients in different orders, and over more steps a value at a kink
    // (a ReLU input within rounding of 0) can take the other side in one run and part them by far
    // more than rounding. Seen on this image (seed 777) once the forward took Winograd F(4x4,
    // 3x3): 1.3e-7 after one step, 2.3e-2 after two; 1.2e-6..3.9e-6 after three on seeds 778-781
    const one = data(1, 8, 4);
    const x = tf.concat([one.x, one.x]);
    const labels = Int32Array.of(one.labels[0]!, one.labels[0]!);
    const run = async (shards: number) => {
      // SGD: an update linear in the gradient (Adam's g / sqrt(v) turns rounding-level
      // differences of near-zero gradients into whole steps)
      const t = new Trainer({
        spec: small({}),
        epochs: 1,
        batchSize: 2,
        shards,
        bnPasses: 0,
        optimizer: { name: 'sgd', lr: 0.05 },
      });
      await t.fit({ x, labels });
      const w = t.exportWeights();
      t.dispose();
      return w;
    };
    const plain = await run(1);
    const sharded = await run(2);
    // float32 rounding of the two-image sums: stated tolerance 1e-5 relative. The running
    // variances differ by design: PyTorch's unbiased update divides by (count - 1), and a shard
    // counts half the values (n·h·w of one image instead of two)
    expect(weightsErr(sharded, plain, /running_var$/)).toBeLessThan(1e-5);
    // and training moved the weights (the comparison is not between two untouched models)
    const init = new Trainer({ spec: small({}), epochs: 1, batchSize: 2 });
    expect(weightsErr(plain, init.exportWeights())).toBeGreaterThan(1e-3);
    init.dispose();
    tf.dispose([one.x, x]);
  });

  it('shard workers give the numbers of in-process shards (KW 1x, tau annealed; plain)', async () => {
    const d = data(24, 8, 4);
    for (const budget of [1, undefined]) {
      const run = async (shardWorkers: boolean) => {
        const losses: number[] = [];
        const t = new Trainer({
          spec: small(budget ? { budget } : {}),
          epochs: 2,
          batchSize: 8,
          shards: 2,
          shardWorkers,
          bnPasses: 0,
          kwTemperature: { fraction: 0.5 },
          onEvent: (e) => {
            if (e.phase === 'train') losses.push(e.loss!);
          },
        });
        await t.fit(d);
        const w = t.exportWeights();
        t.dispose();
        return { w, losses };
      };
      const inProcess = await run(false);
      const workers = await run(true);
      // same kernels on the same backend in every thread: expected bit-identical; stated bound
      // 1e-6 relative (float32 rounding, should a thread ever take another code path)
      expect(weightsErr(workers.w, inProcess.w)).toBeLessThan(1e-6);
      expect(relErr(workers.losses, inProcess.losses)).toBeLessThan(1e-6);
      expect(inProcess.losses).toHaveLength(6);
    }
    tf.dispose(d.x);
  });

  it('on the cpu backend too (its tensors keep the arrays they are made from: the shared parameter and gradient memory must not leak into them)', async () => {
    // as the workers start theirs: cpu with the training kernels (chooseBackend)
    await useBackend('cpu');
    registerTrainingKernels('cpu');
    try {
      const d = data(16, 8, 4);
      const inProcess = await twoShards(small({ budget: 1 }), d, 2, false);
      const workers = await twoShards(small({ budget: 1 }), d, 2, true);
      // the cpu kernels in every thread: expected bit-identical; stated bound 1e-6 relative
      expect(weightsErr(workers, inProcess)).toBeLessThan(1e-6);
      tf.dispose(d.x);
    } finally {
      await useBackend('wasm');
    }
  });

  // each switch changes the numbers by rounding: off, the in-process step differs from the
  // default one, and the workers follow the main thread. The tap-mixing case's model takes the
  // mixed form by default in layer3.0.conv2 (32 channels on 2x2 maps, n = 9); the Winograd
  // case's plain model has 3x3 stride-1 convs of 8-32 channels (KW 1x's per-sample kernels on
  // 8x8 maps stay direct)
  it.each([
    ["own-kernel settings (kernels off: the stock route's numbers)", setOwnWasmKernels, 1],
    ["tap-mixing setting (off: the assembled form's numbers)", setWasmTapMixing, 1],
    ["Winograd setting (off: the direct convs' numbers)", setWasmWinograd, undefined],
    [
      'Winograd form (F(4x4, 3x3) in every pass: another rounding)',
      (on: boolean) => setWinogradTiles(on ? 'auto' : 4) === 'auto',
      undefined,
    ],
    ["BatchNorm kernels (off: tfjs's BatchNorm)", setWasmBatchNorm, undefined],
    ["pooling kernels (off: tfjs's mean; KW's attention pools 8x8 maps)", setWasmGlobalAvgPool, 1],
    ['input-gradient form (off: conv_dx1)', setInputGradByForward, undefined],
  ] as const)("workers take the main thread's %s", async (_, setting, budget) => {
    const d = data(16, 8, 4);
    const run = (shardWorkers: boolean) =>
      twoShards(small(budget ? { budget } : {}), d, 1, shardWorkers);
    const byDefault = await run(false);
    setting(false);
    try {
      const inProcess = await run(false);
      const workers = await run(true);
      expect(weightsErr(inProcess, byDefault)).toBeGreaterThan(0);
      expect(weightsErr(workers, inProcess)).toBe(0);
    } finally {
      setting(true);
      tf.dispose(d.x);
    }
  });

  it('a switch flipped between steps reaches the workers at the next step', async () => {
    const d = data(24, 8, 4);
    const run = async (shardWorkers: boolean, flip: boolean) => {
      let steps = 0;
      const t = new Trainer({
        spec: small({}),
        epochs: 1,
        batchSize: 8,
        shards: 2,
        shardWorkers,
        bnPasses: 0,
        onEvent: (e) => {
          // after the first step (the workers have started with the default)
          if (e.phase === 'train' && ++steps === 1 && flip) setWasmBatchNorm(false);
        },
      });
      try {
        await t.fit(d);
        return t.exportWeights();
      } finally {
        setWasmBatchNorm(true);
        t.dispose();
      }
    };
    try {
      const byDefault = await run(false, false);
      const inProcess = await run(false, true);
      const workers = await run(true, true);
      expect(weightsErr(inProcess, byDefault)).toBeGreaterThan(0);
      expect(weightsErr(workers, inProcess)).toBe(0);
    } finally {
      tf.dispose(d.x);
    }
  });

  it('refuses shard settings that cannot work, by name', () => {
    const spec = small({});
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return isKwError(e) ? `${e.code}: ${e.message}` : String(e);
      }
      return 'no error';
    };
    expect(code(() => new Trainer({ spec, batchSize: 4, shards: 5 }))).toMatch(
      /ARGUMENT_INVALID: .*5 shards of a batch of 4/,
    );
    expect(code(() => new Trainer({ spec, shardWorkers: true }))).toMatch(
      /ARGUMENT_INVALID: .*shardWorkers needs shards >= 2/,
    );
    expect(code(() => new Trainer({ spec, shards: 0 }))).toMatch(/ARGUMENT_INVALID/);
  });

  it('a worker that cannot build its replica is BACKEND_FAILED naming the worker and why', async () => {
    const bad = { ...small({}), nodes: [{ op: 'nonsense', id: 'x' }] };
    const err = await ShardWorkers.start(bad as never, 2, 'wasm').then(
      () => 'started',
      (e) => (isKwError(e) ? `${e.code}: ${e.message}` : String(e)),
    );
    expect(err).toMatch(
      /^BACKEND_FAILED: .*shard worker \d did not start: .*unknown op "nonsense"/,
    );
  });
});
