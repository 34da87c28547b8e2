/**
 * @kernelwarehouse/zoo: the KernelWarehouse paper's backbones as @kernelwarehouse/core specs,
 * plain and with the official KernelWarehouse placement at any budget.
 *
 * @packageDocumentation
 */
import { describeValue, KwError, type ModelSpec, parseBudget } from '@kernelwarehouse/core';
import type { MethodOption, ModelOptions } from './common.js';
import { convnext_tiny, slak_tiny } from './convnext.js';
import { mobilenetv2_050, mobilenetv2_100 } from './mobilenetv2.js';
import { resnet8Cifar, resnet18, resnet20Cifar, resnet50 } from './resnet.js';

export {
  type ConvRole,
  type MethodOption,
  MODEL_METHODS,
  type ModelOptions,
  makeDivisible,
  methodRef,
  SMALL_INPUT_MAX_PX,
  type StemOption,
} from './common.js';
export { convnext_tiny, SLAK_T, slak_tiny } from './convnext.js';
export { mobilenetv2, mobilenetv2_050, mobilenetv2_100 } from './mobilenetv2.js';
export {
  type ResNetConfig,
  resnet,
  resnet8Cifar,
  resnet18,
  resnet20Cifar,
  resnet50,
} from './resnet.js';

/** A published (model, budget) row: its parameter count and where it was published. */
export interface PublishedRow {
  /** Budget b, or null for the plain backbone. */
  budget: number | null;
  /** Parameters as published, in millions (two decimals). */
  paramsM: number;
  /** ImageNet top-1 as published. */
  top1: number;
  source: string;
}

/** A published row of one of the other methods on this backbone. */
export interface PublishedMethodRow {
  /** Row label as published, e.g. "ODConv (4x)". */
  label: string;
  method: MethodOption;
  /** Parameters as published, in millions. */
  paramsM: number;
  source: string;
}

/** A zoo entry. */
export interface ZooModel {
  id: string;
  description: string;
  /** Default per-sample input. */
  inputShape: [number, number, number];
  /** Budgets the paper / official code publish for this backbone. */
  publishedBudgets: number[];
  published: PublishedRow[];
  /** Published rows of the other methods (ODConv, DY-Conv, SE, ...), where peers.md verified them. */
  publishedMethods: PublishedMethodRow[];
  /** Builds the spec (budget already parsed). */
  build: (options: ModelOptions) => ModelSpec;
}

const README = 'OSVAI/KernelWarehouse README.md (Results and Models)';
const OD = 'OSVAI/ODConv README.md (peers.md §4.6)';
const od = (K: number, paramsM: number): PublishedMethodRow => ({
  label: `ODConv (${K}x)`,
  method: { kind: 'odconv', kernels: K },
  paramsM,
  source: OD,
});

/** Every model of the zoo, by id (timm names for the paper's backbones). */
export const MODELS: readonly ZooModel[] = [
  {
    id: 'resnet18',
    description: 'ResNet18; KW in every 3x3/1x1 conv of layer1-4, one warehouse per stage',
    inputShape: [3, 224, 224],
    publishedBudgets: [0.25, 0.5, 1, 2, 4],
    published: [
      { budget: null, paramsM: 11.69, top1: 70.44, source: README },
      { budget: 0.25, paramsM: 4.08, top1: 72.73, source: README },
      { budget: 0.5, paramsM: 7.43, top1: 73.33, source: README },
      { budget: 1, paramsM: 11.93, top1: 74.77, source: README },
      { budget: 2, paramsM: 23.24, top1: 75.19, source: README },
      { budget: 4, paramsM: 45.86, top1: 76.05, source: README },
    ],
    publishedMethods: [
      od(1, 11.94),
      od(4, 44.9),
      {
        label: 'DY-Conv (4x)',
        method: { kind: 'dyconv', kernels: 4 },
        paramsM: 45.47,
        source: 'ODConv/KW comparison tables; peers.md §3.3 derives 45.471M',
      },
      {
        label: 'SE',
        method: { kind: 'se' },
        paramsM: 11.78,
        source: 'ODConv/KW comparison tables; peers.md §1.1 derives 11.779M',
      },
    ],
    build: resnet18,
  },
  {
    id: 'resnet50',
    description:
      'ResNet50; KW except layer1.0.conv1 and layer1.0.downsample; 1/2x uses the non-local basis attention',
    inputShape: [3, 224, 224],
    publishedBudgets: [0.5, 1, 4],
    published: [
      { budget: null, paramsM: 25.56, top1: 78.44, source: README },
      { budget: 0.5, paramsM: 17.64, top1: 79.3, source: README },
      { budget: 1, paramsM: 28.05, top1: 80.38, source: README },
      { budget: 4, paramsM: 102.02, top1: 81.05, source: README },
    ],
    publishedMethods: [
      od(1, 28.64),
      od(4, 90.67),
      {
        label: 'SE',
        method: { kind: 'se' },
        paramsM: 28.09,
        source: 'peers.md §1.1 (SE-ResNet50 28.088M)',
      },
    ],
    build: resnet50,
  },
  {
    id: 'mobilenetv2_100',
    description:
      'MobileNetV2 1.0x; 1x: 13 warehouses, 4x: 19, 1/2x: the kw1d2x model (10, KW classifier)',
    inputShape: [3, 224, 224],
    publishedBudgets: [0.5, 1, 4],
    published: [
      { budget: null, paramsM: 3.5, top1: 72.04, source: README },
      { budget: 0.5, paramsM: 2.65, top1: 72.59, source: README },
      { budget: 1, paramsM: 5.17, top1: 74.68, source: README },
      { budget: 4, paramsM: 11.38, top1: 75.92, source: README },
    ],
    publishedMethods: [od(1, 4.94), od(4, 11.51)],
    build: mobilenetv2_100,
  },
  {
    id: 'mobilenetv2_050',
    description: 'MobileNetV2 0.5x; same placements as mobilenetv2_100',
    inputShape: [3, 224, 224],
    publishedBudgets: [0.5, 1, 4],
    published: [
      { budget: null, paramsM: 1.97, top1: 64.32, source: README },
      { budget: 0.5, paramsM: 1.47, top1: 65.2, source: README },
      { budget: 1, paramsM: 2.85, top1: 68.29, source: README },
      { budget: 4, paramsM: 4.65, top1: 70.26, source: README },
    ],
    publishedMethods: [od(1, 2.43), od(4, 4.44)],
    build: mobilenetv2_050,
  },
  {
    id: 'convnext_tiny',
    description:
      'ConvNeXt-Tiny; KW stem, downsampling, depthwise and pointwise convs, 12 warehouses, LayerNorm attention',
    inputShape: [3, 224, 224],
    publishedBudgets: [1],
    published: [
      { budget: null, paramsM: 28.59, top1: 82.07, source: README },
      { budget: 1, paramsM: 39.37, top1: 82.51, source: README },
    ],
    publishedMethods: [],
    build: convnext_tiny,
  },
  {
    id: 'slak_tiny',
    description:
      'SLaK-T: ConvNeXt-T at width 1.3 with 51/49/47/13 (+5x5) decomposed depthwise kernels, BN per branch',
    inputShape: [3, 224, 224],
    publishedBudgets: [],
    published: [
      {
        budget: null,
        paramsM: 50.7,
        top1: 82.5,
        source:
          "peers.md §7.2 (dense count 50,703,838, as printed from the released checkpoint; the SLaK README's 30M counts non-zero weights at 40% sparsity) and §7.5 (82.5 top-1)",
      },
    ],
    publishedMethods: [],
    build: slak_tiny,
  },
  {
    id: 'resnet20_cifar',
    description:
      'CIFAR ResNet-20 (3 stages x 3 BasicBlocks, 16/32/64), 32x32x3, for experiments on CPUs',
    inputShape: [3, 32, 32],
    publishedBudgets: [],
    published: [],
    publishedMethods: [],
    build: resnet20Cifar,
  },
  {
    id: 'resnet8_cifar',
    description: 'CIFAR ResNet-8 (3 stages x 1 BasicBlock, 16/32/64): the fastest model here',
    inputShape: [3, 32, 32],
    publishedBudgets: [],
    published: [],
    publishedMethods: [],
    build: resnet8Cifar,
  },
];

/** The zoo entry for `id`; throws ARGUMENT_INVALID listing the known ids. */
export function getModel(id: string): ZooModel {
  const m = MODELS.find((x) => x.id === id);
  if (!m) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `unknown model "${id}"; known models: ${MODELS.map((x) => x.id).join(', ')}`,
      { actual: id },
    );
  }
  return m;
}

/** Options of {@link createModel}: a budget may be written as the paper does (`'1/2x'`). */
export interface CreateOptions extends Omit<ModelOptions, 'budget'> {
  budget?: number | string | null;
}

/**
 * Build a zoo model as a validated spec. Budgets: `'1/4x'`, `'1/2x'`, `'1x'`, `'2x'`, `'4x'`, any
 * number, or null for the plain backbone. A budget that cannot tile throws BUDGET_CANNOT_TILE
 * (from the planner, when the spec is planned) naming the budgets that do.
 *
 * @example
 * const spec = createModel('resnet18', { budget: '1/2x', classes: 10, inputShape: [3, 32, 32] });
 */
export function createModel(id: string, options: CreateOptions = {}): ModelSpec {
  const m = getModel(id);
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `createModel("${id}"): options must be an object (or left out), found ${describeValue(options)}`,
    );
  }
  const raw: unknown = options.budget;
  if (raw !== undefined && raw !== null && typeof raw !== 'number' && typeof raw !== 'string') {
    throw new KwError(
      'BUDGET_INVALID',
      `createModel("${id}"): budget must be a number, a string like '1/2x', or null, found ${describeValue(raw)}`,
      { actual: raw },
    );
  }
  const budget =
    options.budget === undefined || options.budget === null ? null : parseBudget(options.budget);
  // drop explicit undefineds so they do not override a model's own defaults (CIFAR input, classes)
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  return m.build({ ...given, budget });
}

/** All zoo entries. */
export function listModels(): readonly ZooModel[] {
  return MODELS;
}
