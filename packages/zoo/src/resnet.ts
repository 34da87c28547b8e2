/**
 * ResNet18/50 (official models/kw_resnet.py placement) and CIFAR-style ResNets.
 * Node ids are the official PyTorch module paths (`layer1.0.conv1`, `layer2.0.downsample.0`).
 */
import { addSqueezeExcite, KwError, type ModelSpec, SpecBuilder } from '@kernelwarehouse/core';
import {
  type ConvRole,
  kwSettings,
  type ModelOptions,
  methodRef,
  resolveOptions,
  Warehouses,
} from './common.js';

/** The shape of a ResNet: block type, blocks and base widths per stage, stem. */
export interface ResNetConfig {
  block: 'basic' | 'bottleneck';
  layers: number[];
  planes: number[];
  /** 'imagenet': 7x7/2 conv + 3x3/2 max pool (3x3/1 conv, no pool, for small inputs); 'cifar': 3x3/1 conv. */
  stem: 'imagenet' | 'cifar';
  /** Non-local basis ratio used when b < 1 (official kw1d2x_resnet50 config: 1/16). */
  basisBelowOne: number;
}

/** Build a ResNet spec; `id` becomes the spec name. */
export function resnet(id: string, cfg: ResNetConfig, options: ModelOptions): ModelSpec {
  const o = resolveOptions(id, options);
  const kw = o.budget !== null;
  const stages = o.kwStages;
  if (stages) {
    const bad = stages.filter((s) => s >= cfg.layers.length);
    if (bad.length)
      throw new KwError(
        'ARGUMENT_INVALID',
        `${id}: kwStages ${JSON.stringify(bad)} out of range; this ResNet has stages 0..${cfg.layers.length - 1}`,
      );
  }
  const b = new SpecBuilder(o.budget === null ? id : `${id}-kw${o.budget}`, [...o.inputShape], {
    model: id,
    budget: o.budget,
    stem: cfg.stem === 'cifar' ? 'cifar' : o.small ? 'small' : 'imagenet',
    source: 'OSVAI/KernelWarehouse models/kw_resnet.py (placement), torchvision ResNet (structure)',
  });
  const settings = kwSettings(
    o.budget ?? 1,
    o.budget !== null && o.budget < 1 ? { nonlocalBasisRatio: cfg.basisBelowOne } : {},
  );
  const wh = new Warehouses(b, () => settings);
  const expansion = cfg.block === 'bottleneck' ? 4 : 1;
  const scale = (c: number) => Math.max(1, Math.round(c * o.width));
  /**
   * A conv: KW in warehouse `stage{s}` when KW is on and s >= 0, else the chosen method where its
   * placement rule converts this role, else plain.
   */
  const conv = (
    nodeId: string,
    x: string,
    out: number,
    k: number,
    stride: number,
    stage: number | null,
    role: ConvRole,
  ) => {
    const geo = { outChannels: out, kernelSize: k, stride, padding: (k - 1) / 2 };
    if (kw && stage !== null && stage >= 0 && (!stages || stages.includes(stage))) {
      return b.dynamicConv2d(nodeId, x, geo, { kind: 'kw', warehouse: wh.use(`stage${stage}`) });
    }
    const ref = methodRef(o.method, role, k);
    return ref ? b.dynamicConv2d(nodeId, x, geo, ref) : b.conv2d(nodeId, x, geo);
  };

  const stemWidth = scale(cfg.stem === 'cifar' ? cfg.planes[0]! : 64);
  let x: string;
  if (cfg.stem === 'cifar' || o.small) {
    x = conv('conv1', b.input, stemWidth, 3, 1, null, 'stem');
    x = b.relu('relu', b.batchNorm('bn1', x));
  } else {
    x = conv('conv1', b.input, stemWidth, 7, 2, null, 'stem');
    x = b.maxPool('maxpool', b.relu('relu', b.batchNorm('bn1', x)), 3, 2, 1);
  }
  let inplanes = stemWidth;
  cfg.layers.forEach((blocks, stage) => {
    const planes = scale(cfg.planes[stage]!);
    const outC = planes * expansion;
    for (let blk = 0; blk < blocks; blk++) {
      const pre = `layer${stage + 1}.${blk}`;
      const stride = stage > 0 && blk === 0 ? 2 : 1;
      const first = blk === 0; // "warehouse handover": the stage's first conv and downsample use the previous stage
      let y: string;
      if (cfg.block === 'basic') {
        y = conv(
          `${pre}.conv1`,
          x,
          planes,
          3,
          stride,
          first ? Math.max(stage - 1, 0) : stage,
          'block',
        );
        y = b.relu(`${pre}.relu1`, b.batchNorm(`${pre}.bn1`, y));
        y = b.batchNorm(`${pre}.bn2`, conv(`${pre}.conv2`, y, planes, 3, 1, stage, 'block'));
      } else {
        y = conv(`${pre}.conv1`, x, planes, 1, 1, first ? stage - 1 : stage, 'block');
        y = b.relu(`${pre}.relu1`, b.batchNorm(`${pre}.bn1`, y));
        y = conv(`${pre}.conv2`, y, planes, 3, stride, stage, 'block');
        y = b.relu(`${pre}.relu2`, b.batchNorm(`${pre}.bn2`, y));
        y = b.batchNorm(`${pre}.bn3`, conv(`${pre}.conv3`, y, outC, 1, 1, stage, 'block'));
      }
      // SE-ResNet: squeeze-excitation on the residual branch, before the addition (r = 16)
      if (o.method?.kind === 'se') y = addSqueezeExcite(b, `${pre}.se`, y, outC, o.method);
      let identity = x;
      if (stride !== 1 || inplanes !== outC) {
        // official: KW only when the downsample has a stride (enabled=(stride != 1))
        const ds = conv(
          `${pre}.downsample.0`,
          x,
          outC,
          1,
          stride,
          stride !== 1 ? stage - 1 : null,
          'shortcut',
        );
        identity = b.batchNorm(`${pre}.downsample.1`, ds);
      }
      x = b.relu(`${pre}.relu`, b.addNodes(`${pre}.add`, [identity, y]));
      inplanes = outC;
    }
  });
  x = b.flatten('flatten', b.globalAvgPool('avgpool', x));
  b.output(b.linear('fc', x, o.classes));
  return b.build();
}

/** ResNet18 (BasicBlock [2, 2, 2, 2]). */
export function resnet18(options: ModelOptions = {}): ModelSpec {
  return resnet(
    'resnet18',
    {
      block: 'basic',
      layers: [2, 2, 2, 2],
      planes: [64, 128, 256, 512],
      stem: 'imagenet',
      basisBelowOne: 1,
    },
    options,
  );
}

/** ResNet50 (Bottleneck [3, 4, 6, 3]); b < 1 uses the non-local basis attention (ratio 1/16) as the official 1/2x config. */
export function resnet50(options: ModelOptions = {}): ModelSpec {
  return resnet(
    'resnet50',
    {
      block: 'bottleneck',
      layers: [3, 4, 6, 3],
      planes: [64, 128, 256, 512],
      stem: 'imagenet',
      basisBelowOne: 1 / 16,
    },
    options,
  );
}

/** CIFAR ResNet-20 (He et al. 2016: 3 stages of 3 BasicBlocks, 16/32/64 channels, 1x1 projection shortcuts). */
export function resnet20Cifar(options: ModelOptions = {}): ModelSpec {
  return resnet(
    'resnet20_cifar',
    { block: 'basic', layers: [3, 3, 3], planes: [16, 32, 64], stem: 'cifar', basisBelowOne: 1 },
    {
      inputShape: [3, 32, 32],
      classes: 10,
      ...options,
    },
  );
}

/** CIFAR ResNet-8 (one BasicBlock per stage): the fast model for CPU experiments. */
export function resnet8Cifar(options: ModelOptions = {}): ModelSpec {
  return resnet(
    'resnet8_cifar',
    { block: 'basic', layers: [1, 1, 1], planes: [16, 32, 64], stem: 'cifar', basisBelowOne: 1 },
    {
      inputShape: [3, 32, 32],
      classes: 10,
      ...options,
    },
  );
}
