/**
 * ODConv, omni-dimensional dynamic convolution (peers.md §4): K kernels with four attentions
 * from one shared hidden layer, `W_b = α_f ⊙ α_c ⊙ α_s ⊙ Σ_k α_w,k W_k`. Skip rules (§4.1):
 * no filter head for a depthwise conv, no spatial head for a 1×1 kernel, no kernel head for
 * K = 1 (a skipped head is ≡ 1). Names follow the official module: `weight [K, f, c/g, kh, kw]`,
 * `attention.fc.weight [A, c, 1, 1]`, `attention.bn.*`, `attention.channel_fc.*`,
 * `attention.filter_fc.*`, `attention.spatial_fc.*`, `attention.kernel_fc.*`.
 */
import { ReferenceOps } from '../ops/reference.js';
import type { Ops } from '../ops/seam.js';
import type { OtherMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import {
  convAttrs,
  convMacs,
  decl,
  forwardTemperature,
  intSetting,
  posSetting,
  rejectUnknown,
  requireConv,
  temperatureSetting,
} from './common.js';
import type { DynamicMethod, DynamicNode } from './types.js';

/** Eps and momentum of the attention BatchNorm (PyTorch defaults). */
const BN_EPS = 1e-5;
const BN_MOMENTUM = 0.1;

/**
 * ODConv settings. `temperature` divides all four heads' logits (1 at inference; anneal 30 → 1
 * over the first epochs with `temperatureAt({ initValue: 30, endValue: 1, ... })`, §4.4).
 */
export interface OdConvRef extends OtherMethodRef {
  kind: 'odconv';
  /** Number of kernels K (default 4; "1×" is K = 1, "4×" is K = 4). */
  kernels: number;
  /** Reduction r (default 1/16): A = max(int(c·r), minHidden). */
  reduction: number;
  /** Minimum hidden width (default 16). */
  minHidden: number;
  /** Temperature τ (default 1). */
  temperature: number;
}

/** Which heads an ODConv layer has (peers.md §4.1 skip rules). */
export interface OdConvHeads {
  filter: boolean;
  spatial: boolean;
  kernel: boolean;
}

/** Head presence for a layer with c inputs, f outputs, g groups, kernel kh×kw, K kernels. */
export function odConvHeads(
  c: number,
  f: number,
  g: number,
  kh: number,
  kw: number,
  K: number,
): OdConvHeads {
  return { filter: !(c === g && c === f), spatial: kh * kw > 1, kernel: K > 1 };
}

/** Hidden width A = max(int(c·r), minHidden) (peers.md §4.1). */
export function odConvHidden(c: number, reduction = 1 / 16, minHidden = 16): number {
  return Math.max(Math.floor(c * reduction), minHidden);
}

/**
 * Per-layer parameters of ODConv (peers.md §4.2): `K·|W| + c·A + 2A + (A·c + c)
 * + [A·f + f unless depthwise] + [A·k² + k² if k > 1] + [A·K + K if K > 1]`.
 */
export function odConvParamCount(
  c: number,
  f: number,
  kh: number,
  kw: number,
  K = 4,
  groups = 1,
  reduction = 1 / 16,
  minHidden = 16,
): number {
  const a = odConvHidden(c, reduction, minHidden);
  const h = odConvHeads(c, f, groups, kh, kw, K);
  const mn = kh * kw;
  return (
    (K * f * c * mn) / groups +
    c * a +
    2 * a +
    (a * c + c) +
    (h.filter ? a * f + f : 0) +
    (h.spatial ? a * mn + mn : 0) +
    (h.kernel ? a * K + K : 0)
  );
}

/** The four attentions of a batch (undefined: a skipped head, ≡ 1): `channel [N, c]`, `filter [N, f]`, `spatial [N, kh·kw]`, `kernel [N, K]`. */
export interface OdConvAttentions<T> {
  channel: T;
  filter: T | undefined;
  spatial: T | undefined;
  kernel: T | undefined;
}

/** Compute the four attentions, peers.md §4.1: one hidden layer (FC, BatchNorm, ReLU), heads divided by τ. */
export function odConvAttentions<T>(
  ops: Ops<T>,
  x: T,
  node: DynamicNode,
  m: OdConvRef,
  c: number,
  temperature: number,
): OdConvAttentions<T> {
  const g = requireConv(node, 'odconv');
  const [kh, kw] = g.kernelSize;
  const heads = odConvHeads(c, g.outChannels, g.groups, kh, kw, m.kernels);
  const z = ops.linear(ops.globalAvgPool(x), ops.param('attention.fc.weight'));
  const v = ops.relu(ops.batchNorm(z, 'attention.bn', BN_EPS, BN_MOMENTUM));
  const logits = (name: string) =>
    ops.linear(v, ops.param(`attention.${name}.weight`), ops.param(`attention.${name}.bias`));
  return {
    channel: ops.sigmoid(logits('channel_fc'), temperature),
    filter: heads.filter ? ops.sigmoid(logits('filter_fc'), temperature) : undefined,
    spatial: heads.spatial ? ops.sigmoid(logits('spatial_fc'), temperature) : undefined,
    kernel: heads.kernel ? ops.softmax(logits('kernel_fc'), temperature) : undefined,
  };
}

/**
 * The per-sample kernel (peers.md §4.1 step 3): `W_b[o, j, s] = α_f[o] · α_c[i(o, j)] · α_s[s] ·
 * Σ_k α_w,k W_k[o, j, s]` with `i(o, j) = ⌊o/(f/g)⌋·(c/g) + j`, laid out `[N, g, f/g, c/g, kh·kw]`
 * so each attention is a broadcast product. Equal to the official form (input scaled by α_c,
 * output by α_f).
 */
export function odConvKernel<T>(
  ops: Ops<T>,
  g: { outChannels: number; groups: number; kernelSize: readonly [number, number] },
  c: number,
  K: number,
  att: OdConvAttentions<T>,
): T {
  const f = g.outChannels;
  const groups = g.groups;
  const mn = g.kernelSize[0] * g.kernelSize[1];
  const cg = c / groups;
  const og = f / groups;
  const bank = ops.reshape(ops.param('weight'), [K, f * cg * mn]);
  // K = 1: the one kernel [1, |W|], broadcast over the batch by the products below
  const mixed = att.kernel ? ops.matMul(att.kernel, bank) : bank;
  let scale = ops.reshape(att.channel, [-1, groups, 1, cg, 1]);
  if (att.filter) scale = ops.mul(ops.reshape(att.filter, [-1, groups, og, 1, 1]), scale);
  if (att.spatial) scale = ops.mul(scale, ops.reshape(att.spatial, [-1, 1, 1, 1, mn]));
  return ops.mul(scale, ops.reshape(mixed, [-1, groups, og, cg, mn]));
}

/**
 * Reference attentions as Float32Arrays (skipped heads filled with 1), for tests and tools.
 * `w(name)` returns the node's tensor.
 */
export function odConvAttentionValues(
  node: DynamicNode,
  settings: OdConvRef,
  x: Tensor,
  w: (name: string) => Tensor,
  mode: 'inference' | 'train',
): { channel: Float32Array; filter: Float32Array; spatial: Float32Array; kernel: Float32Array } {
  const g = requireConv(node, 'odconv');
  const ops = new ReferenceOps({
    param: w,
    training: mode === 'train',
    where: `node "${node.id}"`,
  });
  const [n, c] = x.shape as [number, number];
  const a = odConvAttentions(ops, x, node, settings, c, settings.temperature);
  const ones = (k: number) => new Float32Array(n * k).fill(1);
  const mn = g.kernelSize[0] * g.kernelSize[1];
  return {
    channel: a.channel.data,
    filter: a.filter?.data ?? ones(g.outChannels),
    spatial: a.spatial?.data ?? ones(mn),
    kernel: a.kernel?.data ?? ones(settings.kernels),
  };
}

/** The ODConv method module (kind `odconv`). */
export const odConvMethod: DynamicMethod<OdConvRef> = {
  kind: 'odconv',
  textForm: { fields: ['kernels'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['kernels', 'reduction', 'minHidden', 'temperature']);
    return {
      kind: 'odconv',
      kernels: intSetting(where, raw, 'kernels', 4, 1),
      reduction: posSetting(where, raw, 'reduction', 1 / 16),
      minHidden: intSetting(where, raw, 'minHidden', 16, 1),
      temperature: temperatureSetting(where, raw),
    };
  },
  params({ node, settings: m, inShape }) {
    const g = requireConv(node, 'odconv');
    const c = inShape[0]!;
    const f = g.outChannels;
    const [kh, kw] = g.kernelSize;
    const a = odConvHidden(c, m.reduction, m.minHidden);
    const heads = odConvHeads(c, f, g.groups, kh, kw, m.kernels);
    const fan = (o: number) => ({ kind: 'kaimingNormalFanOut' as const, fanOut: o });
    const zero = { kind: 'const' as const, value: 0 };
    const out = [
      decl('attention.fc.weight', [a, c, 1, 1], fan(a)),
      decl('attention.bn.weight', [a], { kind: 'const', value: 1 }),
      decl('attention.bn.bias', [a], zero),
      decl('attention.bn.running_mean', [a], zero, 'buffer'),
      decl('attention.bn.running_var', [a], { kind: 'const', value: 1 }, 'buffer'),
      decl('attention.channel_fc.weight', [c, a, 1, 1], fan(c)),
      decl('attention.channel_fc.bias', [c], zero),
    ];
    if (heads.filter) {
      out.push(decl('attention.filter_fc.weight', [f, a, 1, 1], fan(f)));
      out.push(decl('attention.filter_fc.bias', [f], zero));
    }
    if (heads.spatial) {
      out.push(decl('attention.spatial_fc.weight', [kh * kw, a, 1, 1], fan(kh * kw)));
      out.push(decl('attention.spatial_fc.bias', [kh * kw], zero));
    }
    if (heads.kernel) {
      out.push(decl('attention.kernel_fc.weight', [m.kernels, a, 1, 1], fan(m.kernels)));
      out.push(decl('attention.kernel_fc.bias', [m.kernels], zero));
    }
    // every W_k Kaiming-normal fan-out: std = sqrt(2/(f·k²)) (§4.3)
    out.push(decl('weight', [m.kernels, f, c / g.groups, kh, kw], fan(f * kh * kw)));
    return out;
  },
  macs({ node, settings: m, inShape }, outShape) {
    const g = requireConv(node, 'odconv');
    const [c, h, w] = inShape as [number, number, number];
    const f = g.outChannels;
    const [kh, kw] = g.kernelSize;
    const a = odConvHidden(c, m.reduction, m.minHidden);
    const heads = odConvHeads(c, f, g.groups, kh, kw, m.kernels);
    const headOut =
      c + (heads.filter ? f : 0) + (heads.spatial ? kh * kw : 0) + (heads.kernel ? m.kernels : 0);
    const size = (f * c * kh * kw) / g.groups;
    return {
      conv: convMacs(g, c, outShape),
      attention: c * h * w + c * a + a * headOut,
      // Σ_k α_w,k (α_s ⊙ W_k), then input scaling by α_c and output scaling by α_f (§4.1)
      assembly:
        m.kernels * size +
        c * h * w +
        (heads.filter ? f * (outShape[1] ?? 1) * (outShape[2] ?? 1) : 0),
    };
  },
  forward(ops, x, { node, settings: m, inShape, methodTemperature }) {
    const g = requireConv(node, 'odconv');
    const c = inShape[0]!;
    const tau = forwardTemperature(node, m.temperature, methodTemperature);
    const att = odConvAttentions(ops, x, node, m, c, tau);
    return ops.perSampleConv(x, odConvKernel(ops, g, c, m.kernels, att), convAttrs(g));
  },
};
