/**
 * Shared helpers of the dynamic-method modules: settings parsing with errors that name the
 * node and field, the per-sample convolution, global average pooling and small FC layers.
 * See peers.md §0 for notation.
 */
import { describeValue, KwError } from '../errors.js';
import { type InitRule, type ParamDecl, paramDecl } from '../params.js';
import { type Conv2dParams, channelMeans, conv2dImage } from '../reference/ops.js';
import type { ConvGeometry, Pair } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import type { DynamicNode } from './registry.js';

/** Read an integer setting `>= min` (default `def`); throws SPEC_BAD_FIELD naming node and field. */
export function intSetting(
  where: string,
  raw: Record<string, unknown>,
  field: string,
  def: number,
  min: number,
): number {
  const v = raw[field] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `${where}: field "method.${field}" must be an integer >= ${min}, found ${describeValue(v)}`,
      { field: `method.${field}`, expected: `integer >= ${min}`, actual: v },
    );
  }
  return v;
}

/** Read a finite number setting `> 0` (default `def`); throws SPEC_BAD_FIELD naming node and field. */
export function posSetting(
  where: string,
  raw: Record<string, unknown>,
  field: string,
  def: number,
): number {
  const v = raw[field] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `${where}: field "method.${field}" must be a finite number > 0, found ${describeValue(v)}`,
      { field: `method.${field}`, expected: 'number > 0', actual: v },
    );
  }
  return v;
}

/** Reject settings the method does not know (typos must not pass silently). */
export function rejectUnknown(where: string, raw: Record<string, unknown>, known: string[]): void {
  for (const k of Object.keys(raw)) {
    if (k !== 'kind' && !known.includes(k)) {
      throw new KwError(
        'SPEC_BAD_FIELD',
        `${where}: method "${String(raw.kind)}" has no setting "${k}"; known: ${known.join(', ')}`,
        { field: `method.${k}` },
      );
    }
  }
}

/** Throw unless the node is a dynamicConv2d (methods that only make conv kernels). */
export function requireConv(node: DynamicNode, kind: string): ConvGeometry {
  if (node.op !== 'dynamicConv2d') {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `node "${node.id}": method "${kind}" applies to dynamicConv2d only, found op "${node.op}"`,
      { field: 'method.kind' },
    );
  }
  return node;
}

/** A parameter declaration with a name relative to the node (see params.ts). */
export function decl(
  name: string,
  shape: number[],
  init: InitRule,
  role: 'param' | 'buffer' = 'param',
): ParamDecl {
  return paramDecl(undefined, name, shape, init, role);
}

/** Output spatial size of a conv. */
export function convOut(size: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;
}

/** Per-image conv MACs `f·(c/g)·kh·kw·Ho·Wo`. */
export function convMacs(g: ConvGeometry, c: number, outShape: readonly number[]): number {
  const [kh, kw] = g.kernelSize;
  return ((g.outChannels * c) / g.groups) * kh * kw * (outShape[1] ?? 1) * (outShape[2] ?? 1);
}

/** GAP of `[N, C, H, W]` as `[N, C]`. */
export function gap(x: Tensor): Tensor {
  return { shape: [x.shape[0]!, x.shape[1]!], data: channelMeans(x) };
}

/**
 * Batched FC `y[b] = W v[b] (+ bias)` with W stored `[out, in, ...1]` (a 1×1 conv or a Linear),
 * float64 accumulation.
 */
export function fc(v: Tensor, weight: Tensor, bias: Tensor | undefined): Tensor {
  const [n, i] = v.shape as [number, number];
  const o = weight.shape[0]!;
  const out = new Float32Array(n * o);
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < o; r++) {
      let s = bias ? bias.data[r]! : 0;
      for (let k = 0; k < i; k++) s += v.data[b * i + k]! * weight.data[r * i + k]!;
      out[b * o + r] = s;
    }
  }
  return { shape: [n, o], data: out };
}

/** In-place softmax of each row of `[N, K]` after dividing by `tau`. */
export function softmaxRows(z: Float32Array, n: number, k: number, tau: number): void {
  for (let b = 0; b < n; b++) {
    let mx = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < k; j++) mx = Math.max(mx, z[b * k + j]! / tau);
    let s = 0;
    const e = new Float64Array(k);
    for (let j = 0; j < k; j++) {
      e[j] = Math.exp(z[b * k + j]! / tau - mx);
      s += e[j]!;
    }
    for (let j = 0; j < k; j++) z[b * k + j] = e[j]! / s;
  }
}

/** In-place logistic sigmoid of `z / tau`. */
export function sigmoidInPlace(z: Float32Array, tau = 1): void {
  for (let i = 0; i < z.length; i++) z[i] = 1 / (1 + Math.exp(-z[i]! / tau));
}

/**
 * Mix `K` kernels of `size` floats: `out = Σ_k a[k] · bank[k]` (float64 accumulation).
 */
export function mixKernels(
  bank: Float32Array,
  a: ArrayLike<number>,
  aOff: number,
  k: number,
  size: number,
): Float32Array {
  const acc = new Float64Array(size);
  for (let j = 0; j < k; j++) {
    const s = a[aOff + j]!;
    const base = j * size;
    for (let i = 0; i < size; i++) acc[i]! += s * bank[base + i]!;
  }
  return Float32Array.from(acc);
}

/**
 * Per-sample conv: `y_b = conv(x_b, kernel(b)) + bias(b)` with the node's geometry
 * (peers.md §0 "per-sample conv").
 */
export function perSampleConv(
  x: Tensor,
  g: ConvGeometry,
  kernel: (b: number) => Float32Array,
  bias?: (b: number) => ArrayLike<number>,
): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [kh, kw] = g.kernelSize;
  const ho = convOut(h, kh, g.stride[0], g.padding[0], g.dilation[0]);
  const wo = convOut(w, kw, g.stride[1], g.padding[1], g.dilation[1]);
  const o = g.outChannels;
  const p: Conv2dParams = {
    stride: g.stride,
    padding: g.padding,
    dilation: g.dilation,
    groups: g.groups,
  };
  const out = new Float32Array(n * o * ho * wo);
  for (let b = 0; b < n; b++) {
    conv2dImage(x.data, b * c * h * w, c, h, w, kernel(b), 0, o, kh, kw, p, out, b * o * ho * wo);
    if (bias) {
      const bb = bias(b);
      for (let oc = 0; oc < o; oc++) {
        const base = (b * o + oc) * ho * wo;
        for (let i = 0; i < ho * wo; i++) out[base + i]! += bb[oc]!;
      }
    }
  }
  return { shape: [n, o, ho, wo], data: out };
}

/** `[kh, kw]` of a conv node. */
export function kernelPair(g: ConvGeometry): Pair {
  return g.kernelSize;
}

/**
 * Forward of a mixture of whole kernels (CondConv experts, DY-Conv kernels): per sample,
 * `W_b = sum_i r[b, i] * W_i` (and the same for the biases), then a per-sample convolution.
 * `r` holds `[N, count]` mixture weights.
 */
export function mixtureForward(
  x: Tensor,
  g: ConvGeometry,
  w: (name: string) => Tensor,
  r: Float32Array,
  count: number,
): Tensor {
  const bank = w('weight').data;
  const size = bank.length / count;
  const biasBank = g.bias ? w('bias').data : undefined;
  return perSampleConv(
    x,
    g,
    (b) => mixKernels(bank, r, b * count, count, size),
    biasBank ? (b) => mixKernels(biasBank, r, b * count, count, g.outChannels) : undefined,
  );
}
