import {
  type DynamicMethodRef,
  describeValue,
  getMethod,
  KwError,
  type KwWarehouseSpec,
  type SpecBuilder,
} from '@kernelwarehouse/core';

/** Options every zoo model takes. */
export interface ModelOptions {
  /**
   * KernelWarehouse budget b (number, or `'1/2x'` style via parseBudget before calling);
   * `null`/undefined builds the plain backbone.
   */
  budget?: number | null;
  /** Classifier outputs. Default 1000. */
  classes?: number;
  /**
   * Per-sample input `[C, H, W]`. Default `[3, 224, 224]`. Inputs of 64 px or less get the
   * small-input stem unless `stem` says otherwise.
   */
  inputShape?: [number, number, number];
  /**
   * Which stem the ImageNet backbones get: `'auto'` (default) picks the small-input stem for
   * inputs of 64 px or less and the ImageNet stem from 65 px; `'imagenet'` always builds the
   * official stem (needed to load official checkpoints at small inputs); `'small'` always the
   * small-input one. The choice is recorded as `spec.meta.stem`.
   */
  stem?: StemOption;
  /** Width multiplier of the channel counts. Default 1 (MobileNetV2 ids fix their own). */
  width?: number;
  /**
   * One of the other methods instead of KernelWarehouse, placed as its official code places it
   * (see {@link MethodOption}). Cannot be combined with a KW budget.
   */
  method?: MethodOption;
  /**
   * ResNets only: the warehouses (stage indices, 0-based) whose convs are KernelWarehouse convs;
   * the convs of the other stages stay plain. Stage s is the official warehouse `stage{s}`: the
   * convs of `layer{s+1}` except its first conv and strided downsample, which the official
   * "handover" puts into stage s-1 (so stage 0 also holds `layer2.0.conv1` and
   * `layer2.0.downsample`). Default: every stage (the official placement). For example `[2]` on
   * `resnet8_cifar` converts only `layer3.0.conv2`, the widest conv (47 % of the parameters).
   * Needs a budget.
   */
  kwStages?: number[];
}

/**
 * The peer methods a backbone can carry (peers.md): ODConv (`kernels` K: "1x" is K = 1, "4x" K = 4),
 * DY-Conv (K kernels), CondConv (n experts), DO-Conv (D_mul = kh*kw), WeightNet (M, G) and SE blocks.
 * Settings left out take the method's defaults from core (its `normalize`, the same defaults
 * `kw plan --method` and specs get); any other setting of the method passes through.
 */
export type MethodOption =
  | { kind: 'odconv'; kernels?: number; [setting: string]: unknown }
  | { kind: 'dyconv'; kernels?: number; [setting: string]: unknown }
  | { kind: 'condconv'; experts?: number; [setting: string]: unknown }
  | { kind: 'doconv'; dMul?: number; [setting: string]: unknown }
  | { kind: 'weightnet'; M?: number; G?: number; [setting: string]: unknown }
  | { kind: 'se'; reduction?: number; hidden?: number };

/** The method kinds a zoo backbone places (`se` is an SE block, the others dynamic convs). */
export const MODEL_METHODS = ['odconv', 'dyconv', 'condconv', 'doconv', 'weightnet', 'se'] as const;

/** The stem choice of {@link ModelOptions.stem}. */
export type StemOption = 'auto' | 'imagenet' | 'small';

/** Inputs up to this many pixels (the shorter side) get the small-input stem under `stem: 'auto'`. */
export const SMALL_INPUT_MAX_PX = 64;

/** Where a conv sits, for the methods' placement rules. */
export type ConvRole = 'stem' | 'block' | 'shortcut' | 'head';

/**
 * The method reference for a conv of the given role and kernel size, or null for a plain conv:
 * ODConv, CondConv and WeightNet convert the convs inside the blocks (ODConv's official rule:
 * stem, shortcuts and classifier static); DY-Conv also the 1x1 shortcuts (its ResNet wiring);
 * DO-Conv every conv with a kernel larger than 1x1 (1x1 convs get no D in the official code).
 */
export function methodRef(
  m: MethodOption | undefined,
  role: ConvRole,
  k: number,
): DynamicMethodRef | null {
  if (!m || m.kind === 'se') return null;
  const placed =
    m.kind === 'doconv'
      ? k > 1 && role !== 'head'
      : m.kind === 'dyconv'
        ? role === 'block' || role === 'shortcut'
        : role === 'block';
  if (!placed) return null;
  const method = getMethod(m.kind);
  if (!method) {
    throw new KwError(
      'SPEC_UNKNOWN_METHOD',
      `method "${String(m.kind)}" is not registered in core`,
    );
  }
  return method.normalize(`method option ${JSON.stringify(m)}`, { ...m }) as DynamicMethodRef;
}

/** Settings a builder hands its warehouses. */
export type WarehouseSettings = Omit<KwWarehouseSpec, 'id'>;

/** Check common options and return them with defaults. */
export function resolveOptions(model: string, o: ModelOptions) {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: options must be an object (or left out), found ${describeValue(o)}`,
    );
  }
  if (o.inputShape !== undefined && !Array.isArray(o.inputShape)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: inputShape must be [C, H, W] of positive integers, found ${describeValue(o.inputShape)}`,
    );
  }
  if (o.method !== undefined) {
    const kind = (o.method as { kind?: unknown } | null)?.kind;
    if (
      typeof o.method !== 'object' ||
      o.method === null ||
      !(MODEL_METHODS as readonly unknown[]).includes(kind)
    ) {
      throw new KwError(
        'ARGUMENT_INVALID',
        `${model}: method must be an object { kind, ...settings } with kind one of ${MODEL_METHODS.join(', ')}, found ${describeValue(o.method)}`,
      );
    }
  }
  const classes = o.classes ?? 1000;
  const inputShape = o.inputShape ?? [3, 224, 224];
  const width = o.width ?? 1;
  if (!Number.isInteger(classes) || classes < 1) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: classes must be an integer >= 1, found ${classes}`,
    );
  }
  if (inputShape.length !== 3 || inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: inputShape must be [C, H, W] of positive integers, found [${inputShape.join(', ')}]`,
    );
  }
  if (!(width > 0) || !Number.isFinite(width)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: width multiplier must be a finite number > 0, found ${width}`,
    );
  }
  if (
    o.budget !== undefined &&
    o.budget !== null &&
    !(typeof o.budget === 'number' && Number.isFinite(o.budget) && o.budget > 0)
  ) {
    throw new KwError(
      'BUDGET_INVALID',
      `${model}: budget must be a finite number > 0, found ${describeValue(o.budget)}`,
    );
  }
  const stem = o.stem ?? 'auto';
  if (stem !== 'auto' && stem !== 'imagenet' && stem !== 'small') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: stem must be 'auto', 'imagenet' or 'small', found ${JSON.stringify(stem)}`,
    );
  }
  if (o.method && o.budget !== undefined && o.budget !== null) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${model}: choose a KernelWarehouse budget or method "${o.method.kind}", not both`,
    );
  }
  if (o.kwStages !== undefined) {
    if (o.budget === undefined || o.budget === null) {
      throw new KwError(
        'ARGUMENT_INVALID',
        `${model}: kwStages chooses which stages are KernelWarehouse convs and needs a budget`,
      );
    }
    if (
      !Array.isArray(o.kwStages) ||
      o.kwStages.length === 0 ||
      o.kwStages.some((s) => !Number.isInteger(s) || s < 0)
    ) {
      throw new KwError(
        'ARGUMENT_INVALID',
        `${model}: kwStages must be a non-empty list of stage indices (integers >= 0), found ${JSON.stringify(o.kwStages)}`,
      );
    }
  }
  return {
    classes,
    inputShape,
    width,
    budget: o.budget ?? null,
    method: o.method,
    kwStages: o.kwStages ?? null,
    small:
      stem === 'small' ||
      (stem === 'auto' && Math.min(inputShape[1], inputShape[2]) <= SMALL_INPUT_MAX_PX),
  };
}

/**
 * Declares warehouses lazily in first-use order, which is the official reservation order
 * (`Warehouse_Manager.reserve` creates a warehouse id the first time a name is seen).
 */
export class Warehouses {
  constructor(
    private readonly b: SpecBuilder,
    private readonly settings: (id: string) => WarehouseSettings,
  ) {}

  /** The warehouse id, declaring it on first use. */
  use(id: string): string {
    if (!this.b.hasWarehouse(id)) this.b.warehouse({ id, ...this.settings(id) });
    return id;
  }
}

/** Default per-warehouse settings for a budget: cells halved when b < 1 (official ResNet configs). */
export function kwSettings(
  budget: number,
  extra: Partial<WarehouseSettings> = {},
): WarehouseSettings {
  const ratio = budget < 1 ? 0.5 : 1;
  return {
    budget,
    cellInRatio: ratio,
    cellOutRatio: ratio,
    reduction: 1 / 16,
    norm: 'batch',
    nonlocalBasisRatio: 1,
    ...extra,
  };
}

/** torchvision / official `_make_divisible`. */
export function makeDivisible(v: number, divisor = 8, minValue = divisor): number {
  let n = Math.max(minValue, Math.trunc(v + divisor / 2) - (Math.trunc(v + divisor / 2) % divisor));
  if (n < 0.9 * v) n += divisor;
  return n;
}
