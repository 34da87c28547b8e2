import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  countParams,
  formatBudget,
  initWeights,
  KwError,
  loadWeights,
  type ModelSpec,
  parseBudget,
  Rng,
  saveWeights,
} from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import {
  buildModel,
  chooseBackend,
  exportWeights,
  loadWeights as loadModelWeights,
  recalibrateBatchNorm,
  setTemperature,
  stepTemperature,
  watchWasmFailures,
} from '@kernelwarehouse/tfjs';
import { createModel, getModel, type MethodOption } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import {
  hasCheckpoint,
  loadOptimizerState,
  readCheckpoint,
  saveOptimizerState,
  writeCheckpoint,
} from '../checkpoint.js';
import { checkDataset, datasetDir, type ImageSet, loadIdxFolder } from '../data.js';
import { makeDir, writeFileAtomic } from '../fsio.js';
import { type Io, table, UsageError } from '../io.js';
import { lineChart } from '../svg.js';
import { parseMethod } from './plan.js';

/** One trained variant's results (one method, one seed). */
export interface TrainResult {
  /** Canonical method: `plain`, `kw:1x`, `kw:1/2x`, `odconv:4`, ... */
  method: string;
  label: string;
  budget: number | null;
  seed: number;
  params: number;
  testAccuracy: number;
  trainSeconds: number;
  imagesPerSecond: number;
  finalLoss: number;
  onnxAgreement: number;
  onnxMaxRelError: number;
  /** Training loss and tau per step (x = fractional epoch). */
  curve: { epoch: number; loss: number; tau: number }[];
}

/** The options a run is started with; a resumed run keeps them. */
export interface RunOptions {
  model: string;
  dataset: string;
  dataDir: string | null;
  methods: string[];
  width: number | null;
  epochs: number;
  trainSize: number;
  testSize: number;
  batch: number;
  lr: number;
  /** null: half the epochs. */
  tempEpochs: number | null;
  backend: 'wasm' | 'cpu';
  seed: number;
  seeds: number;
  /**
   * Training-mode forward passes (batches of training images, no gradients) that re-estimate
   * every BatchNorm's running statistics before the test set is evaluated; 0 = none.
   */
  bnPasses: number;
}

/** Where an unfinished variant stands in a checkpoint. */
interface JobState {
  method: string;
  seed: number;
  /** The next step to run is `step` of `epoch` (0-based). */
  epoch: number;
  step: number;
  trainSeconds: number;
  imagesTrained: number;
  lastLoss: number;
  curve: TrainResult['curve'];
}

/** The JSON state of a `kw train` checkpoint. */
interface TrainState {
  options: RunOptions;
  argv: string[];
  finished: TrainResult[];
  current: JobState | null;
}

const DEFAULTS: RunOptions = {
  model: 'resnet8_cifar',
  dataset: 'mnist',
  dataDir: null,
  methods: ['plain', 'kw:1x', 'kw:1/2x'],
  width: null,
  epochs: 2,
  trainSize: 2000,
  testSize: 500,
  batch: 64,
  lr: 0.005,
  tempEpochs: null,
  backend: 'wasm',
  seed: 0,
  seeds: 1,
  bnPasses: 32,
};

/**
 * Named longer runs. `paper-direction`: plain vs KW 1x vs KW 1/2x on a ResNet-8 four times as
 * wide (width 4: KW 1/2x has 0.78x the plain parameters at 28x28x1; at width 3 or less KW adds
 * parameters), 3 seeds, mean ± std of test accuracy; 2000 images for 2 epochs, tau 1 -> 0 over
 * the first 20 % of training (0.4 epochs: the official ResNet recipe anneals over 20 of 100
 * epochs). Batch 32: at batch 64 the width-4 KW layers' per-sample kernels brought the wasm heap
 * to its 4 GB limit and XNNPACK failed to create convolutions. About an hour on 2 CPU cores
 * (wasm; see docs/training.md for the measured time).
 */
export const PRESETS: Record<string, Partial<RunOptions>> = {
  'paper-direction': {
    model: 'resnet8_cifar',
    width: 4,
    methods: ['plain', 'kw:1x', 'kw:1/2x'],
    trainSize: 2000,
    testSize: 1000,
    epochs: 2,
    batch: 32,
    lr: 0.005,
    tempEpochs: 0.4,
    seeds: 3,
  },
};

/** Flag name of each option (for messages). */
const FLAG: Record<keyof RunOptions, string> = {
  model: '--model',
  dataset: '--dataset',
  dataDir: '--data-dir',
  methods: '--methods',
  width: '--width',
  epochs: '--epochs',
  trainSize: '--train-size',
  testSize: '--test-size',
  batch: '--batch',
  lr: '--lr',
  tempEpochs: '--temp-epochs',
  backend: '--backend',
  seed: '--seed',
  seeds: '--seeds',
  bnPasses: '--bn-passes',
};

/** A parsed `--methods` entry. */
interface MethodChoice {
  key: string;
  label: string;
  budget: number | null;
  method?: MethodOption;
}

/** `plain`, `kw:B` (a KernelWarehouse budget: 1x, 1/2x, 0.25, ...) or a peer method of `kw plan --method`. */
function parseMethodChoice(text: string): MethodChoice {
  const t = text.trim().toLowerCase();
  if (t === 'plain') return { key: 'plain', label: 'plain', budget: null };
  if (t.startsWith('kw:') || t === 'kw') {
    let b: number;
    try {
      b = parseBudget(t === 'kw' ? '1x' : t.slice(3));
    } catch {
      throw new UsageError(
        `bad method "${text}" in --methods; KernelWarehouse is kw:B with a budget B such as 1x, 1/2x, 2x`,
      );
    }
    return { key: `kw:${formatBudget(b)}`, label: `KW ${formatBudget(b)}`, budget: b };
  }
  let method: MethodOption;
  try {
    method = parseMethod(t);
  } catch (e) {
    throw new UsageError(
      `bad method "${text}" in --methods; accepted: plain, kw:B (kw:1x, kw:1/2x, ...), ${(e as Error).message.replace(/^.*accepted: /, '')}`,
    );
  }
  return { key: t, label: t, budget: null, method };
}

const fmtTime = (s: number) =>
  s >= 60
    ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`
    : `${s.toFixed(1)}s`;

function tensors(set: ImageSet, from: number, n: number, classes: number) {
  const px = new Float32Array(n * set.height * set.width);
  for (let i = 0; i < px.length; i++) px[i] = set.images[from * set.height * set.width + i]! / 255;
  const labels = Array.from(set.labels.subarray(from, from + n));
  return {
    x: tf.tensor4d(px, [n, set.height, set.width, 1]),
    y: tf.oneHot(tf.tensor1d(labels, 'int32'), classes) as tf.Tensor2D,
    nchw: px,
    labels,
  };
}

/**
 * The order of the training images in `epoch` of the run with `seed`: a Fisher-Yates shuffle
 * from core's seeded Rng, the same in every process, so a resumed run sees the same batches.
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

const shellQuote = (s: string) => (/^[\w./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

const TRAIN_FLAGS = {
  model: { type: 'string' },
  dataset: { type: 'string' },
  'data-dir': { type: 'string' },
  budgets: { type: 'string' },
  methods: { type: 'string' },
  width: { type: 'string' },
  epochs: { type: 'string' },
  'train-size': { type: 'string' },
  'test-size': { type: 'string' },
  batch: { type: 'string' },
  lr: { type: 'string' },
  'temp-epochs': { type: 'string' },
  backend: { type: 'string' },
  seed: { type: 'string' },
  seeds: { type: 'string' },
  preset: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'string' },
  'checkpoint-every': { type: 'string' },
  'bn-passes': { type: 'string' },
} as const;

type Flags = Partial<Record<keyof typeof TRAIN_FLAGS, string>>;

/** Options from flags over `base` (defaults, a preset, or a checkpoint's options). */
function resolveOptions(v: Flags, base: RunOptions): RunOptions {
  const num = (k: keyof Flags, min: number, int = true): number | undefined => {
    if (v[k] === undefined) return undefined;
    const x = Number(v[k]);
    if (!Number.isFinite(x) || x < min || (int && !Number.isInteger(x)))
      throw new UsageError(
        `--${k} must be ${int ? 'an integer' : 'a number'} >= ${min}; found "${v[k]}"`,
      );
    return x;
  };
  if (v.budgets !== undefined && v.methods !== undefined)
    throw new UsageError('give --methods or --budgets (the older spelling), not both');
  let methods = base.methods;
  if (v.budgets !== undefined) {
    methods = v.budgets.split(',').map((b) => {
      if (b === 'plain') return 'plain';
      try {
        return `kw:${formatBudget(parseBudget(b))}`;
      } catch {
        throw new UsageError(
          `bad budget "${b}" in --budgets; accepted: plain, 1x, 1/2x, 2x, ... (comma separated)`,
        );
      }
    });
  }
  if (v.methods !== undefined) methods = v.methods.split(',').map((m) => parseMethodChoice(m).key);
  const width = num('width', 0, false);
  if (width !== undefined && !(width > 0))
    throw new UsageError(`--width must be a number > 0; found "${v.width}"`);
  const backend = v.backend ?? base.backend;
  if (backend !== 'wasm' && backend !== 'cpu')
    throw new UsageError(`--backend must be wasm or cpu; found "${backend}"`);
  return {
    model: v.model ?? base.model,
    dataset: v.dataset ?? base.dataset,
    dataDir: v['data-dir'] ?? base.dataDir,
    methods,
    width: width ?? base.width,
    epochs: num('epochs', 1) ?? base.epochs,
    trainSize: num('train-size', 1) ?? base.trainSize,
    testSize: num('test-size', 1) ?? base.testSize,
    batch: num('batch', 2) ?? base.batch,
    lr: num('lr', 0, false) ?? base.lr,
    tempEpochs: num('temp-epochs', 0, false) ?? base.tempEpochs,
    backend,
    seed: num('seed', 0) ?? base.seed,
    seeds: num('seeds', 1) ?? base.seeds,
    bnPasses: num('bn-passes', 0) ?? base.bnPasses,
  };
}

/** The run folder `kw train --resume` without a folder continues: the newest one under runs/ with a checkpoint. */
function newestCheckpointedRun(): string {
  const root = 'runs';
  const dirs = existsSync(root)
    ? readdirSync(root)
        .map((d) => join(root, d))
        .filter((d) => hasCheckpoint(join(d, 'checkpoint')))
    : [];
  if (!dirs.length)
    throw new UsageError(
      '--resume without a folder continues the newest run under runs/ with a checkpoint, and there is none; give --resume RUN_DIR',
    );
  return dirs.sort(
    (a, b) =>
      statSync(join(b, 'checkpoint', 'checkpoint.json')).mtimeMs -
      statSync(join(a, 'checkpoint', 'checkpoint.json')).mtimeMs,
  )[0]!;
}

/**
 * `kw train [--model resnet8_cifar] [--width W] [--dataset mnist|fashion-mnist] [--data-dir DIR]
 * [--methods plain,kw:1x,kw:1/2x,odconv:4,... | --budgets plain,1x,1/2x] [--epochs 2] [--train-size 2000]
 * [--test-size 500] [--batch 64] [--lr 0.005] [--temp-epochs E] [--backend wasm|cpu] [--seed 0]
 * [--seeds 1] [--preset paper-direction] [--checkpoint-every 50] [--out runs/NAME] [--resume [RUN_DIR]]`:
 * trains the plain backbone and KernelWarehouse variants on real data, exports each to ONNX,
 * checks ONNX against tfjs, and writes a run folder. Checkpoints go to `RUN_DIR/checkpoint/` at
 * every epoch end, every N steps and on SIGINT/SIGTERM (then the exit code is 130); `--resume`
 * continues from the last one.
 */
export async function trainCommand(args: string[], io: Io): Promise<number> {
  // `--resume` may come without a folder
  const argv = args.flatMap((a, i) =>
    a === '--resume' && (i + 1 >= args.length || args[i + 1]!.startsWith('--'))
      ? ['--resume=']
      : [a],
  );
  let v: Flags;
  try {
    v = parseArgs({ args: argv, options: TRAIN_FLAGS }).values as Flags;
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!);
  }
  const checkpointEvery = v['checkpoint-every'] === undefined ? 50 : Number(v['checkpoint-every']);
  if (!Number.isInteger(checkpointEvery) || checkpointEvery < 0)
    throw new UsageError(
      `--checkpoint-every must be an integer >= 0 (steps; 0: only at epoch ends); found "${v['checkpoint-every']}"`,
    );
  let base = DEFAULTS;
  if (v.preset !== undefined) {
    const p = PRESETS[v.preset];
    if (!p)
      throw new UsageError(
        `unknown preset "${v.preset}"; accepted: ${Object.keys(PRESETS).join(', ')}`,
      );
    base = { ...DEFAULTS, ...p };
  }

  // resuming: the options come from the checkpoint; flags may only repeat them
  let resumed:
    | {
        state: TrainState;
        blobs: Record<string, Uint8Array>;
        files: Record<string, string>;
        generation: number;
      }
    | undefined;
  let out: string;
  let opts: RunOptions;
  if (v.resume !== undefined) {
    out = v.resume || v.out || newestCheckpointedRun();
    if (v.resume && v.out && v.out !== v.resume)
      throw new UsageError(`--resume ${v.resume} and --out ${v.out} name different folders`);
    const ckDir = join(out, 'checkpoint');
    if (!hasCheckpoint(ckDir) && existsSync(join(out, 'results.json')))
      throw new KwError(
        'IO_ERROR',
        `the run in ${out} is complete (results.json is there, the checkpoint was removed); nothing to resume`,
        { path: out },
      );
    const { manifest, blobs } = readCheckpoint<TrainState>(ckDir);
    const state = manifest.state;
    if (!state || typeof state.options !== 'object' || !Array.isArray(state.finished))
      throw new KwError(
        'IO_ERROR',
        `checkpoint ${join(ckDir, 'checkpoint.json')} is corrupt: no run options`,
        { path: join(ckDir, 'checkpoint.json') },
      );
    // a checkpoint from before --bn-passes existed evaluated without re-estimation: keep that
    const saved = {
      ...DEFAULTS,
      ...state.options,
      bnPasses: (state.options as Partial<RunOptions>).bnPasses ?? 0,
    };
    const asked = resolveOptions(v, v.preset !== undefined ? base : saved);
    const diffs = (Object.keys(FLAG) as (keyof RunOptions)[]).filter(
      (k) => JSON.stringify(asked[k]) !== JSON.stringify(saved[k]),
    );
    if (diffs.length) {
      throw new UsageError(
        `--resume keeps the options the run was started with; ${diffs
          .map(
            (k) =>
              `${FLAG[k]} ${JSON.stringify(asked[k])} differs from the run's ${JSON.stringify(saved[k])}`,
          )
          .join(', ')} (drop ${diffs.length > 1 ? 'these flags' : 'the flag'})`,
      );
    }
    opts = saved;
    resumed = {
      state,
      blobs,
      files: Object.fromEntries(Object.entries(manifest.files).map(([k, f]) => [k, f.file])),
      generation: manifest.generation,
    };
    if (state.current && (!blobs.weights || !blobs.optimizer))
      throw new KwError(
        'IO_ERROR',
        `checkpoint ${join(ckDir, 'checkpoint.json')} is corrupt: it names no weights or optimizer file for ${state.current.method}`,
        { path: join(ckDir, 'checkpoint.json') },
      );
  } else {
    opts = resolveOptions(v, base);
    out =
      v.out ??
      join(
        'runs',
        `${opts.model}-${opts.dataset}-${new Date().toISOString().replace(/[:.]/g, '-')}`,
      );
  }
  const { epochs, trainSize, testSize, batch, lr, seeds } = opts;
  const tempEpochs = opts.tempEpochs ?? epochs / 2;
  const modelId = opts.model;
  try {
    getModel(modelId);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^\[\w+\] /, ''));
  }
  const choices = opts.methods.map(parseMethodChoice);

  const dir = datasetDir(opts.dataset, opts.dataDir ?? undefined);
  const train = loadIdxFolder(dir, 'train');
  const test = loadIdxFolder(dir, 't10k');
  if (trainSize > train.count || testSize > test.count) {
    throw new UsageError(
      `--train-size/--test-size exceed the data set (${train.count} train, ${test.count} test images)`,
    );
  }
  const classes = checkDataset(train, test);
  const inputShape: [number, number, number] = [1, train.height, train.width];
  const specOf = (c: MethodChoice): ModelSpec => {
    try {
      return createModel(modelId, {
        budget: c.budget,
        method: c.method,
        classes,
        inputShape,
        width: opts.width ?? undefined,
      });
    } catch (e) {
      throw new UsageError(
        `${c.key} on ${modelId}: ${(e as Error).message.replace(/^\[\w+\] /, '')}`,
      );
    }
  };
  const specs = choices.map(specOf);
  makeDir(out);
  const ckDir = join(out, 'checkpoint');
  await chooseBackend({
    force: opts.backend,
    report: (l) => io.err(`${l}\n`),
  });
  // every method must be trainable by tfjs before any training starts
  for (const [i, c] of choices.entries()) {
    if (c.method === undefined) continue;
    try {
      buildModel(specs[i]!).dispose();
    } catch (e) {
      throw new UsageError(
        `method "${c.key}" cannot be trained with tfjs: ${(e as Error).message.replace(/^\[\w+\] /, '')}`,
      );
    }
  }

  const tr = tensors(train, 0, trainSize, classes);
  const te = tensors(test, 0, testSize, classes);
  const stepsPerEpoch = Math.ceil(trainSize / batch);
  io.err(
    `kw train: ${modelId}${opts.width ? ` (width ${opts.width})` : ''} on ${opts.dataset} (${trainSize} train / ${testSize} test images, ${train.height}x${train.width}x1), ${epochs} epochs, batch ${batch}, tau 1 -> 0 over ${tempEpochs} epochs, ${seeds > 1 ? `${seeds} seeds, ` : ''}backend ${tf.getBackend()}${opts.bnPasses > 0 ? `; BatchNorm statistics re-estimated over ${opts.bnPasses} training batches before testing` : ''}\n`,
  );
  if (resumed) {
    const c = resumed.state.current;
    io.err(
      `kw train: resuming ${out}: ${resumed.state.finished.length} variant(s) done${c ? `, ${c.method} seed ${c.seed} continues at epoch ${c.epoch + 1} step ${c.step + 1}` : ''}\n`,
    );
  }

  // Ctrl-C / SIGTERM: finish the step, write a checkpoint, exit 130
  let stopSignal: string | undefined;
  const onSignal = (sig: string) => {
    if (stopSignal) process.exit(130); // a second Ctrl-C: the last checkpoint stands
    stopSignal = sig;
    io.err(`\nkw train: ${sig}: finishing the current step, then writing a checkpoint\n`);
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  const results: TrainResult[] = resumed ? [...resumed.state.finished] : [];
  let generation = 0;
  const ckStats: { ms: number; bytes: number }[] = [];
  const isTTY = (process.stderr as { isTTY?: boolean }).isTTY;
  const jobs: { choice: MethodChoice; spec: ModelSpec; seed: number }[] = [];
  for (let s = 0; s < seeds; s++)
    for (const [i, choice] of choices.entries())
      jobs.push({ choice, spec: specs[i]!, seed: opts.seed + s });
  const slugOf = (label: string, seed: number) =>
    `${label.replace(/[^a-zA-Z0-9]+/g, '-').replace(/-$/, '')}${seeds > 1 ? `-seed${seed}` : ''}`;
  const interrupted = (job: JobState) => {
    const where =
      job.epoch >= epochs
        ? `after ${job.method} seed ${job.seed}`
        : `in ${job.method} seed ${job.seed} (next: epoch ${job.epoch + 1} step ${job.step + 1}/${stepsPerEpoch})`;
    io.err(
      `kw train: stopped (${stopSignal}) ${where}; checkpoint: ${join(ckDir, 'checkpoint.json')}\nresume with: kw train --resume ${shellQuote(out)}\n`,
    );
    return 130;
  };

  // tfjs wasm reports a failed XNNPACK op (out of memory near the 4 GB heap) only on stderr and
  // goes on with the op's output uncomputed: stop instead of training on garbage
  const watch = watchWasmFailures();
  const checkKernels = (where: string) => {
    try {
      watch.check(where);
    } catch (e) {
      throw new KwError(
        'BACKEND_FAILED',
        `${(e as Error).message.replace(/^\[\w+\] /, '')}. Nothing from this step was kept; a fresh process starts with an empty heap: kw train --resume ${shellQuote(out)} continues from the last checkpoint`,
      );
    }
  };
  try {
    const save = async (job: JobState, model?: tf.LayersModel, optimizer?: tf.Optimizer) => {
      const t = performance.now();
      const blobs: Record<string, Uint8Array> = {};
      if (model && optimizer) {
        const spec = jobs.find((j) => j.choice.key === job.method)!.spec;
        blobs.weights = saveWeights(spec, exportWeights(model));
        blobs.optimizer = await saveOptimizerState(optimizer);
      }
      const state: TrainState = {
        options: opts,
        argv: args,
        finished: results,
        current: model ? job : null,
      };
      const w = writeCheckpoint(ckDir, ++generation, state, blobs);
      ckStats.push({ ms: performance.now() - t, bytes: w.bytes });
    };
    if (resumed) generation = resumed.generation;

    for (const { choice, spec, seed } of jobs) {
      const label = choice.label;
      if (results.some((r) => r.method === choice.key && r.seed === seed)) continue;
      const model = buildModel(spec, initWeights(spec, { seed }));
      // model.fit/trainOnBatch take the softmax of logits through the loss: wrap the logits model
      const probs = tf.model({
        inputs: model.inputs,
        outputs: tf.layers.softmax().apply(model.outputs[0]!) as tf.SymbolicTensor,
      });
      const optimizer = tf.train.adam(lr);
      probs.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
      const cur = resumed?.state.current;
      const resumeHere =
        cur !== null && cur !== undefined && cur.method === choice.key && cur.seed === seed;
      const job: JobState = resumeHere
        ? { ...cur, curve: [...cur.curve] }
        : {
            method: choice.key,
            seed,
            epoch: 0,
            step: 0,
            trainSeconds: 0,
            imagesTrained: 0,
            lastLoss: Number.NaN,
            curve: [],
          };
      if (resumeHere) {
        const wf = join(ckDir, resumed!.files.weights ?? 'weights');
        try {
          loadModelWeights(model, loadWeights(spec, resumed!.blobs.weights!));
        } catch (e) {
          throw new KwError(
            'IO_ERROR',
            `checkpoint weights ${wf} do not fit ${choice.key}: ${(e as Error).message}`,
            { path: wf },
          );
        }
        await loadOptimizerState(
          optimizer,
          resumed!.blobs.optimizer!,
          join(ckDir, resumed!.files.optimizer ?? 'optimizer'),
        );
      }
      const sched = { epochs: tempEpochs, itersPerEpoch: stepsPerEpoch };
      const t0 = performance.now();
      const seconds0 = job.trainSeconds;
      const images0 = job.imagesTrained;
      let sinceCheckpoint = 0;
      let acc = 0;
      const tag = `${label}${seeds > 1 ? ` s${seed}` : ''}`.padEnd(8);
      while (job.epoch < epochs) {
        const order = epochOrder(trainSize, seed, job.epoch);
        while (job.step < stepsPerEpoch) {
          const { epoch, step } = job;
          const tau = Math.max(0, stepTemperature(model, sched, epoch, step));
          const idx = tf.tensor1d(
            order.subarray(step * batch, Math.min(trainSize, (step + 1) * batch)),
            'int32',
          );
          const xb = tf.gather(tr.x, idx);
          const yb = tf.gather(tr.y, idx);
          const logs = (await probs.trainOnBatch(xb, yb)) as number[];
          tf.dispose([idx, xb, yb]);
          checkKernels(`${tag.trim()} epoch ${epoch + 1} step ${step + 1}`);
          job.lastLoss = logs[0]!;
          acc = logs[1] ?? 0;
          job.imagesTrained += Math.min(trainSize, (step + 1) * batch) - step * batch;
          job.curve.push({ epoch: epoch + (step + 1) / stepsPerEpoch, loss: job.lastLoss, tau });
          job.step++;
          job.trainSeconds = seconds0 + (performance.now() - t0) / 1000;
          // let signal handlers run between steps
          await new Promise((r) => setImmediate(r));
          const done = job.step;
          const ips = (job.imagesTrained - images0) / ((performance.now() - t0) / 1000);
          const eta =
            (((epochs - epoch) * stepsPerEpoch - done) * batch +
              (jobs.length - results.length - 1) * epochs * trainSize) /
            ips;
          const width = 24;
          const bar = '#'.repeat(Math.round((done / stepsPerEpoch) * width)).padEnd(width, '.');
          const line = `${tag} epoch ${epoch + 1}/${epochs} [${bar}] ${done}/${stepsPerEpoch} loss ${job.lastLoss.toFixed(4)} acc ${acc.toFixed(3)} tau ${tau.toFixed(3)} ${ips.toFixed(0)} img/s ETA ${fmtTime(eta)}`;
          sinceCheckpoint++;
          const endOfEpoch = done === stepsPerEpoch;
          if (endOfEpoch) {
            job.epoch++;
            job.step = 0;
          }
          const checkpointNow =
            endOfEpoch ||
            stopSignal !== undefined ||
            (checkpointEvery > 0 && sinceCheckpoint >= checkpointEvery);
          if (checkpointNow) {
            await save(job, model, optimizer);
            sinceCheckpoint = 0;
          }
          if (isTTY) io.err(`\r${line}${endOfEpoch ? '\n' : ''}`);
          else if (endOfEpoch || checkpointNow)
            io.err(`${line}${endOfEpoch ? '' : ' (checkpoint)'}\n`);
          if (stopSignal) {
            probs.dispose();
            optimizer.dispose();
            return interrupted(job);
          }
          if (endOfEpoch) break;
        }
      }
      setTemperature(model, 0);
      if (opts.bnPasses > 0) {
        // the running statistics lag the weights after a short run at a constant learning rate;
        // re-estimate them for the final weights (every method alike) before testing
        recalibrateBatchNorm(model, tr.x, { batchSize: batch, batches: opts.bnPasses });
        checkKernels(`${tag.trim()} BatchNorm re-estimation`);
      }
      const result = await evaluate(
        model,
        spec,
        te,
        classes,
        testSize,
        train,
        out,
        slugOf(label, seed),
        batch,
        () => checkKernels(`${tag.trim()} test predictions`),
      );
      results.push({
        method: choice.key,
        label,
        budget: choice.budget,
        seed,
        params: countParams(spec),
        ...result,
        trainSeconds: job.trainSeconds,
        imagesPerSecond: (epochs * trainSize) / job.trainSeconds,
        finalLoss: job.lastLoss,
        curve: job.curve,
      });
      probs.dispose();
      optimizer.dispose();
      await save(job);
      if (stopSignal) return interrupted(job);
    }
  } finally {
    watch.stop();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    // a failed wasm kernel can leave the backend unusable: never let this cleanup hide the error
    // that got us here
    try {
      tf.dispose([tr.x, tr.y, te.x, te.y]);
    } catch {}
  }

  // the table: one row per method, mean ± std over seeds when there are several
  const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
  const std = (a: number[]) =>
    a.length < 2 ? 0 : Math.sqrt(a.reduce((s, x) => s + (x - mean(a)) ** 2, 0) / (a.length - 1));
  const summaries = choices.map((c) => {
    const rs = results.filter((r) => r.method === c.key);
    return {
      method: c.key,
      label: c.label,
      params: rs[0]!.params,
      seeds: rs.map((r) => r.seed),
      testAccuracyMean: mean(rs.map((r) => r.testAccuracy)),
      testAccuracyStd: std(rs.map((r) => r.testAccuracy)),
      trainSecondsMean: mean(rs.map((r) => r.trainSeconds)),
      imagesPerSecondMean: mean(rs.map((r) => r.imagesPerSecond)),
      onnxAgreementMin: Math.min(...rs.map((r) => r.onnxAgreement)),
      onnxMaxRelError: Math.max(...rs.map((r) => r.onnxMaxRelError)),
    };
  });
  const plainParams = summaries.find((r) => r.method === 'plain')?.params;
  const rows: (string | number)[][] = [
    [
      'method',
      'params',
      'vs plain',
      seeds > 1 ? `test acc (mean ± std, ${seeds} seeds)` : 'test acc',
      'train time',
      'img/s',
      'ONNX = tfjs',
      'ONNX logits rel err',
    ],
  ];
  for (const r of summaries) {
    rows.push([
      r.label,
      r.params.toLocaleString('en-US'),
      plainParams
        ? `${r.params >= plainParams ? '+' : ''}${(((r.params - plainParams) / plainParams) * 100).toFixed(1)}%`
        : '-',
      seeds > 1
        ? `${(r.testAccuracyMean * 100).toFixed(2)}% ± ${(r.testAccuracyStd * 100).toFixed(2)}`
        : `${(r.testAccuracyMean * 100).toFixed(2)}%`,
      fmtTime(r.trainSecondsMean),
      r.imagesPerSecondMean.toFixed(0),
      `${(r.onnxAgreementMin * 100).toFixed(2)}%`,
      r.onnxMaxRelError.toExponential(1),
    ]);
  }
  const summary = table(rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
  io.out(`\n${summary}\n\nrun folder: ${out}\n`);
  const config = {
    model: modelId,
    width: opts.width,
    dataset: opts.dataset,
    methods: opts.methods,
    trainSize,
    testSize,
    epochs,
    batch,
    lr,
    tempEpochs,
    seed: opts.seed,
    seeds,
    backend: tf.getBackend(),
  };
  const checkpoints = ckStats.length
    ? {
        written: ckStats.length,
        meanMs: mean(ckStats.map((c) => c.ms)),
        maxMs: Math.max(...ckStats.map((c) => c.ms)),
        maxBytes: Math.max(...ckStats.map((c) => c.bytes)),
      }
    : null;
  writeFileAtomic(
    join(out, 'results.json'),
    `${JSON.stringify({ config, summary: summaries, results, checkpoints }, null, 2)}\n`,
  );
  const first = results.filter((r) => r.seed === opts.seed);
  writeFileAtomic(
    join(out, 'report.md'),
    `# kw train: ${modelId} on ${opts.dataset}\n\nCommand: \`kw train ${(resumed?.state.argv ?? args).join(' ')}\`${resumed ? ' (interrupted and resumed)' : ''}\n\nConfig: ${JSON.stringify(config)}\n\n\`\`\`\n${summary}\n\`\`\`\n\n${seeds > 1 ? `Test accuracy: mean ± sample standard deviation over ${seeds} seeds (${summaries[0]!.seeds.join(', ')}); each seed sets the initial weights and the order of the training images. Charts show seed ${opts.seed}.\n\n` : ''}At width 1 the KW attention (hidden width >= 16, m*(n+1) logits per layer) outweighs the warehouse of a network this small, so KW adds parameters; the savings of KW 1/2x appear on wider networks (\`kw plan resnet8_cifar --width 4 --budget 1/2x --input 28x28x1 --classes 10\`: 0.78x) and at ResNet scale (\`kw plan resnet18 --budget 1/2x\`: 0.64x).\n\n![training loss](loss.svg)\n\n![tau](tau.svg)\n\nEach model: \`<method>.safetensors\` (weights, spec names) and \`<method>.onnx\` (opset 17, dynamic batch, tau = 0)${seeds > 1 ? ', one pair per seed (`-seedN`)' : ''}. "ONNX = tfjs": share of test images with the same predicted class from onnxruntime-web (wasm) and from tfjs.\n`,
  );
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  writeFileAtomic(
    join(out, 'loss.svg'),
    lineChart(
      `${modelId} on ${opts.dataset}: training loss`,
      'epoch',
      'loss (per batch)',
      first.map((r, i) => ({
        name: r.label,
        color: colors[i % colors.length]!,
        points: r.curve.map((c) => [c.epoch, c.loss] as [number, number]),
      })),
    ),
  );
  writeFileAtomic(
    join(out, 'tau.svg'),
    lineChart('KW temperature tau (per micro-batch)', 'epoch', 'tau', [
      {
        name: 'tau',
        color: '#d62728',
        points: (first.find((r) => r.budget !== null) ?? first[0]!).curve.map(
          (c) => [c.epoch, c.tau] as [number, number],
        ),
      },
    ]),
  );
  // the run is complete: its checkpoint is no longer needed
  rmSync(ckDir, { recursive: true, force: true });
  const bad = results.filter((r) => r.onnxAgreement < 0.999 || !(r.onnxMaxRelError < 1e-4));
  if (bad.length) {
    io.err(
      `kw train: ONNX disagrees with tfjs for ${bad.map((r) => `${r.label} seed ${r.seed}`).join(', ')}\n`,
    );
    return 1;
  }
  return 0;
}

/** Test accuracy at tau = 0, weights and ONNX out, and the ONNX model checked against tfjs on the test set. */
async function evaluate(
  model: tf.LayersModel,
  spec: ModelSpec,
  te: ReturnType<typeof tensors>,
  classes: number,
  testSize: number,
  train: ImageSet,
  out: string,
  slug: string,
  batch: number,
  checkKernels: () => void,
): Promise<{ testAccuracy: number; onnxAgreement: number; onnxMaxRelError: number }> {
  // predict in training-sized batches: a KW layer assembles one kernel per sample, so a wide
  // model at batch 256 outgrew the wasm heap (4 GB) and crashed the long preset
  const logitsT = model.predict(te.x, { batchSize: batch }) as tf.Tensor;
  const logits = logitsT.dataSync() as Float32Array;
  logitsT.dispose();
  checkKernels();
  const argmax = (a: ArrayLike<number>, i: number) => {
    let best = 0;
    for (let k = 1; k < classes; k++) if (a[i * classes + k]! > a[i * classes + best]!) best = k;
    return best;
  };
  let correct = 0;
  for (let i = 0; i < testSize; i++) if (argmax(logits, i) === te.labels[i]) correct++;
  const weights = exportWeights(model);
  writeFileAtomic(join(out, `${slug}.safetensors`), saveWeights(spec, weights));
  const onnx = toOnnx(spec, weights);
  writeFileAtomic(join(out, `${slug}.onnx`), onnx);
  const session = await createSession(onnx);
  let same = 0;
  let maxAbs = 0;
  let scale = 1e-6;
  const hw = train.height * train.width;
  for (let s = 0; s < testSize; s += 250) {
    const n = Math.min(250, testSize - s);
    const [y] = await runSession(session, {
      shape: [n, 1, train.height, train.width],
      data: te.nchw.subarray(s * hw, (s + n) * hw),
    });
    for (let i = 0; i < n; i++) {
      if (argmax(y!.data, i) === argmax(logits, s + i)) same++;
      for (let k = 0; k < classes; k++) {
        maxAbs = Math.max(
          maxAbs,
          Math.abs(y!.data[i * classes + k]! - logits[(s + i) * classes + k]!),
        );
        scale = Math.max(scale, Math.abs(logits[(s + i) * classes + k]!));
      }
    }
  }
  await session.release();
  return {
    testAccuracy: correct / testSize,
    onnxAgreement: same / testSize,
    onnxMaxRelError: maxAbs / scale,
  };
}
