/**
 * ODConv, omni-dimensional dynamic convolution (peers.md §4): K kernels with four attentions
 * from one shared hidden layer, `W_b = α_f ⊙ α_c ⊙ α_s ⊙ Σ_k α_w,k W_k`. Skip rules (§4.1):
 * no filter head for a depthwise conv, no spatial head for a 1×1 kernel, no kernel head for
 * K = 1 (a skipped head is ≡ 1). Names follow the official module: `weight [K, f, c/g, kh, kw]`,
 * `attention.fc.weight [A, c, 1, 1]`, `attention.bn.*`, `attention.channel_fc.*`,
 * `attention.filter_fc.*`, `attention.spatial_fc.*`, `attention.kernel_fc.*`.
 */
import { batchNorm, relu } from '../reference/ops.js';
import type { ConvGeometry, OtherMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import {
  convMacs,
  decl,
  fc,
  gap,
  intSetting,
  perSampleConv,
  posSetting,
  rejectUnknown,
  requireConv,
  sigmoidInPlace,
  softmaxRows,
} from './common.js';
import type { DynamicMethod, DynamicNode } from './registry.js';

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

/** The four attentions of a batch: `channel [N, c]`, `filter [N, f]`, `spatial [N, kh·kw]`, `kernel [N, K]`. */
export interface OdConvAttentions {
  channel: Float32Array;
  filter: Float32Array;
  spatial: Float32Array;
  kernel: Float32Array;
}

/** Compute the four attentions (skipped heads filled with 1), peers.md §4.1. */
export function odConvAttentions(
  node: DynamicNode,
  x: Tensor,
  w: (name: string) => Tensor,
  mode: 'inference' | 'train',
): OdConvAttentions {
  const g = requireConv(node, 'odconv');
  const m = node.method as OdConvRef;
  const [n, c] = x.shape as [number, number];
  const f = g.outChannels;
  const mn = g.kernelSize[0] * g.kernelSize[1];
  const heads = odConvHeads(c, f, g.groups, g.kernelSize[0], g.kernelSize[1], m.kernels);
  const z = fc(gap(x), w('attention.fc.weight'), undefined);
  const a = z.shape[1]!;
  const bn = batchNorm(
    { shape: [n, a, 1, 1], data: z.data },
    w('attention.bn.weight'),
    w('attention.bn.bias'),
    w('attention.bn.running_mean'),
    w('attention.bn.running_var'),
    1e-5,
    mode,
    `node "${node.id}" attention.bn`,
  );
  const v: Tensor = { shape: [n, a], data: bn.data.map(relu) };
  const head = (name: string, size: number, on: boolean, kind: 'sigmoid' | 'softmax') => {
    if (!on) return new Float32Array(n * size).fill(1);
    const out = fc(v, w(`attention.${name}.weight`), w(`attention.${name}.bias`)).data;
    if (kind === 'sigmoid') sigmoidInPlace(out, m.temperature);
    else softmaxRows(out, n, size, m.temperature);
    return out;
  };
  return {
    channel: head('channel_fc', c, true, 'sigmoid'),
    filter: head('filter_fc', f, heads.filter, 'sigmoid'),
    spatial: head('spatial_fc', mn, heads.spatial, 'sigmoid'),
    kernel: head('kernel_fc', m.kernels, heads.kernel, 'softmax'),
  };
}

/**
 * Kernel form for sample b (peers.md §4.1 step 3): `W_b[o, j, m] = α_f[o] · α_c[i(o, j)] ·
 * α_s[m] · Σ_k α_w,k W_k[o, j, m]`, with `i(o, j) = ⌊o/(f/g)⌋·(c/g) + j` the input channel.
 */
export function odConvKernel(
  g: ConvGeometry,
  c: number,
  bank: Float32Array,
  att: OdConvAttentions,
  b: number,
): Float32Array {
  const f = g.outChannels;
  const cg = c / g.groups;
  const og = f / g.groups;
  const mn = g.kernelSize[0] * g.kernelSize[1];
  const size = f * cg * mn;
  const K = bank.length / size;
  const out = new Float32Array(size);
  for (let o = 0; o < f; o++) {
    for (let j = 0; j < cg; j++) {
      const i = Math.floor(o / og) * cg + j;
      const scale = att.filter[b * f + o]! * att.channel[b * c + i]!;
      for (let s = 0; s < mn; s++) {
        const idx = (o * cg + j) * mn + s;
        let acc = 0;
        for (let k = 0; k < K; k++) acc += att.kernel[b * K + k]! * bank[k * size + idx]!;
        out[idx] = scale * att.spatial[b * mn + s]! * acc;
      }
    }
  }
  return out;
}

/** The ODConv method module (kind `odconv`). */
export const odConvMethod: DynamicMethod<OdConvRef> = {
  kind: 'odconv',
  normalize(where, raw) {
    rejectUnknown(where, raw, ['kernels', 'reduction', 'minHidden', 'temperature']);
    return {
      kind: 'odconv',
      kernels: intSetting(where, raw, 'kernels', 4, 1),
      reduction: posSetting(where, raw, 'reduction', 1 / 16),
      minHidden: intSetting(where, raw, 'minHidden', 16, 1),
      temperature: posSetting(where, raw, 'temperature', 1),
    };
  },
  params(node, inShape) {
    const g = requireConv(node, 'odconv');
    const m = node.method as OdConvRef;
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
  macs(node, inShape, outShape) {
    const g = requireConv(node, 'odconv');
    const m = node.method as OdConvRef;
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
  forward(node, x, w, opts) {
    const g = requireConv(node, 'odconv');
    const att = odConvAttentions(node, x, w, opts.mode);
    const bank = w('weight').data;
    const c = x.shape[1]!;
    return perSampleConv(x, g, (b) => odConvKernel(g, c, bank, att, b));
  },
};
