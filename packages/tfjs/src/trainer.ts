/**
 * The training loop as a library feature: a {@link Trainer} trains a model built from a spec
 * with every method's temperature schedule (KW tau 1 -> 0, DY-Conv / ODConv 30 -> 1 per
 * micro-batch as the official code), Adam / AdamW / SGD with momentum and an optional cosine
 * learning-rate schedule, checkpoints that resume bit-identically, BatchNorm re-estimation,
 * evaluation and progress events. `kw train` is a thin driver over it.
 */
import {
  analyzeSpec,
  loadWeights as decodeWeights,
  describeValue,
  saveWeights as encodeWeights,
  initWeights,
  KwError,
  type KwErrorCode,
  type ModelSpec,
  Rng,
  temperatureAt,
  type WeightMap,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { FusedAdamOptimizer } from './adam-wasm.js';
import {
  type CheckpointDir,
  canonicalJson,
  loadOptimizerState,
  saveOptimizerState,
} from './checkpoint.js';
import {
  buildModel,
  exportWeights,
  loadWeights,
  setMethodTemperature,
  setTemperature,
} from './model.js';
import {
  lossAndGradients,
  type ShardResult,
  type ShardVariables,
  ShardWorkers,
  shardBounds,
  shardGradients,
  shardVariables,
  sharedViews,
  wasmKernelSettings,
  weightedSum,
  writeVariables,
} from './shards.js';
import { checkFinite, checkModelInput, decayGroups, recalibrateBatchNorm } from './train.js';

/** Which optimizer, with its settings. */
export interface OptimizerOptions {
  /**
   * `adam` (default), `adamw` (Adam with decoupled weight decay, as PyTorch's AdamW) or `sgd`
   * (with momentum; the official ResNet recipe is SGD 0.1, momentum 0.9, weight decay 1e-4, cosine).
   */
  name?: 'adam' | 'adamw' | 'sgd';
  /** Peak learning rate (default 0.005). */
  lr?: number;
  /**
   * Weight decay of the weights the official recipe decays (not 1-D tensors or biases):
   * decoupled for `adamw` (`w -= lr * wd * w` each step), added to the gradient for `adam`
   * and `sgd` (as PyTorch's `weight_decay`). Default 0 (adamw: 0.01).
   */
  weightDecay?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  /** SGD Nesterov momentum (default false). */
  nesterov?: boolean;
  /** `constant` (default) or `cosine`: lr * (1 + cos(pi * t / T)) / 2 per micro-batch t of T. */
  schedule?: 'constant' | 'cosine';
}

/** The KernelWarehouse temperature schedule: tau 1 -> 0 linearly per micro-batch, then 0. */
export interface KwTemperatureOptions {
  /** Epochs over which tau falls (may be fractional). */
  epochs?: number;
  /** Or: the fraction of the whole run over which tau falls (default 0.5). */
  fraction?: number;
}

/** The DY-Conv / ODConv softmax temperature schedule (official: 30 -> 1 over 10 epochs). */
export interface MethodTemperatureOptions {
  /** Epochs over which it falls (default: 10, as the official code, or the whole run if shorter). */
  epochs?: number;
  /** Start value (default 30). */
  initValue?: number;
  /** End value, also used for inference (default 1). */
  endValue?: number;
}

/** The phase a {@link TrainerEvent} reports. `export` is emitted by drivers that export (kw train). */
export type TrainerPhase = 'train' | 'bn-recalibration' | 'test' | 'export';

/** A progress event. */
export interface TrainerEvent {
  phase: TrainerPhase;
  /** 0-based epoch of the step (train). */
  epoch: number;
  /** Epochs of the run. */
  epochs: number;
  /** Units done in this phase (train: steps of this epoch; bn: passes; test: images). */
  done: number;
  /** Units of this phase (train: steps per epoch). */
  total: number;
  /** Training loss of the step (train). */
  loss?: number;
  /** Accuracy on the step's batch (train). */
  accuracy?: number;
  /** KW tau used for the step; absent for a model without KW layers. */
  tau?: number;
  /** DY-Conv / ODConv temperature used for the step; absent for a model without them. */
  temperature?: number;
  /** Learning rate of the step. */
  lr?: number;
  /** Training images per second since this `fit` call began. */
  imagesPerSecond?: number;
  /** A checkpoint was written after this step. */
  checkpoint?: boolean;
}

/** One point of the training curve (one micro-batch). */
export interface CurvePoint {
  /** Fractional epoch at the end of the step. */
  epoch: number;
  loss: number;
  /** KW tau (only for models with KW layers). */
  tau?: number;
  /** DY-Conv / ODConv temperature (only for models with them). */
  temperature?: number;
  /** Learning rate. */
  lr: number;
}

/** The JSON part of a trainer's state (what a checkpoint stores beside weights and optimizer). */
export interface TrainerState {
  /** The setting the run was started with (a resume must match it). */
  setting: Record<string, unknown>;
  /** The next step to run is `step` of `epoch` (0-based). */
  epoch: number;
  step: number;
  trainSeconds: number;
  imagesTrained: number;
  lastLoss: number;
  curve: CurvePoint[];
}

/** A trainer's full state: JSON plus weights and optimizer state (safetensors bytes). */
export interface TrainerSnapshot {
  state: TrainerState;
  weights: Uint8Array;
  optimizer: Uint8Array;
}

/** Training data: images in the model's input layout (NHWC) and integer labels. */
export interface TrainData {
  /** `[n, h, w, c]`. */
  x: tf.Tensor;
  /** Class ids, one per image. */
  labels: ArrayLike<number>;
}

/** Options of {@link Trainer}. */
export interface TrainerOptions {
  /** The model. */
  spec: ModelSpec;
  /** Seeds the initial weights and the order of the training images (default 0). */
  seed?: number;
  /** Initial weights (default `initWeights(spec, { seed })`). */
  weights?: WeightMap;
  /** Epochs (default 2). */
  epochs?: number;
  /** Images per micro-batch (default 64). */
  batchSize?: number;
  optimizer?: OptimizerOptions;
  kwTemperature?: KwTemperatureOptions;
  methodTemperature?: MethodTemperatureOptions;
  /** Training-mode passes that re-estimate BatchNorm statistics before {@link Trainer.evaluate} (default 32; 0 = none). */
  bnPasses?: number;
  /** Checkpoints: where, how often, and what else the manifest holds. */
  checkpoint?: {
    dir: CheckpointDir;
    /** Also every N steps (0 = only at epoch ends and on a stop; default 50). */
    every?: number;
    /** The caller's JSON state stored beside the trainer's (`state.current`) in the manifest. */
    extra?: () => Record<string, unknown>;
  };
  /** Progress. */
  onEvent?: (e: TrainerEvent) => void;
  /** Asked after every step: true stops training after writing a checkpoint. */
  shouldStop?: () => boolean;
  /** Called after each step, BatchNorm pass and test batch, before anything is kept (e.g. a backend failure check). */
  verify?: (where: string) => void;
  /**
   * Data-parallel steps: cut each micro-batch into this many shards (default 1). Each shard runs
   * forward and backward on its own, its BatchNorm layers normalising with the shard's
   * statistics (PyTorch DDP without SyncBatchNorm); the gradients are averaged by shard size and
   * one update is applied. See `shards.ts`.
   */
  shards?: number;
  /**
   * Run each shard in its own worker thread (Node's worker_threads, one tfjs backend each; wasm
   * and cpu only, which use one thread per process): the same numbers as `shardWorkers: false`,
   * on up to `shards` cores. Default false. Call {@link Trainer.dispose} to stop the workers.
   */
  shardWorkers?: boolean;
}

/** The rows `indices` of `t` (a batch of images or one-hot labels). */
function gatherRows(t: tf.Tensor, indices: Int32Array): tf.Tensor {
  return tf.tidy(() => tf.gather(t, tf.tensor1d(indices, 'int32')));
}

/**
 * The order of the training images in `epoch` of the run with `seed`: a Fisher-Yates shuffle
 * from core's seeded Rng, the same in every process, so a resumed run sees the same batches.
 *
 * @example
 * epochOrder(5, 0, 0); // a permutation of 0..4
 */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  const rng = new Rng((Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca77)) >>> 0);
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** The platform's timers and clock (browsers and Node; the build has no DOM or Node types). */
const env = globalThis as unknown as {
  setImmediate?: (f: () => void) => void;
  setTimeout: (f: () => void, ms: number) => unknown;
  performance: { now(): number };
};
const now = () => env.performance.now();
const yieldToEvents = () =>
  new Promise<void>((r) => {
    if (env.setImmediate) env.setImmediate(r);
    else env.setTimeout(r, 0);
  });
/** A deep copy of JSON state. */
const copy = <T>(x: T): T => JSON.parse(JSON.stringify(x));

function positive(name: string, v: number, int: boolean, min = 0, exclusive = false): number {
  if (
    typeof v !== 'number' ||
    !Number.isFinite(v) ||
    (int && !Number.isInteger(v)) ||
    (exclusive ? v <= min : v < min)
  )
    throw new KwError(
      'ARGUMENT_INVALID',
      `Trainer: ${name} must be ${int ? 'an integer' : 'a number'} ${exclusive ? '>' : '>='} ${min}, found ${v}`,
      { expected: `${exclusive ? '>' : '>='} ${min}`, actual: v },
    );
  return v;
}

/**
 * Throws KwError('TENSOR_SHAPE') unless `labels` holds `n` integer class ids in
 * 0..classes-1 (fit and evaluate). `where` names the caller.
 */
function checkLabels(labels: ArrayLike<number>, n: number, classes: number, where: string): void {
  if (labels === null || typeof labels !== 'object' || typeof labels.length !== 'number')
    throw new KwError(
      'TENSOR_SHAPE',
      `${where}: labels must be an array of ${n} class ids, found ${describeValue(labels)}`,
      { field: 'labels', expected: n, actual: describeValue(labels) },
    );
  if (labels.length !== n)
    throw new KwError('TENSOR_SHAPE', `${where}: ${n} images but ${labels.length} labels`, {
      field: 'labels',
      expected: n,
      actual: labels.length,
    });
  for (let i = 0; i < n; i++) {
    const c = labels[i]!;
    if (!(Number.isInteger(c) && c >= 0 && c < classes))
      throw new KwError(
        'TENSOR_SHAPE',
        `${where}: label ${describeValue(c)} of image ${i} is outside 0..${classes - 1}`,
        { field: `labels[${i}]`, expected: `0..${classes - 1}`, actual: c },
      );
  }
}

/**
 * A trainer state checked field by field (a restored snapshot, or `trainer.state` before a fit):
 * KwError(`code`) naming the field, the expected and the found value. `lastLoss` is NaN (JSON:
 * null) before the first step. Returns a copy with `lastLoss` null read as NaN.
 */
function checkState(
  state: unknown,
  epochs: number,
  code: KwErrorCode,
  where: string,
): TrainerState {
  const fail = (field: string, expected: string, actual: unknown): never => {
    throw new KwError(
      code,
      `${where}.${field} must be ${expected}, found ${describeValue(actual)}`,
      { field, expected, actual },
    );
  };
  if (state === null || typeof state !== 'object' || Array.isArray(state))
    throw new KwError(code, `${where} must be an object, found ${describeValue(state)}`, {
      expected: 'object',
      actual: describeValue(state),
    });
  const st = state as Record<string, unknown>;
  const int = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  const finite = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!(int(st.epoch) && (st.epoch as number) <= epochs))
    fail('epoch', `an integer in 0..${epochs} (the run's epochs)`, st.epoch);
  if (!int(st.step)) fail('step', 'an integer >= 0', st.step);
  if (st.epoch === epochs && st.step !== 0)
    fail('step', `0 once all ${epochs} epochs are done`, st.step);
  if (!(finite(st.trainSeconds) && (st.trainSeconds as number) >= 0))
    fail('trainSeconds', 'a finite number >= 0', st.trainSeconds);
  if (!int(st.imagesTrained)) fail('imagesTrained', 'an integer >= 0', st.imagesTrained);
  const lastLoss = st.lastLoss;
  if (!(lastLoss === null || finite(lastLoss) || Number.isNaN(lastLoss)))
    fail('lastLoss', 'a finite number (or null before the first step)', lastLoss);
  if (!Array.isArray(st.curve)) fail('curve', 'an array of curve points', st.curve);
  (st.curve as unknown[]).forEach((p, i) => {
    if (p === null || typeof p !== 'object' || Array.isArray(p))
      fail(`curve[${i}]`, 'an object { epoch, loss, lr }', p);
    const q = p as Record<string, unknown>;
    for (const k of ['epoch', 'loss', 'lr'])
      if (!finite(q[k])) fail(`curve[${i}].${k}`, 'a finite number', q[k]);
    for (const k of ['tau', 'temperature'])
      if (q[k] !== undefined && !finite(q[k]))
        fail(`curve[${i}].${k}`, 'a finite number or absent', q[k]);
  });
  const out = copy(st) as unknown as TrainerState;
  if (lastLoss === null || Number.isNaN(lastLoss)) out.lastLoss = Number.NaN;
  return out;
}

/**
 * Refuse a spec tfjs cannot train before anything is built: tfjs-core has no convolution
 * gradient for dilation > 1 (its conv2d gradient throws a plain Error, or, with a stride, a
 * missing StridedSlice gradient that does not mention dilation). Inference and ONNX export of
 * such a spec work.
 */
function refuseUntrainable(spec: ModelSpec): void {
  for (const n of analyzeSpec(spec).spec.nodes) {
    if (n.op !== 'conv2d' && n.op !== 'dynamicConv2d') continue;
    if (n.dilation[0] === 1 && n.dilation[1] === 1) continue;
    throw new KwError(
      'BACKEND_UNSUPPORTED',
      `Trainer: node "${n.id}" has dilation [${n.dilation.join(', ')}]; tfjs has no convolution gradient for dilation > 1, so the spec cannot be trained here (inference and ONNX export work)`,
      { node: n.id, expected: '[1, 1]', actual: [...n.dilation] },
    );
  }
}

/**
 * Trains one model built from a spec. `fit` runs (or continues) the loop, `recalibrate`
 * re-estimates BatchNorm statistics, `evaluate` tests; `snapshot` / `restore` and the
 * `checkpoint` option make runs resumable bit-identically (same weights, optimizer state,
 * image order and temperatures).
 *
 * @example
 * const trainer = new Trainer({ spec, epochs: 1, batchSize: 32, optimizer: { name: 'adam', lr: 0.005 } });
 * await trainer.fit({ x: images, labels });
 * trainer.recalibrate(images);
 * const { accuracy } = await trainer.evaluate({ x: testImages, labels: testLabels });
 */
export class Trainer {
  /** The tfjs model (logits out). */
  readonly model: tf.LayersModel;
  readonly spec: ModelSpec;
  readonly seed: number;
  readonly epochs: number;
  readonly batchSize: number;
  /** The optimizer settings with defaults filled in. */
  readonly optimizerOptions: Required<OptimizerOptions>;
  /** The model has KernelWarehouse layers (a tau schedule applies). */
  readonly hasKw: boolean;
  /** The model has DY-Conv or ODConv layers (a softmax temperature schedule applies). */
  readonly hasMethodTemperature: boolean;
  /** Where training stands. */
  state: TrainerState;
  private readonly options: TrainerOptions;
  private readonly optimizer: tf.Optimizer;
  private readonly vars: tf.Variable[];
  private readonly decaySet: Set<string>;
  private readonly kwEpochs: number;
  private readonly method: Required<MethodTemperatureOptions>;
  /** Shards per micro-batch (1: the plain step). */
  readonly shards: number;
  private readonly shardVars: ShardVariables;
  private workers: ShardWorkers | undefined;
  /**
   * The shard workers' exchange memory (SharedArrayBuffer views, made with the workers): the
   * parameters the main thread writes each step, each worker's gradient slots, and the averaged
   * gradients (reused each step).
   */
  private exchange:
    | { params: Float32Array[]; grads: Float32Array[][]; avg: Float32Array[] }
    | undefined;
  private disposed = false;
  /** The state came from {@link restore} (a resume mismatch is then CHECKPOINT_INVALID). */
  private restored = false;

  constructor(options: TrainerOptions) {
    this.options = options;
    const { spec } = options;
    refuseUntrainable(spec);
    this.spec = spec;
    this.seed = positive('seed', options.seed ?? 0, true);
    this.epochs = positive('epochs', options.epochs ?? 2, true, 1);
    this.batchSize = positive('batchSize', options.batchSize ?? 64, true, 1);
    positive('bnPasses', options.bnPasses ?? 32, true);
    this.shards = positive('shards', options.shards ?? 1, true, 1);
    if (this.shards > this.batchSize)
      throw new KwError(
        'ARGUMENT_INVALID',
        `Trainer: ${this.shards} shards of a batch of ${this.batchSize} leave shards empty`,
      );
    if (options.shardWorkers && this.shards < 2)
      throw new KwError('ARGUMENT_INVALID', 'Trainer: shardWorkers needs shards >= 2');
    const o = options.optimizer ?? {};
    const name = o.name ?? 'adam';
    if (name !== 'adam' && name !== 'adamw' && name !== 'sgd')
      throw new KwError(
        'ARGUMENT_INVALID',
        `Trainer: optimizer must be adam, adamw or sgd, found ${String(name)}`,
      );
    const schedule = o.schedule ?? 'constant';
    if (schedule !== 'constant' && schedule !== 'cosine')
      throw new KwError(
        'ARGUMENT_INVALID',
        `Trainer: schedule must be constant or cosine, found ${String(schedule)}`,
      );
    this.optimizerOptions = {
      name,
      lr: positive('lr', o.lr ?? 0.005, false, 0, true),
      weightDecay: positive('weightDecay', o.weightDecay ?? (name === 'adamw' ? 0.01 : 0), false),
      momentum: positive('momentum', o.momentum ?? 0.9, false),
      nesterov: o.nesterov ?? false,
      schedule,
    };
    const kt = options.kwTemperature ?? {};
    if (kt.epochs !== undefined && kt.fraction !== undefined)
      throw new KwError(
        'ARGUMENT_INVALID',
        'Trainer: give kwTemperature.epochs or .fraction, not both',
      );
    this.kwEpochs =
      kt.epochs !== undefined
        ? positive('kwTemperature.epochs', kt.epochs, false)
        : positive('kwTemperature.fraction', kt.fraction ?? 0.5, false) * this.epochs;
    const mt = options.methodTemperature ?? {};
    this.method = {
      epochs: positive('methodTemperature.epochs', mt.epochs ?? Math.min(10, this.epochs), false),
      initValue: positive('methodTemperature.initValue', mt.initValue ?? 30, false, 0, true),
      endValue: positive('methodTemperature.endValue', mt.endValue ?? 1, false, 0, true),
    };
    const kinds = new Set(
      spec.nodes
        .filter((n) => n.op === 'dynamicConv2d' || n.op === 'dynamicLinear')
        .map((n) => (n as { method: { kind: string } }).method.kind),
    );
    this.hasKw = kinds.has('kw');
    this.hasMethodTemperature = kinds.has('dyconv') || kinds.has('odconv');

    this.model = buildModel(spec, options.weights ?? initWeights(spec, { seed: this.seed }));
    const lr = this.optimizerOptions.lr;
    this.optimizer =
      name === 'sgd'
        ? tf.train.momentum(lr, this.optimizerOptions.momentum, this.optimizerOptions.nesterov)
        : new FusedAdamOptimizer(lr);
    // every trainable variable once (a warehouse is shared by several layers)
    this.shardVars = shardVariables(this.model);
    this.vars = this.shardVars.trainable;
    this.decaySet = new Set(
      decayGroups(this.model, spec).decay.map((v) => (v.read() as tf.Variable).name),
    );
    this.state = {
      setting: this.setting(),
      epoch: 0,
      step: 0,
      trainSeconds: 0,
      imagesTrained: 0,
      lastLoss: Number.NaN,
      curve: [],
    };
  }

  /** What a resumed run must share with the run that wrote the checkpoint. */
  private setting(): Record<string, unknown> {
    return JSON.parse(
      JSON.stringify({
        model: this.spec.name,
        seed: this.seed,
        epochs: this.epochs,
        batchSize: this.batchSize,
        optimizer: this.optimizerOptions,
        kwTemperatureEpochs: this.hasKw ? this.kwEpochs : null,
        methodTemperature: this.hasMethodTemperature ? this.method : null,
        // (absent for 1 shard: checkpoints from before shards existed stay resumable)
        shards: this.shards > 1 ? this.shards : undefined,
      }),
    );
  }

  /** The learning rate of global micro-batch `t` of `total`. */
  learningRate(t: number, total: number): number {
    const { lr, schedule } = this.optimizerOptions;
    return schedule === 'cosine' ? (lr * (1 + Math.cos((Math.PI * t) / total))) / 2 : lr;
  }

  /** KW tau for micro-batch `step` of `epoch` (core's `temperatureAt`, 1 -> 0, clamped to [0, 1]). */
  tauAt(epoch: number, step: number, stepsPerEpoch: number): number {
    const t = temperatureAt({ epochs: this.kwEpochs, itersPerEpoch: stepsPerEpoch }, epoch, step);
    return Math.min(1, Math.max(0, t));
  }

  /** DY-Conv / ODConv temperature for micro-batch `step` of `epoch` (official 30 -> 1). */
  methodTemperatureAt(epoch: number, step: number, stepsPerEpoch: number): number {
    return temperatureAt({ ...this.method, itersPerEpoch: stepsPerEpoch }, epoch, step);
  }

  /** Set the inference temperatures: KW tau 0, DY-Conv / ODConv at their end value. */
  setInferenceTemperatures(): void {
    if (this.hasKw) setTemperature(this.model, 0);
    if (this.hasMethodTemperature) setMethodTemperature(this.model, this.method.endValue);
  }

  /** The whole state: JSON, weights and optimizer (safetensors bytes). */
  async snapshot(): Promise<TrainerSnapshot> {
    return {
      state: copy(this.state),
      weights: encodeWeights(this.spec, exportWeights(this.model)),
      optimizer: await saveOptimizerState(this.optimizer),
    };
  }

  /**
   * Continue from a {@link snapshot} (or a checkpoint's `current` state and files). The setting
   * must be the one the snapshot was taken with, and every field of the state must hold (counts
   * integers >= 0, the epoch within the run, the curve finite points): otherwise
   * KwError('CHECKPOINT_INVALID') naming the field, before anything is loaded. `names` name the
   * weights and optimizer sources in errors.
   */
  async restore(
    snap: TrainerSnapshot,
    names: { weights?: string; optimizer?: string } = {},
  ): Promise<void> {
    if (snap === null || typeof snap !== 'object')
      throw new KwError(
        'CHECKPOINT_INVALID',
        `Trainer.restore: the snapshot must be { state, weights, optimizer }, found ${describeValue(snap)}`,
      );
    for (const k of ['weights', 'optimizer'] as const)
      if (!(snap[k] instanceof Uint8Array))
        throw new KwError(
          'CHECKPOINT_INVALID',
          `Trainer.restore: snapshot.${k} must be safetensors bytes (a Uint8Array), found ${describeValue(snap[k])}`,
          { field: k },
        );
    const want = canonicalJson(this.setting());
    const got = canonicalJson(snap.state?.setting ?? null);
    if (want !== got)
      throw new KwError(
        'CHECKPOINT_INVALID',
        `the checkpoint was written by a different training setting: ${got} (this run: ${want})`,
      );
    // every field before anything is loaded (a step of 0.5 or an epoch of -1 used to be taken)
    const state = checkState(snap.state, this.epochs, 'CHECKPOINT_INVALID', 'checkpoint state');
    try {
      loadWeights(this.model, decodeWeights(this.spec, snap.weights));
    } catch (e) {
      throw new KwError(
        'IO_ERROR',
        `checkpoint weights ${names.weights ?? ''} do not fit ${this.spec.name}: ${(e as Error).message}`.replace(
          '  ',
          ' ',
        ),
        { path: names.weights },
      );
    }
    await loadOptimizerState(this.optimizer, snap.optimizer, names.optimizer ?? 'optimizer state');
    this.state = state;
    this.restored = true;
  }

  /**
   * Read `checkpoint.dir` and continue from it when it holds this trainer's state; returns the
   * manifest's state (with the caller's extra fields), or null when the folder has no checkpoint.
   */
  async resume(): Promise<Record<string, unknown> | null> {
    const ck = this.options.checkpoint?.dir;
    if (!ck || !(await ck.exists())) return null;
    const { manifest, blobs } = await ck.read<Record<string, unknown>>();
    const current = manifest.state.current as TrainerState | null | undefined;
    if (current && blobs.weights && blobs.optimizer)
      await this.restore(
        { state: current, weights: blobs.weights, optimizer: blobs.optimizer },
        {
          weights: `${ck.dir}/${manifest.files.weights!.file}`,
          optimizer: `${ck.dir}/${manifest.files.optimizer!.file}`,
        },
      );
    return manifest.state;
  }

  /** Write a checkpoint of the current state now (needs the `checkpoint` option). */
  async saveCheckpoint(): Promise<{ bytes: number; ms: number }> {
    const ck = this.options.checkpoint;
    if (!ck)
      throw new KwError('ARGUMENT_INVALID', 'Trainer: saveCheckpoint needs the checkpoint option');
    const t = now();
    const snap = await this.snapshot();
    const w = await ck.dir.write(
      { ...(ck.extra?.() ?? {}), current: snap.state },
      { weights: snap.weights, optimizer: snap.optimizer },
    );
    return { bytes: w.bytes, ms: now() - t };
  }

  /** Checkpoints written by {@link fit} (time and size of each). */
  readonly checkpoints: { bytes: number; ms: number }[] = [];

  /**
   * Train until the last epoch is done (or `shouldStop` says stop). Continues where the state
   * stands, so after {@link restore} it finishes the interrupted run. Returns whether it stopped
   * early. At the end, the inference temperatures are set (KW tau 0, DY-Conv / ODConv 1).
   * Refused before any step: images not of the model's NHWC input shape (TENSOR_SHAPE), labels
   * not one class id per image (TENSOR_SHAPE), a NaN or infinite pixel (TENSOR_NOT_FINITE), a
   * state whose step does not fit this data's steps per epoch (CHECKPOINT_INVALID after a
   * restore). A step whose loss is not finite stops training before its update (TENSOR_NOT_FINITE).
   */
  async fit(data: TrainData): Promise<{ stopped: boolean }> {
    if (this.disposed) throw new KwError('ARGUMENT_INVALID', 'Trainer: fit after dispose');
    const n = this.checkData(data, 'Trainer.fit');
    if (n < 1) throw new KwError('TENSOR_SHAPE', 'Trainer.fit: no training images');
    const classes = this.model.outputs[0]!.shape.at(-1)!;
    // (the state is public: a step of 0.5 would never reach the end of its epoch)
    checkState(this.state, this.epochs, 'ARGUMENT_INVALID', 'Trainer.state');
    const stepsPerEpoch = Math.ceil(n / this.batchSize);
    const total = stepsPerEpoch * this.epochs;
    const every = this.options.checkpoint?.every ?? 50;
    const s = this.state;
    // each pass of the epoch loop below runs the steps s.step..stepsPerEpoch-1 and ends the
    // epoch with s.step back at 0; a step beyond this data's epoch (a checkpoint of a larger data
    // set) would never end it: refused here, before the first step (checkState above made it an
    // integer >= 0)
    if (s.step >= stepsPerEpoch)
      throw new KwError(
        this.restored ? 'CHECKPOINT_INVALID' : 'ARGUMENT_INVALID',
        `Trainer.fit: the run stands at state.epoch ${s.epoch}, state.step ${s.step} (0-based), but ${n} images in batches of ${this.batchSize} make ${stepsPerEpoch} step${stepsPerEpoch === 1 ? '' : 's'} per epoch: continue with the training data the run was started with (it had at least ${s.step * this.batchSize + 1} images), or start a new run`,
        { field: 'state.step', expected: `0..${stepsPerEpoch - 1}`, actual: s.step },
      );
    const y = tf.tidy(() => tf.oneHot(tf.tensor1d(Array.from(data.labels), 'int32'), classes));
    const t0 = now();
    const seconds0 = s.trainSeconds;
    const images0 = s.imagesTrained;
    let sinceCheckpoint = 0;
    try {
      while (s.epoch < this.epochs) {
        const order = epochOrder(n, this.seed, s.epoch);
        while (s.step < stepsPerEpoch) {
          const { epoch, step } = s;
          const tau = this.hasKw ? this.tauAt(epoch, step, stepsPerEpoch) : undefined;
          if (tau !== undefined) setTemperature(this.model, tau);
          const temperature = this.hasMethodTemperature
            ? this.methodTemperatureAt(epoch, step, stepsPerEpoch)
            : undefined;
          if (temperature !== undefined) setMethodTemperature(this.model, temperature);
          const lr = this.learningRate(epoch * stepsPerEpoch + step, total);
          const from = step * this.batchSize;
          const to = Math.min(n, from + this.batchSize);
          const { loss, accuracy } = await this.step(
            data.x,
            y,
            order.subarray(from, to),
            lr,
            tau,
            temperature,
            `epoch ${epoch} step ${step} (0-based, of ${stepsPerEpoch} steps per epoch)`,
          );
          this.options.verify?.(`epoch ${epoch + 1} step ${step + 1}`);
          s.lastLoss = loss;
          s.imagesTrained += to - from;
          const point: CurvePoint = { epoch: epoch + (step + 1) / stepsPerEpoch, loss, lr };
          if (tau !== undefined) point.tau = tau;
          if (temperature !== undefined) point.temperature = temperature;
          s.curve.push(point);
          s.step++;
          s.trainSeconds = seconds0 + (now() - t0) / 1000;
          const done = s.step;
          const endOfEpoch = done === stepsPerEpoch;
          if (endOfEpoch) {
            s.epoch++;
            s.step = 0;
          }
          // let signal handlers run between steps
          await yieldToEvents();
          const stop = this.options.shouldStop?.() ?? false;
          sinceCheckpoint++;
          const checkpoint =
            this.options.checkpoint !== undefined &&
            (endOfEpoch || stop || (every > 0 && sinceCheckpoint >= every));
          if (checkpoint) {
            this.checkpoints.push(await this.saveCheckpoint());
            sinceCheckpoint = 0;
          }
          this.options.onEvent?.({
            phase: 'train',
            epoch,
            epochs: this.epochs,
            done,
            total: stepsPerEpoch,
            loss,
            accuracy,
            tau,
            temperature,
            lr,
            imagesPerSecond: (s.imagesTrained - images0) / ((now() - t0) / 1000),
            checkpoint,
          });
          if (stop) return { stopped: true };
          if (endOfEpoch) break;
        }
      }
    } finally {
      y.dispose();
    }
    this.setInferenceTemperatures();
    return { stopped: false };
  }

  /** One micro-batch: loss, gradients, weight decay, optimizer update. */
  private async step(
    x: tf.Tensor,
    y: tf.Tensor,
    indices: Int32Array,
    lr: number,
    tau: number | undefined,
    temperature: number | undefined,
    at: string,
  ): Promise<{ loss: number; accuracy: number }> {
    const { name } = this.optimizerOptions;
    if (name === 'sgd') (this.optimizer as tf.SGDOptimizer).setLearningRate(lr);
    else (this.optimizer as unknown as { learningRate: number }).learningRate = lr;
    if (this.shards > 1) return this.shardedStep(x, y, indices, lr, tau, temperature, at);
    const xb = gatherRows(x, indices);
    const yb = gatherRows(y, indices);
    const { value, grads, correct } = lossAndGradients(this.model, this.vars, xb, yb);
    tf.dispose([xb, yb]);
    // the step's one read of the loss, before the update: a NaN loss leaves the weights as they were
    const loss = value.dataSync()[0]!;
    const accuracy = correct.dataSync()[0]! / indices.length;
    tf.dispose([value, correct]);
    if (!Number.isFinite(loss)) {
      tf.dispose(Object.values(grads));
      throw this.lossError(loss, at, lr);
    }
    this.update(grads, lr);
    tf.dispose(Object.values(grads));
    return { loss, accuracy };
  }

  /** The error of a step whose loss is NaN or infinite (nothing of the step was applied). */
  private lossError(loss: number, at: string, lr: number): KwError {
    return new KwError(
      'TENSOR_NOT_FINITE',
      `Trainer.fit: the loss of ${at} is ${loss}; training stopped before the step's optimizer update (the state still names this step; no checkpoint was written). The images are finite, so the training diverged: lower the learning rate (${lr}) or check the initial weights`,
      { field: 'loss', at, actual: loss },
    );
  }

  /** Weight decay and the optimizer update with `grads` (by variable name). */
  private update(grads: tf.NamedTensorMap, lr: number): void {
    const { name, weightDecay } = this.optimizerOptions;
    tf.tidy(() => {
      if (weightDecay > 0 && name === 'adamw') {
        // decoupled, before the update (PyTorch AdamW)
        for (const v of this.vars)
          if (this.decaySet.has(v.name)) v.assign(tf.mul(v, 1 - lr * weightDecay));
      }
      const g: tf.NamedTensorMap = {};
      for (const [k, t] of Object.entries(grads)) {
        g[k] =
          weightDecay > 0 && name !== 'adamw' && this.decaySet.has(k)
            ? tf.add(t, tf.mul(tf.engine().registeredVariables[k]!, weightDecay))
            : t;
      }
      this.optimizer.applyGradients(g);
    });
  }

  /**
   * The data-parallel step ({@link TrainerOptions.shards}): every shard from the same weights
   * and BatchNorm statistics, in this process one after another or in the shard workers at
   * once; gradients and statistics averaged by shard size (float64, in shard order) here.
   */
  private async shardedStep(
    x: tf.Tensor,
    y: tf.Tensor,
    indices: Int32Array,
    lr: number,
    tau: number | undefined,
    temperature: number | undefined,
    at: string,
  ): Promise<{ loss: number; accuracy: number }> {
    const bounds = shardBounds(indices.length, this.shards);
    const gather = (t: tf.Tensor, a: number, b: number) => gatherRows(t, indices.subarray(a, b));
    const stats0 = this.shardVars.stats.map((v) => (v.dataSync() as Float32Array).slice());
    let results: ShardResult[];
    if (this.options.shardWorkers) {
      if (!this.workers) {
        const backend = tf.getBackend();
        if (backend !== 'wasm' && backend !== 'cpu')
          throw new KwError(
            'BACKEND_UNSUPPORTED',
            `Trainer: shard workers run the wasm and cpu backends (one thread per process); ${backend} already uses every core`,
          );
        this.workers = await ShardWorkers.start(this.spec, this.shards, backend);
      }
      const sizes = this.shardVars.trainable.map((v) => v.size);
      this.exchange ??= {
        params: sharedViews(sizes),
        grads: Array.from({ length: this.shards }, () => sharedViews(sizes)),
        avg: sizes.map((n) => new Float32Array(n)),
      };
      // the current values, once, into memory every worker reads (no copy per worker)
      const params = this.exchange.params;
      this.shardVars.trainable.forEach((v, j) => {
        params[j]!.set(v.dataSync() as Float32Array);
      });
      const kernels = wasmKernelSettings();
      results = await Promise.all(
        bounds.map(([a, b], i) => {
          const xs = gather(x, a, b);
          const ys = gather(y, a, b);
          const req = {
            kernels,
            params,
            gradsOut: this.exchange!.grads[i],
            stats: stats0,
            x: xs.dataSync() as Float32Array,
            xShape: xs.shape,
            y: ys.dataSync() as Float32Array,
            yShape: ys.shape,
            tau,
            temperature,
          };
          tf.dispose([xs, ys]);
          return this.workers!.run(i, req);
        }),
      );
    } else {
      results = bounds.map(([a, b], i) => {
        if (i > 0) writeVariables(this.shardVars.stats, stats0);
        const xs = gather(x, a, b);
        const ys = gather(y, a, b);
        const r = shardGradients(this.model, this.shardVars, xs, ys);
        tf.dispose([xs, ys]);
        return r;
      });
    }
    const w = bounds.map(([a, b]) => (b - a) / indices.length);
    const loss = results.reduce((acc, r, i) => acc + w[i]! * r.loss, 0);
    if (!Number.isFinite(loss)) {
      writeVariables(this.shardVars.stats, stats0);
      throw this.lossError(loss, at, lr);
    }
    writeVariables(
      this.shardVars.stats,
      this.shardVars.stats.map((_, j) =>
        weightedSum(
          results.map((r) => r.stats[j]!),
          w,
        ),
      ),
    );
    // a variable no shard's loss reaches gets no gradient (and no update), as in the plain step
    const grads: tf.NamedTensorMap = {};
    this.shardVars.trainable.forEach((v, j) => {
      const gs = results.map((r) => r.grads[j] ?? null);
      if (gs.every((g) => g === null)) return;
      grads[v.name] = tf.tensor(
        weightedSum(
          gs.map((g) => g ?? new Float32Array(v.size)),
          w,
          this.exchange?.avg[j],
        ),
        v.shape,
      );
    });
    this.update(grads, lr);
    tf.dispose(Object.values(grads));
    const correct = results.reduce((acc, r) => acc + r.correct, 0);
    return { loss, accuracy: correct / indices.length };
  }

  /**
   * Checks data where it enters {@link fit} / {@link evaluate}: `x` of the model's input shape
   * (NHWC), one class id in range per image, every pixel finite (one pass over `x` per call).
   * Returns the image count.
   */
  private checkData(data: TrainData, where: string): number {
    if (data === null || typeof data !== 'object')
      throw new KwError(
        'ARGUMENT_INVALID',
        `${where}: data must be { x, labels }, found ${describeValue(data)}`,
      );
    checkModelInput(this.model, data.x, `${where}: data.x`);
    const n = data.x.shape[0]!;
    checkLabels(data.labels, n, this.model.outputs[0]!.shape.at(-1)!, where);
    checkFinite(data.x, `${where}: data.x`);
    return n;
  }

  /**
   * Re-estimate every BatchNorm's running statistics for the final weights (`bnPasses`
   * training-mode passes over `x`, no gradients); emits `bn-recalibration` events.
   */
  recalibrate(x: tf.Tensor): number {
    const passes = this.options.bnPasses ?? 32;
    if (passes === 0) return 0;
    return recalibrateBatchNorm(this.model, x, {
      batchSize: Math.max(2, this.batchSize),
      batches: passes,
      onBatch: (done, total) => {
        this.options.verify?.('BatchNorm re-estimation');
        this.options.onEvent?.({
          phase: 'bn-recalibration',
          epoch: this.epochs - 1,
          epochs: this.epochs,
          done,
          total,
        });
      },
    });
  }

  /**
   * Test accuracy in inference mode, predicting in batches of `batchSize`; emits `test`
   * events. Returns the accuracy and the logits `[n, classes]`. The data is checked as
   * {@link fit} checks it; a non-finite logit is TENSOR_NOT_FINITE.
   */
  async evaluate(data: TrainData): Promise<{ accuracy: number; logits: Float32Array }> {
    const n = this.checkData(data, 'Trainer.evaluate');
    const classes = this.model.outputs[0]!.shape.at(-1)!;
    const logits = new Float32Array(n * classes);
    let correct = 0;
    for (let s = 0; s < n; s += this.batchSize) {
      const m = Math.min(this.batchSize, n - s);
      const out = tf.tidy(() => this.model.predict(tf.slice(data.x, s, m)) as tf.Tensor);
      logits.set(out.dataSync() as Float32Array, s * classes);
      out.dispose();
      this.options.verify?.('test predictions');
      for (let i = s; i < s + m; i++) {
        let best = 0;
        for (let k = 0; k < classes; k++) {
          const v = logits[i * classes + k]!;
          if (!Number.isFinite(v))
            throw new KwError(
              'TENSOR_NOT_FINITE',
              `Trainer.evaluate: logit ${k} of image ${i} is ${v} (finite images, so the model's weights or BatchNorm statistics are not finite)`,
              { index: i, actual: v },
            );
          if (v > logits[i * classes + best]!) best = k;
        }
        if (best === data.labels[i]) correct++;
      }
      this.options.onEvent?.({
        phase: 'test',
        epoch: this.epochs - 1,
        epochs: this.epochs,
        done: s + m,
        total: n,
      });
      await yieldToEvents();
    }
    return { accuracy: n ? correct / n : 0, logits };
  }

  /** The current weights with the spec's names and layouts. */
  exportWeights(): WeightMap {
    return exportWeights(this.model);
  }

  /** Free the model and the optimizer, and stop the shard workers (if any). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.workers?.terminate();
    this.workers = undefined;
    this.exchange = undefined;
    this.optimizer.dispose();
    this.model.dispose();
  }
}
