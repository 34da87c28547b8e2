/**
 * ConvNeXt-Tiny (official models/kw_convnext.py placement: stem, the three downsampling convs,
 * every 7x7 depthwise conv and both pointwise layers are KW, with bias; attention LayerNorm;
 * 12 warehouses). Node ids are the official module paths (`stages.0.0.dwconv`).
 */
import { KwError, type ModelSpec, SpecBuilder } from '@kernelwarehouse/core';
import { kwSettings, type ModelOptions, resolveOptions, Warehouses } from './common.js';

const DEPTHS = [3, 3, 9, 3];
const DIMS = [96, 192, 384, 768];

/** ConvNeXt-Tiny. Inputs of 64 or less get a 2x2/2 stem instead of 4x4/4. */
export function convnext_tiny(options: ModelOptions = {}): ModelSpec {
  return convnext('convnext_tiny', options, null);
}

/** SLaK kernel sizes per stage (official `--kernel_size 51 49 47 13 5`) and width factor 1.3. */
export const SLAK_T = { kernels: [51, 49, 47, 13], small: 5, widthFactor: 1.3 };

/**
 * SLaK-T (peers.md §7): the ConvNeXt-T macro-architecture at width 1.3 (dims truncated, as
 * `int(d * 1.3)`: 124/249/499/998) whose 7x7 depthwise convs are replaced by the decomposed
 * mixer K x N + N x K + N x N (each with its own BatchNorm), K = 51/49/47/13, N = 5. Node ids follow
 * SLaK's `stages.i.j.large_kernel`. Dense parameter count: 50,703,838.
 */
export function slak_tiny(options: ModelOptions = {}): ModelSpec {
  if (options.budget !== undefined && options.budget !== null) {
    throw new KwError(
      'ARGUMENT_INVALID',
      'slak_tiny: KernelWarehouse budgets apply to convnext_tiny, not SLaK',
    );
  }
  return convnext('slak_tiny', options, SLAK_T);
}

function convnext(id: string, options: ModelOptions, slak: typeof SLAK_T | null): ModelSpec {
  const o = resolveOptions(id, options);
  if (o.kwStages) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${id}: kwStages is a ResNet option; ConvNeXt always converts the official placement`,
    );
  }
  if (o.method) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${id}: method "${o.method.kind}" is not placed on ConvNeXt here; use a KW budget, or slak_tiny for SLaK`,
    );
  }
  const kw = o.budget !== null;
  const dims = slak
    ? DIMS.map((d) => Math.max(1, Math.trunc(Math.trunc(d * slak.widthFactor) * o.width)))
    : DIMS.map((d) => Math.max(1, Math.round(d * o.width)));
  const b = new SpecBuilder(kw ? `${id}-kw${o.budget}` : id, [...o.inputShape], {
    model: id,
    budget: o.budget,
    stem: o.small ? 'small' : 'imagenet',
    source: slak
      ? 'VITA-Group/SLaK models/SLaK.py (peers.md §7)'
      : 'OSVAI/KernelWarehouse models/kw_convnext.py',
  });
  const wh = new Warehouses(b, () => ({
    ...kwSettings(o.budget ?? 1),
    cellInRatio: 1,
    cellOutRatio: 1,
    norm: 'layer',
  }));
  if (kw) {
    // official reservation order: stem and the three downsampling layers first, then the stages
    for (const id of [
      'stagestem_conv0',
      'stage0_layer_conv0',
      'stage1_layer_conv0',
      'stage2_layer_conv0',
    ])
      wh.use(id);
    for (let i = 0; i < 4; i++) {
      wh.use(`stage${i}_layer_dwconv0`);
      wh.use(`stage${i}_layer_pwconv`);
    }
  }
  const conv = (
    id: string,
    x: string,
    geo: Parameters<SpecBuilder['conv2d']>[2],
    warehouse: string,
  ) =>
    kw
      ? b.dynamicConv2d(id, x, { ...geo, bias: true }, { kind: 'kw', warehouse })
      : b.conv2d(id, x, { ...geo, bias: true });
  const stemK = o.small ? 2 : 4;
  let x = conv(
    'downsample_layers.0.0',
    b.input,
    { outChannels: dims[0]!, kernelSize: stemK, stride: stemK },
    'stagestem_conv0',
  );
  x = b.layerNorm('downsample_layers.0.1', x, 1e-6);
  for (let i = 0; i < 4; i++) {
    if (i > 0) {
      x = b.layerNorm(`downsample_layers.${i}.0`, x, 1e-6);
      x = conv(
        `downsample_layers.${i}.1`,
        x,
        { outChannels: dims[i]!, kernelSize: 2, stride: 2 },
        `stage${i - 1}_layer_conv0`,
      );
    }
    const d = dims[i]!;
    for (let j = 0; j < DEPTHS[i]!; j++) {
      const pre = `stages.${i}.${j}`;
      let y: string;
      if (slak) {
        const K = slak.kernels[i]!;
        const geo = { outChannels: d, kernelSize: K, padding: (K - 1) / 2, groups: d };
        y = b.dynamicConv2d(`${pre}.large_kernel`, x, geo, {
          kind: 'slak',
          smallKernel: slak.small,
        });
      } else {
        y = conv(
          `${pre}.dwconv`,
          x,
          { outChannels: d, kernelSize: 7, padding: 3, groups: d },
          `stage${i}_layer_dwconv0`,
        );
      }
      y = b.layerNorm(`${pre}.norm`, y, 1e-6);
      y = conv(
        `${pre}.pwconv1`,
        y,
        { outChannels: 4 * d, kernelSize: 1 },
        `stage${i}_layer_pwconv`,
      );
      y = b.gelu(`${pre}.act`, y);
      y = conv(`${pre}.pwconv2`, y, { outChannels: d, kernelSize: 1 }, `stage${i}_layer_pwconv`);
      y = b.mul(pre, [y], 1e-6); // layer scale: parameter `${pre}.gamma`
      x = b.addNodes(`${pre}.add`, [x, y]);
    }
  }
  x = b.flatten('flatten', b.globalAvgPool('pool', x));
  x = b.layerNorm('norm', x, 1e-6);
  b.output(b.linear('head', x, o.classes));
  return b.build();
}
