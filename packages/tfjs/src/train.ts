/**
 * Training helpers: the KW temperature schedule (a `tf.Callback` for `model.fit` and a plain
 * function for custom loops) and decoupled weight decay that skips 1-D params and biases.
 */
import {
  describeValue,
  KwError,
  type ModelSpec,
  paramTable,
  type TemperatureSchedule,
  temperatureAt,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { setMethodTemperature, setTemperature, specVariables } from './model.js';

/**
 * Set tau of every KW layer for micro-batch `step` of `epoch` (0-based) by core's
 * `temperatureAt`; returns the value. Call it before each step of a custom loop.
 *
 * @example
 * for (let step = 0; step < steps; step++) { stepTemperature(model, sched, epoch, step); ... }
 */
export function stepTemperature(
  model: tf.LayersModel,
  schedule: TemperatureSchedule,
  epoch: number,
  step: number,
): number {
  const tau = temperatureAt(schedule, epoch, step);
  setTemperature(model, Math.min(1, Math.max(0, tau)));
  return tau;
}

/**
 * A `tf.Callback` for `model.fit` that steps tau every batch (and sets 0 at the end of
 * training, the inference setting). `onTau` receives each value (optional).
 *
 * @example
 * await model.fit(x, y, { epochs: 2, batchSize: 32,
 *   callbacks: [temperatureCallback(model, { epochs: 1, itersPerEpoch: 32 })] });
 */
export function temperatureCallback(
  model: tf.LayersModel,
  schedule: TemperatureSchedule,
  onTau?: (tau: number) => void,
): tf.CustomCallback {
  return perBatchCallback(
    (epoch, batch) => stepTemperature(model, schedule, epoch, batch),
    () => setTemperature(model, 0),
    onTau,
  );
}

/** A callback that calls `step(epoch, batch)` before every batch and `end()` after training. */
function perBatchCallback(
  step: (epoch: number, batch: number) => number,
  end: () => void,
  onValue?: (v: number) => void,
): tf.CustomCallback {
  let epoch = 0;
  return new tf.CustomCallback({
    onEpochBegin: async (e) => {
      epoch = e;
    },
    onBatchBegin: async (batch) => {
      const v = step(epoch, batch);
      onValue?.(v);
    },
    onTrainEnd: async () => {
      end();
    },
  });
}

/**
 * The official DY-Conv / ODConv softmax-temperature schedule (ODConv `main.py`, `utils/misc.py`):
 * 30 -> 1 linearly per micro-batch over the first `epochs` (default 10) epochs, then 1.
 *
 * @example
 * const sched = methodSchedule(itersPerEpoch); // { epochs: 10, initValue: 30, endValue: 1, ... }
 */
export function methodSchedule(itersPerEpoch: number, epochs = 10): TemperatureSchedule {
  return { epochs, itersPerEpoch, initValue: 30, endValue: 1 };
}

/**
 * Set the softmax temperature of every DY-Conv and ODConv layer for micro-batch `step` of
 * `epoch` (0-based) by core's `temperatureAt`; `initValue` / `endValue` default to the official
 * 30 -> 1 ({@link methodSchedule}). Returns the value. KW's tau is separate ({@link stepTemperature}).
 *
 * @example
 * stepMethodTemperature(model, methodSchedule(steps), epoch, step);
 */
export function stepMethodTemperature(
  model: tf.LayersModel,
  schedule: TemperatureSchedule,
  epoch: number,
  step: number,
): number {
  const t = temperatureAt({ initValue: 30, endValue: 1, ...schedule }, epoch, step);
  setMethodTemperature(model, t);
  return t;
}

/**
 * A `tf.Callback` for `model.fit` that steps the DY-Conv / ODConv temperature every batch by
 * `schedule` (30 -> 1 unless it says otherwise) and sets the end value (default 1, the
 * inference setting) when training ends. Use it beside {@link temperatureCallback} for models that mix KW and
 * these methods.
 *
 * @example
 * await model.fit(x, y, { epochs: 20, batchSize: 32,
 *   callbacks: [methodTemperatureCallback(model, methodSchedule(itersPerEpoch))] });
 */
export function methodTemperatureCallback(
  model: tf.LayersModel,
  schedule: TemperatureSchedule,
  onTemperature?: (t: number) => void,
): tf.CustomCallback {
  return perBatchCallback(
    (epoch, batch) => stepMethodTemperature(model, schedule, epoch, batch),
    () => setMethodTemperature(model, schedule.endValue ?? 1),
    onTemperature,
  );
}

/**
 * Split a model's trainable variables by the official recipe: `decay` (weights with more than
 * one dimension) and `noDecay` (1-D params and biases), from core's `ParamDecl.decay`.
 */
export function decayGroups(
  model: tf.LayersModel,
  spec: ModelSpec,
): { decay: tf.LayerVariable[]; noDecay: tf.LayerVariable[] } {
  const table = paramTable(spec);
  const decay: tf.LayerVariable[] = [];
  const noDecay: tf.LayerVariable[] = [];
  for (const [name, v] of specVariables(model)) {
    const d = table.byName.get(name);
    if (d?.role !== 'param') continue;
    (d.decay ? decay : noDecay).push(v);
  }
  return { decay, noDecay };
}

/**
 * Decoupled weight decay (as AdamW / the official SGD recipe's effect): `w -= rate * w` for
 * the `decay` group only. Call after each optimizer step with `rate = lr * weightDecay`.
 */
export function applyWeightDecay(model: tf.LayersModel, spec: ModelSpec, rate: number): void {
  if (!(typeof rate === 'number' && Number.isFinite(rate) && rate >= 0))
    throw new KwError(
      'ARGUMENT_INVALID',
      `applyWeightDecay: rate must be a finite number >= 0 (lr * weightDecay), found ${describeValue(rate)}`,
      { field: 'rate', expected: '>= 0', actual: rate },
    );
  if (rate === 0) return;
  tf.tidy(() => {
    for (const v of decayGroups(model, spec).decay) v.write(tf.mul(v.read(), 1 - rate));
  });
}

/** Options of {@link recalibrateBatchNorm}. */
export interface RecalibrateOptions {
  /** Images per forward pass (default 64). */
  batchSize?: number;
  /** Forward passes (default 32; each moves the running statistics by the layer's momentum). */
  batches?: number;
  /** Called after each pass, e.g. for a progress line. */
  onBatch?: (done: number, total: number) => void;
}

/**
 * Re-estimate every BatchNorm's running statistics (plain BatchNorm layers and the attention
 * BatchNorms of KW, ODConv, ...) for the current weights: forward passes in training mode, no
 * gradients, over batches of `x` taken in order (wrapping around). Returns the passes run.
 *
 * Why: the running statistics are an average over the last ~1/momentum training steps, taken
 * while the weights were still moving. A KW attention's BatchNorm sees features with a small
 * variance, so a small lag in its running mean shifts the attention, and with it every
 * assembled kernel: after a short run (kw train's 2 epochs at a constant learning rate) KW
 * models classified MNIST at 42 % with batch statistics and 25 % with the running ones. Plain
 * BatchNorm layers are re-estimated too, so every method is evaluated the same way.
 *
 * @example
 * recalibrateBatchNorm(model, trainImages, { batchSize: 64, batches: 32 });
 * const logits = model.predict(testImages); // inference mode, fresh running statistics
 */
export function recalibrateBatchNorm(
  model: tf.LayersModel,
  x: tf.Tensor,
  options: RecalibrateOptions = {},
): number {
  const batchSize = options.batchSize ?? 64;
  const batches = options.batches ?? 32;
  if (!(Number.isInteger(batchSize) && batchSize >= 2))
    throw new KwError('ARGUMENT_INVALID', `batchSize must be an integer >= 2, found ${batchSize}`);
  if (!(Number.isInteger(batches) && batches >= 0))
    throw new KwError('ARGUMENT_INVALID', `batches must be an integer >= 0, found ${batches}`);
  checkModelInput(model, x, 'recalibrateBatchNorm: x');
  const n = x.shape[0]!;
  if (n < 2)
    throw new KwError('TENSOR_SHAPE', `recalibrateBatchNorm needs >= 2 images, found ${n}`);
  checkFinite(x, 'recalibrateBatchNorm: x');
  const size = Math.min(batchSize, n);
  for (let b = 0; b < batches; b++) {
    // full batches only: the last one of a pass over x ends at its last image
    const start = Math.min((b * size) % n, n - size);
    tf.tidy(() => {
      model.apply(tf.slice(x, start, size), { training: true });
    });
    options.onBatch?.(b + 1, batches);
  }
  return batches;
}

/** `[a, b, c]` with `n` for a free dimension. */
const shapeText = (shape: readonly (number | null)[]) =>
  `[${shape.map((d) => (d === null ? 'n' : d)).join(', ')}]`;

/**
 * Throws KwError('TENSOR_SHAPE') unless `x` is a tensor of the model's input shape (NHWC
 * `[n, H, W, C]` for image specs, `[n, F]` for feature specs). `where` names the argument.
 * Checked where images enter {@link recalibrateBatchNorm} and the Trainer (a wrong size would
 * otherwise train, as global pooling takes any size; NCHW would fail deep inside tfjs).
 */
export function checkModelInput(model: tf.LayersModel, x: tf.Tensor, where: string): void {
  const expected = model.inputs[0]!.shape;
  if (!(x instanceof tf.Tensor))
    throw new KwError(
      'TENSOR_SHAPE',
      `${where} must be a tf.Tensor ${shapeText(expected)}, found ${describeValue(x)}`,
      { expected: shapeText(expected), actual: describeValue(x) },
    );
  const shape = x.shape;
  if (shape.length === expected.length && expected.every((d, i) => d === null || d === shape[i]))
    return;
  const [, h, w, c] = expected;
  const nchw =
    shape.length === 4 &&
    expected.length === 4 &&
    shape[1] === c &&
    shape[2] === h &&
    shape[3] === w;
  throw new KwError(
    'TENSOR_SHAPE',
    `${where} must be ${shapeText(expected)} (${expected.length === 4 ? 'NHWC, ' : ''}the model's input layout), found ${shapeText(shape)}${nchw ? ': this is NCHW; tf.transpose(x, [0, 2, 3, 1]) gives NHWC' : ''}`,
    { expected: shapeText(expected), actual: shapeText(shape) },
  );
}

/** Elements per chunk of {@link checkFinite} (bounds the temporary boolean tensors). */
const FINITE_CHUNK = 1 << 22;

/**
 * Throws KwError('TENSOR_NOT_FINITE') naming the first image and pixel that is NaN or
 * infinite in `x` (`[n, ...]`). One pass over `x` on the backend and one read of a boolean per
 * call; the data is read back only to name the bad pixel.
 */
export function checkFinite(x: tf.Tensor, where: string): void {
  const n = x.shape[0] ?? 0;
  if (n === 0 || x.size === 0) return;
  const per = x.size / n;
  const rows = Math.max(1, Math.floor(FINITE_CHUNK / per));
  const flags: tf.Tensor[] = [];
  for (let s = 0; s < n; s += rows)
    flags.push(tf.tidy(() => tf.all(tf.isFinite(tf.slice(x, s, Math.min(rows, n - s))))));
  const ok = tf.tidy(() => tf.all(tf.stack(flags)).dataSync()[0]);
  tf.dispose(flags);
  if (ok) return;
  for (let s = 0; s < n; s += rows) {
    const part = tf.slice(x, s, Math.min(rows, n - s));
    const d = part.dataSync();
    part.dispose();
    for (let i = 0; i < d.length; i++) {
      const v = d[i]!;
      if (Number.isFinite(v)) continue;
      const image = s + Math.floor(i / per);
      // the pixel's index inside its image, per axis ([row, column, channel] for NHWC)
      const inner = x.shape.slice(1);
      const at: number[] = [];
      let r = i % per;
      for (let k = inner.length - 1; k >= 0; k--) {
        at[k] = r % inner[k]!;
        r = Math.floor(r / inner[k]!);
      }
      throw new KwError(
        'TENSOR_NOT_FINITE',
        `${where}: image ${image} holds ${v} at ${inner.length === 3 ? 'pixel' : 'index'} [${at.join(', ')}]${inner.length === 3 ? ' (row, column, channel)' : ''}; images must be finite (check the data loading and normalisation)`,
        { index: image, pixel: at, actual: v },
      );
    }
  }
  throw new KwError('TENSOR_NOT_FINITE', `${where}: holds NaN or infinity`);
}
