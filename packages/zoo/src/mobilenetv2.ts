/**
 * MobileNetV2 (official models/kw_mobilenetv2.py and models/kw1d2x_mobilenetv2.py placement).
 * Node ids are the official module paths (`features.2.conv.1.0`, `classifier`).
 */
import { type ConvOptions, KwError, type ModelSpec, SpecBuilder } from '@kernelwarehouse/core';
import {
  type ConvRole,
  kwSettings,
  type ModelOptions,
  makeDivisible,
  methodRef,
  resolveOptions,
  type WarehouseSettings,
  Warehouses,
} from './common.js';

const SETTINGS: [number, number, number, number][] = [
  // t, c, n, s
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];
/** KW stage of each setting (official `kw_stage_setting`). */
const KW_STAGE = [1, 2, 3, 4, 5, 6, 6];

/** The three KW layouts of the official code. */
type Layout =
  /** KW(1x) config: sharing ("layer", "pwconv"): one dw and one merged pw warehouse per stage, 13 warehouses. */
  | 'merged'
  /** KW(4x) config: sharing ("layer"): expansion and projection 1x1 convs apart, 19 warehouses. */
  | 'separate'
  /** kw1d2x model: 10 warehouses, 1x1 convs of stages 1-5 plain, KW classifier, hard-coded ratios. */
  | 'half';

/** Per-warehouse settings of the kw1d2x model, in its reservation order (kw1d2x_mobilenetv2.py). */
const HALF: Record<string, Partial<WarehouseSettings> & { budget: number }> = {
  stage0_conv0: { budget: 1 },
  stage1_layer_dwconv0: { budget: 1 },
  stage2_layer_dwconv0: { budget: 1 },
  stage3_layer_dwconv0: { budget: 1 },
  stage4_layer_dwconv0: { budget: 1 },
  stage5_layer_dwconv0: { budget: 1 },
  stage6_layer_pwconv0: { budget: 0.5, cellInRatio: 0.5, cellOutRatio: 0.5 },
  stage6_layer_dwconv0: { budget: 1 },
  stage6_layer_pwconv1: { budget: 0.5, cellInRatio: 0.5, cellOutRatio: 0.5 },
  classifier: { budget: 0.5, cellInRatio: 0.025, cellOutRatio: 1 },
};

/**
 * MobileNetV2 with width multiplier `widthMult`. KW placement: b = 1/2 builds the official
 * kw1d2x model; b <= 1 the merged-pointwise layout of the KW(1x) config; b > 1 the separate
 * layout of the KW(4x) config.
 */
export function mobilenetv2(id: string, widthMult: number, options: ModelOptions): ModelSpec {
  const o = resolveOptions(id, options);
  if (o.kwStages) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${id}: kwStages is a ResNet option; MobileNetV2 always converts the official placement`,
    );
  }
  if (o.method?.kind === 'se') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${id}: SE blocks are placed on ResNets only (SE-ResNet); MobileNetV2 takes odconv, dyconv, condconv, doconv or weightnet`,
    );
  }
  const width = widthMult * o.width;
  const layout: Layout | null =
    o.budget === null ? null : o.budget === 0.5 ? 'half' : o.budget <= 1 ? 'merged' : 'separate';
  const b = new SpecBuilder(o.budget === null ? id : `${id}-kw${o.budget}`, [...o.inputShape], {
    model: id,
    budget: o.budget,
    stem: o.small ? 'small' : 'imagenet',
    layout,
    source: 'OSVAI/KernelWarehouse models/kw_mobilenetv2.py, models/kw1d2x_mobilenetv2.py',
  });
  const wh = new Warehouses(b, (wid) => {
    if (layout === 'half') {
      const s = HALF[wid];
      if (!s)
        throw new KwError(
          'SPEC_UNKNOWN_WAREHOUSE',
          `${id}: no kw1d2x setting for warehouse ${wid}`,
        );
      return { ...kwSettings(1), reduction: 1 / 32, ...s };
    }
    return { ...kwSettings(o.budget ?? 1), cellInRatio: 1, cellOutRatio: 1 };
  });
  /** conv + BN + ReLU6 (official ConvBNReLU, a Sequential: `.0` conv, `.1` bn, `.2` relu6). */
  /** A conv: KW when a warehouse is given, else the chosen method where it applies, else plain. */
  const conv = (
    id: string,
    x: string,
    geo: ConvOptions,
    warehouse: string | null,
    role: ConvRole,
  ) => {
    if (warehouse !== null)
      return b.dynamicConv2d(id, x, geo, { kind: 'kw', warehouse: wh.use(warehouse) });
    const ref = methodRef(o.method, role, Number(geo.kernelSize));
    return ref ? b.dynamicConv2d(id, x, geo, ref) : b.conv2d(id, x, geo);
  };
  const convBnRelu = (
    pre: string,
    x: string,
    out: number,
    k: number,
    stride: number,
    groups: number,
    warehouse: string | null,
    role: ConvRole = 'block',
  ) => {
    const geo = { outChannels: out, kernelSize: k, stride, padding: (k - 1) / 2, groups };
    return b.relu6(`${pre}.2`, b.batchNorm(`${pre}.1`, conv(`${pre}.0`, x, geo, warehouse, role)));
  };
  const pwName = (stage: number, which: 0 | 1) =>
    layout === 'merged' ? `stage${stage}_layer_pwconv` : `stage${stage}_layer_pwconv${which}`;
  /** Which warehouse a layer goes to, or null for a plain conv. */
  const place = (stage: number, kind: 'dw' | 'pw0' | 'pw1'): string | null => {
    if (layout === null) return null;
    if (kind === 'dw') return `stage${stage}_layer_dwconv0`;
    if (layout === 'half' && stage < 6) return null; // pwlinear_enabled is False for stages 1-5
    return pwName(stage, kind === 'pw0' ? 0 : 1);
  };

  let input = makeDivisible(32 * width);
  const last = makeDivisible(1280 * Math.max(1, width));
  let x = convBnRelu(
    'features.0',
    b.input,
    input,
    3,
    o.small ? 1 : 2,
    1,
    layout === null ? null : 'stage0_conv0',
    'stem',
  );
  let f = 1;
  SETTINGS.forEach(([t, c, n, s], idx) => {
    const out = makeDivisible(c * width);
    for (let i = 0; i < n; i++) {
      let stride = i === 0 ? s : 1;
      if (o.small && idx === 1) stride = 1; // small inputs keep one more resolution, as CIFAR variants do
      const handover = i === 0 && idx > 0 && KW_STAGE[idx] !== KW_STAGE[idx - 1];
      const stage = handover ? KW_STAGE[idx]! - 1 : KW_STAGE[idx]!;
      const pre = `features.${f}.conv`;
      const hidden = Math.round(input * t);
      let y = x;
      let k = 0;
      if (t !== 1) y = convBnRelu(`${pre}.${k++}`, y, hidden, 1, 1, 1, place(stage, 'pw0'));
      y = convBnRelu(`${pre}.${k++}`, y, hidden, 3, stride, hidden, place(stage, 'dw'));
      const pw1 = place(stage, 'pw1');
      const geo = { outChannels: out, kernelSize: 1 };
      y = conv(`${pre}.${k++}`, y, geo, pw1, 'block');
      y = b.batchNorm(`${pre}.${k++}`, y);
      x = stride === 1 && input === out ? b.addNodes(`features.${f}.add`, [x, y]) : y;
      input = out;
      f++;
    }
  });
  x = convBnRelu(`features.${f}`, x, last, 1, 1, 1, layout === null ? null : pwName(6, 1));
  x = b.flatten('flatten', b.globalAvgPool('pool', x));
  if (layout === 'half') {
    x = b.dropout('classifier.0', x, 0.1);
    b.output(
      b.dynamicLinear('classifier.1', x, o.classes, {
        kind: 'kw',
        warehouse: wh.use('classifier'),
      }),
    );
  } else if (layout === null) {
    x = b.dropout('classifier.0', x, 0);
    b.output(b.linear('classifier.1', x, o.classes));
  } else {
    b.output(b.linear('classifier', x, o.classes));
  }
  return b.build();
}

/** MobileNetV2 1.0x. */
export function mobilenetv2_100(options: ModelOptions = {}): ModelSpec {
  return mobilenetv2('mobilenetv2_100', 1, options);
}

/** MobileNetV2 0.5x. */
export function mobilenetv2_050(options: ModelOptions = {}): ModelSpec {
  return mobilenetv2('mobilenetv2_050', 0.5, options);
}
