// Bad input refused where it enters the Trainer and the training helpers: a resume whose saved
// step does not fit the data given (fit spun forever), restored states checked field by field,
// weight-decay rates, non-finite images and losses, evaluate's labels, images of the wrong size
// or layout. Each refusal is a KwError naming the field, the expected and the found value, and
// happens before any step runs or any weight changes.
import { isKwError, type KwErrorCode, SpecBuilder, type WeightMap } from '@kernelwarehouse/core';
import { tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  applyWeightDecay,
  buildModel,
  CheckpointDir,
  exportWeights,
  recalibrateBatchNorm,
  Trainer,
  type TrainerState,
} from '../src/index.js';
import { memFs, useBackend } from './helpers.js';

/** `n` images `[n, hw, hw, 3]` in [-1, 1) (seeded) and labels i % 4. */
function images(n: number, hw = 8, seed = 1) {
  return {
    x: tf.randomUniform([n, hw, hw, 3], -1, 1, 'float32', seed),
    labels: Array.from({ length: n }, (_, i) => i % 4),
  };
}

/** `x` with `value` written at `[image, row, column, channel]`. */
function withPixel(x: tf.Tensor, at: [number, number, number, number], value: number): tf.Tensor {
  const b = x.bufferSync();
  b.set(value, ...at);
  return b.toTensor();
}

async function rejectsKw(p: Promise<unknown>, code: KwErrorCode, message: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isKwError(e, code), `expected KwError ${code}, got ${String(e)}`).toBe(true);
  expect((e as Error).message).toMatch(message);
}

function throwsKw(f: () => unknown, code: KwErrorCode, message: RegExp): void {
  let e: unknown;
  try {
    f();
  } catch (err) {
    e = err;
  }
  expect(isKwError(e, code), `expected KwError ${code}, got ${String(e)}`).toBe(true);
  expect((e as Error).message).toMatch(message);
}

/** The trainable weights (running statistics left out), as plain arrays. */
function params(w: WeightMap): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of w) if (!k.includes('running_')) out[k] = Array.from(t.data);
  return out;
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('Trainer: a resumed step that does not fit the data', () => {
  it('resume on fewer images than the checkpoint was written with is CHECKPOINT_INVALID before any step', async () => {
    const spec = tinyKwSpec();
    const dir = new CheckpointDir('/ck', memFs());
    let steps = 0;
    const a = new Trainer({
      spec,
      epochs: 1,
      batchSize: 4,
      bnPasses: 1,
      checkpoint: { dir },
      shouldStop: () => ++steps === 2,
    });
    const twelve = images(12);
    expect((await a.fit(twelve)).stopped).toBe(true); // at epoch 0, step 2 of 3
    const events: unknown[] = [];
    const b = new Trainer({
      spec,
      epochs: 1,
      batchSize: 4,
      bnPasses: 1,
      checkpoint: { dir },
      onEvent: (e) => events.push(e),
    });
    await b.resume();
    expect([b.state.epoch, b.state.step]).toEqual([0, 2]);
    const four = images(4);
    await rejectsKw(
      b.fit(four),
      'CHECKPOINT_INVALID',
      /state\.epoch 0, state\.step 2 .*4 images in batches of 4 make 1 step per epoch: continue with the training data the run was started with \(it had at least 9 images\)/,
    );
    expect(events).toEqual([]);
    expect(b.state.curve.length).toBe(2);
    // the data it was written with finishes the run
    expect((await b.fit(twelve)).stopped).toBe(false);
    expect(b.state.curve.length).toBe(3);
    tf.dispose([twelve.x, four.x]);
    a.dispose();
    b.dispose();
  });

  it('a stopped run continued on fewer images in the same Trainer is ARGUMENT_INVALID', async () => {
    let steps = 0;
    const t = new Trainer({
      spec: tinyKwSpec(),
      epochs: 1,
      batchSize: 4,
      bnPasses: 1,
      shouldStop: () => ++steps === 2,
    });
    const twelve = images(12);
    const four = images(4);
    await t.fit(twelve);
    await rejectsKw(t.fit(four), 'ARGUMENT_INVALID', /state\.step 2 .*1 step per epoch/);
    tf.dispose([twelve.x, four.x]);
    t.dispose();
  });
});

describe('Trainer.restore: every field of the state is checked', () => {
  // a plain model, 2 epochs
  const plainSpec = () => {
    const b = new SpecBuilder('plain', [3, 8, 8]);
    const x = b.conv2d('c', b.input, { outChannels: 4, kernelSize: 3, padding: 1 });
    b.output(
      b.linear('fc', b.flatten('f', b.globalAvgPool('p', b.relu('r', b.batchNorm('bn', x)))), 4),
    );
    return b.build();
  };
  const opts = () => ({ spec: plainSpec(), epochs: 2, batchSize: 4, bnPasses: 1 });

  it('refuses wrong epochs, steps, counts and curves with CHECKPOINT_INVALID naming the field', async () => {
    const a = new Trainer(opts());
    const snap = await a.snapshot();
    const point = { epoch: 0.5, loss: 1.2, lr: 0.005 };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ epoch: -1 }, /state\.epoch must be an integer in 0\.\.2 .*found -1/],
      [{ epoch: null }, /state\.epoch must be an integer in 0\.\.2 .*found null/],
      [{ epoch: '0' }, /state\.epoch must be an integer in 0\.\.2 .*found "0"/],
      [{ epoch: 3 }, /state\.epoch must be an integer in 0\.\.2 .*found 3/],
      [{ step: 0.5 }, /state\.step must be an integer >= 0, found 0\.5/],
      [{ step: -1 }, /state\.step must be an integer >= 0, found -1/],
      [{ epoch: 2, step: 1 }, /state\.step must be 0 once all 2 epochs are done, found 1/],
      [{ trainSeconds: -1 }, /state\.trainSeconds must be a finite number >= 0, found -1/],
      [{ imagesTrained: 1.5 }, /state\.imagesTrained must be an integer >= 0, found 1\.5/],
      [{ lastLoss: 'x' }, /state\.lastLoss must be a finite number .*found "x"/],
      [{ curve: undefined }, /state\.curve must be an array of curve points, found undefined/],
      [{ curve: [point, { ...point, loss: null }] }, /state\.curve\[1\]\.loss must be a finite/],
      [{ curve: [{ ...point, tau: 'a' }] }, /state\.curve\[0\]\.tau must be a finite number/],
      [{ curve: [7] }, /state\.curve\[0\] must be an object/],
    ];
    for (const [edit, message] of cases) {
      const t = new Trainer(opts());
      const before = params(t.exportWeights());
      const state = { ...JSON.parse(JSON.stringify(snap.state)), ...edit } as TrainerState;
      await rejectsKw(t.restore({ ...snap, state }), 'CHECKPOINT_INVALID', message);
      // nothing was taken
      expect([t.state.epoch, t.state.step, t.state.curve.length]).toEqual([0, 0, 0]);
      expect(params(t.exportWeights())).toEqual(before);
      t.dispose();
    }
    await rejectsKw(
      new Trainer(opts()).restore({ ...snap, weights: undefined as unknown as Uint8Array }),
      'CHECKPOINT_INVALID',
      /snapshot\.weights must be safetensors bytes/,
    );
    a.dispose();
  });

  it('a snapshot through JSON (lastLoss null before the first step) restores and trains', async () => {
    const a = new Trainer(opts());
    const snap = await a.snapshot();
    expect(snap.state.lastLoss).toBe(null as unknown as number);
    const t = new Trainer(opts());
    await t.restore(snap);
    expect(t.state.lastLoss).toBeNaN();
    const d = images(8);
    expect((await t.fit(d)).stopped).toBe(false);
    expect(t.state.curve.length).toBe(4);
    tf.dispose(d.x);
    a.dispose();
    t.dispose();
  });

  it('a state edited in place is checked by fit (ARGUMENT_INVALID, no step run)', async () => {
    const t = new Trainer(opts());
    t.state.epoch = -1; // ran 3 epochs of a 2-epoch run
    const d = images(8);
    await rejectsKw(t.fit(d), 'ARGUMENT_INVALID', /Trainer\.state\.epoch must be an integer/);
    expect(t.state.curve.length).toBe(0);
    tf.dispose(d.x);
    t.dispose();
  });
});

describe('applyWeightDecay: the rate', () => {
  it('is ARGUMENT_INVALID unless a finite number >= 0, and no weight changes', () => {
    const spec = tinyKwSpec();
    const model = buildModel(spec, new Map(new Trainer({ spec }).exportWeights()));
    const before = params(exportWeights(model));
    for (const [rate, found] of [
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [undefined, 'undefined'],
      [-0.1, '-0.1'],
      ['0.1', '"0.1"'],
    ] as const)
      throwsKw(
        () => applyWeightDecay(model, spec, rate as number),
        'ARGUMENT_INVALID',
        new RegExp(`rate must be a finite number >= 0 .*found ${found.replace('.', '\\.')}$`),
      );
    expect(params(exportWeights(model))).toEqual(before);
    applyWeightDecay(model, spec, 0);
    expect(params(exportWeights(model))).toEqual(before);
    model.dispose();
  });
});

describe('non-finite images and losses', () => {
  it('fit, evaluate and BatchNorm re-estimation refuse a NaN or infinite pixel by image and pixel', async () => {
    const t = new Trainer({ spec: tinyKwSpec(), epochs: 1, batchSize: 4, bnPasses: 1 });
    const before = params(t.exportWeights());
    const d = images(8);
    for (const v of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const x = withPixel(d.x, [3, 1, 2, 0], v);
      const where = new RegExp(
        `image 3 holds ${v} at pixel \\[1, 2, 0\\] \\(row, column, channel\\)`,
      );
      await rejectsKw(t.fit({ x, labels: d.labels }), 'TENSOR_NOT_FINITE', where);
      await rejectsKw(t.evaluate({ x, labels: d.labels }), 'TENSOR_NOT_FINITE', where);
      throwsKw(() => t.recalibrate(x), 'TENSOR_NOT_FINITE', where);
      throwsKw(() => recalibrateBatchNorm(t.model, x), 'TENSOR_NOT_FINITE', where);
      x.dispose();
    }
    expect(t.state.curve.length).toBe(0);
    expect(params(t.exportWeights())).toEqual(before);
    tf.dispose(d.x);
    t.dispose();
  });

  it('a step whose loss is not finite stops fit before its update, naming the step', async () => {
    // finite images so large that the first conv overflows: the loss is NaN
    for (const shards of [1, 2]) {
      const t = new Trainer({ spec: tinyKwSpec(), epochs: 1, batchSize: 4, bnPasses: 1, shards });
      const before = params(t.exportWeights());
      const x = tf.fill([8, 8, 8, 3], 3e38);
      await rejectsKw(
        t.fit({ x, labels: images(8).labels }),
        'TENSOR_NOT_FINITE',
        /the loss of epoch 0 step 0 \(0-based, of 2 steps per epoch\) is NaN; training stopped before the step's optimizer update/,
      );
      expect([t.state.step, t.state.curve.length]).toEqual([0, 0]);
      expect(params(t.exportWeights())).toEqual(before);
      x.dispose();
      t.dispose();
    }
  });

  it('evaluate refuses non-finite logits instead of counting them as class 0', async () => {
    const t = new Trainer({ spec: tinyKwSpec(), epochs: 1, batchSize: 4, bnPasses: 1 });
    const x = tf.fill([4, 8, 8, 3], 3e38);
    await rejectsKw(
      t.evaluate({ x, labels: [0, 0, 0, 0] }),
      'TENSOR_NOT_FINITE',
      /Trainer\.evaluate: logit \d of image 0 is (NaN|-?Infinity)/,
    );
    x.dispose();
    t.dispose();
  });
});

describe('evaluate checks its labels as fit does', () => {
  it('count, range, sign and integrality are TENSOR_SHAPE', async () => {
    const t = new Trainer({ spec: tinyKwSpec(), epochs: 1, batchSize: 4, bnPasses: 1 });
    const { x } = images(6);
    const cases: [unknown, RegExp][] = [
      [[], /6 images but 0 labels/],
      [[0, 1], /6 images but 2 labels/],
      [new Array(100).fill(0), /6 images but 100 labels/],
      [[9, 0, 0, 0, 0, 0], /label 9 of image 0 is outside 0\.\.3/],
      [[0, -1, 0, 0, 0, 0], /label -1 of image 1 is outside 0\.\.3/],
      [[0, 0, 0.5, 0, 0, 0], /label 0\.5 of image 2 is outside 0\.\.3/],
      [null, /labels must be an array of 6 class ids, found null/],
    ];
    for (const [labels, message] of cases) {
      const data = { x, labels: labels as number[] };
      await rejectsKw(
        t.evaluate(data),
        'TENSOR_SHAPE',
        new RegExp(`Trainer\\.evaluate: ${message.source}`),
      );
      await rejectsKw(t.fit(data), 'TENSOR_SHAPE', new RegExp(`Trainer\\.fit: ${message.source}`));
    }
    x.dispose();
    t.dispose();
  });
});

describe('images of the wrong size or layout', () => {
  it('fit, evaluate and re-estimation refuse them with TENSOR_SHAPE naming the NHWC shape', async () => {
    const t = new Trainer({ spec: tinyKwSpec(), epochs: 1, batchSize: 4, bnPasses: 1 });
    const big = images(6, 16);
    const msg =
      /must be \[n, 8, 8, 3\] \(NHWC, the model's input layout\), found \[6, 16, 16, 3\]$/;
    await rejectsKw(t.fit(big), 'TENSOR_SHAPE', msg);
    await rejectsKw(t.evaluate(big), 'TENSOR_SHAPE', msg);
    throwsKw(() => t.recalibrate(big.x), 'TENSOR_SHAPE', msg);
    throwsKw(() => recalibrateBatchNorm(t.model, big.x, { batches: 2 }), 'TENSOR_SHAPE', msg);
    const nchw = tf.zeros([6, 3, 8, 8]);
    await rejectsKw(
      t.fit({ x: nchw, labels: big.labels }),
      'TENSOR_SHAPE',
      /found \[6, 3, 8, 8\]: this is NCHW; tf\.transpose\(x, \[0, 2, 3, 1\]\) gives NHWC/,
    );
    const flat = tf.zeros([6, 192]);
    await rejectsKw(t.fit({ x: flat, labels: big.labels }), 'TENSOR_SHAPE', /found \[6, 192\]/);
    expect(t.state.curve.length).toBe(0);
    tf.dispose([big.x, nchw, flat]);
    t.dispose();
  });
});

describe('specs tfjs cannot train', () => {
  // tfjs-core has no conv gradient for dilation > 1: fit threw a plain Error (or, with a stride,
  // "gradient function not found for StridedSlice") after building everything
  it.each([
    ['conv2d', 1],
    ['conv2d', 2],
    ['dynamicConv2d', 1],
  ] as const)(
    'a %s with dilation 2 (stride %i) is BACKEND_UNSUPPORTED naming the node',
    (op, s) => {
      const b = new SpecBuilder('dil', [4, 8, 8]);
      const conv = { outChannels: 4, kernelSize: 3, dilation: 2, padding: 2, stride: s };
      if (op === 'dynamicConv2d') b.warehouse({ id: 'w', budget: 1 });
      const x =
        op === 'conv2d'
          ? b.conv2d('c', b.input, conv)
          : b.dynamicConv2d('c', b.input, conv, { kind: 'kw', warehouse: 'w' });
      b.output(b.linear('fc', b.flatten('f', b.globalAvgPool('p', x)), 2));
      const spec = b.build();
      let err: unknown;
      try {
        new Trainer({ spec, epochs: 1, batchSize: 4, bnPasses: 0 });
      } catch (e) {
        err = e;
      }
      expect(isKwError(err) && err.code).toBe('BACKEND_UNSUPPORTED');
      expect(String(err)).toMatch(/node "c" has dilation \[2, 2\].*dilation > 1/);
    },
  );
});
