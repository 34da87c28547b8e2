/**
 * Plain reference ops on Float32Array, NCHW. Written for clarity and exactness (float64
 * accumulation), not speed. Every backend is tested against these.
 */
import { KwError } from '../errors.js';
import { convOutputLength } from '../ops/seam.js';
import type { Pair } from '../spec/types.js';
import { numel, type Tensor } from '../tensor.js';

/** Convolution geometry as the ops take it. */
export interface Conv2dParams {
  stride: Pair;
  padding: Pair;
  dilation: Pair;
  groups: number;
}

const outSize = convOutputLength;

/**
 * One image: x `[C, H, W]` (at `xOff` in `x`), weight `[O, C/g, kh, kw]`, writes
 * `[O, Ho, Wo]` into `out` at `outOff`. float64 accumulation per output plane.
 */
export function conv2dImage(
  x: Float32Array,
  xOff: number,
  c: number,
  h: number,
  w: number,
  weight: Float32Array,
  wOff: number,
  o: number,
  kh: number,
  kw: number,
  p: Conv2dParams,
  out: Float32Array,
  outOff: number,
): void {
  const ho = outSize(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
  const wo = outSize(w, kw, p.stride[1], p.padding[1], p.dilation[1]);
  const cg = c / p.groups;
  const og = o / p.groups;
  const acc = new Float64Array(ho * wo);
  for (let oc = 0; oc < o; oc++) {
    acc.fill(0);
    const g = Math.floor(oc / og);
    for (let icg = 0; icg < cg; icg++) {
      const ic = g * cg + icg;
      const xPlane = xOff + ic * h * w;
      for (let ky = 0; ky < kh; ky++) {
        for (let kx = 0; kx < kw; kx++) {
          const wv = weight[wOff + ((oc * cg + icg) * kh + ky) * kw + kx]!;
          if (wv === 0) continue;
          for (let oy = 0; oy < ho; oy++) {
            const iy = oy * p.stride[0] - p.padding[0] + ky * p.dilation[0];
            if (iy < 0 || iy >= h) continue;
            const row = xPlane + iy * w;
            const accRow = oy * wo;
            for (let ox = 0; ox < wo; ox++) {
              const ix = ox * p.stride[1] - p.padding[1] + kx * p.dilation[1];
              if (ix < 0 || ix >= w) continue;
              acc[accRow + ox]! += wv * x[row + ix]!;
            }
          }
        }
      }
    }
    const base = outOff + oc * ho * wo;
    for (let i = 0; i < ho * wo; i++) out[base + i] = acc[i]!;
  }
}

/** Batched conv2d with one shared weight `[O, C/g, kh, kw]` and optional bias `[O]`. */
export function conv2d(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  p: Conv2dParams,
): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [o, , kh, kw] = weight.shape as [number, number, number, number];
  const ho = outSize(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
  const wo = outSize(w, kw, p.stride[1], p.padding[1], p.dilation[1]);
  const out = new Float32Array(n * o * ho * wo);
  for (let b = 0; b < n; b++) {
    conv2dImage(x.data, b * c * h * w, c, h, w, weight.data, 0, o, kh, kw, p, out, b * o * ho * wo);
  }
  if (bias) addChannelBias(out, bias.data, n, o, ho * wo);
  return { shape: [n, o, ho, wo], data: out };
}

/** out[b, c, i] += bias[c]. */
export function addChannelBias(
  out: Float32Array,
  bias: Float32Array,
  n: number,
  c: number,
  plane: number,
): void {
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      const base = (b * c + ch) * plane;
      const v = bias[ch]!;
      for (let i = 0; i < plane; i++) out[base + i]! += v;
    }
  }
}

/** y = x W^T + b with x `[N, I]`, W `[O, I]` (PyTorch layout). */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | undefined): Tensor {
  const [n, i] = x.shape as [number, number];
  const o = weight.shape[0]!;
  const out = new Float32Array(n * o);
  for (let b = 0; b < n; b++) {
    for (let r = 0; r < o; r++) {
      let s = bias ? bias.data[r]! : 0;
      for (let k = 0; k < i; k++) s += x.data[b * i + k]! * weight.data[r * i + k]!;
      out[b * o + r] = s;
    }
  }
  return { shape: [n, o], data: out };
}

/** Per-channel statistics over every axis but 1. */
export function channelStats(x: Tensor): {
  mean: Float64Array;
  varBiased: Float64Array;
  count: number;
} {
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const plane = numel(x.shape.slice(2));
  const mean = new Float64Array(c);
  const varBiased = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let b = 0; b < n; b++)
      for (let i = 0; i < plane; i++) s += x.data[(b * c + ch) * plane + i]!;
    const mu = s / (n * plane);
    let v = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < plane; i++) {
        const d = x.data[(b * c + ch) * plane + i]! - mu;
        v += d * d;
      }
    }
    mean[ch] = mu;
    varBiased[ch] = v / (n * plane);
  }
  return { mean, varBiased, count: n * plane };
}

/**
 * BatchNorm over axis 1 of `[N, C, ...]`. Inference uses the running statistics; train mode
 * uses the batch's (biased variance), as PyTorch does, and like PyTorch refuses a single
 * value per channel.
 */
export function batchNorm(
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  eps: number,
  mode: 'inference' | 'train',
  where = 'batchNorm',
): Tensor {
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const plane = numel(x.shape.slice(2));
  let mean: ArrayLike<number> = runningMean.data;
  let variance: ArrayLike<number> = runningVar.data;
  if (mode === 'train') {
    const s = channelStats(x);
    if (s.count <= 1) {
      throw new KwError(
        'TENSOR_SHAPE',
        `${where}: BatchNorm in train mode needs more than 1 value per channel, found input [${x.shape.join(', ')}]`,
      );
    }
    mean = s.mean;
    variance = s.varBiased;
  }
  const out = new Float32Array(x.data.length);
  for (let ch = 0; ch < c; ch++) {
    const scale = weight.data[ch]! / Math.sqrt(variance[ch]! + eps);
    const shift = bias.data[ch]! - mean[ch]! * scale;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * plane;
      for (let i = 0; i < plane; i++) out[base + i] = x.data[base + i]! * scale + shift;
    }
  }
  return { shape: [...x.shape], data: out };
}

/** LayerNorm over axis 1 only (at every other position), with affine weight/bias `[C]`. */
export function layerNormChannels(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const plane = numel(x.shape.slice(2));
  const out = new Float32Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < plane; i++) {
      let s = 0;
      for (let ch = 0; ch < c; ch++) s += x.data[(b * c + ch) * plane + i]!;
      const mu = s / c;
      let v = 0;
      for (let ch = 0; ch < c; ch++) {
        const d = x.data[(b * c + ch) * plane + i]! - mu;
        v += d * d;
      }
      const inv = 1 / Math.sqrt(v / c + eps);
      for (let ch = 0; ch < c; ch++) {
        const k = (b * c + ch) * plane + i;
        out[k] = (x.data[k]! - mu) * inv * weight.data[ch]! + bias.data[ch]!;
      }
    }
  }
  return { shape: [...x.shape], data: out };
}

/** erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev). */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t *
                              (-1.13520398 +
                                t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

/** Element-wise map into a new tensor. */
export function map(x: Tensor, f: (v: number) => number): Tensor {
  const out = new Float32Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(x.data[i]!);
  return { shape: [...x.shape], data: out };
}

/** max(v, 0). */
export const relu = (v: number) => Math.max(v, 0);
/** min(max(v, 0), 6). */
export const relu6 = (v: number) => Math.min(Math.max(v, 0), 6);
/** Exact GELU: x * Phi(x). */
export const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
/** 1 / (1 + e^-v). */
export const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** Element-wise sum of equally shaped tensors. */
export function add(xs: Tensor[]): Tensor {
  const out = new Float32Array(xs[0]!.data);
  for (let k = 1; k < xs.length; k++) {
    const d = xs[k]!.data;
    for (let i = 0; i < out.length; i++) out[i]! += d[i]!;
  }
  return { shape: [...xs[0]!.shape], data: out };
}

/** a * b where size-1 dims of b broadcast against a (same rank). */
export function mulBroadcast(a: Tensor, b: Tensor): Tensor {
  const rank = a.shape.length;
  const strides = new Array<number>(rank);
  let s = 1;
  for (let d = rank - 1; d >= 0; d--) {
    strides[d] = b.shape[d] === 1 ? 0 : s;
    s *= b.shape[d]!;
  }
  const out = new Float32Array(a.data.length);
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < out.length; i++) {
    let bo = 0;
    for (let d = 0; d < rank; d++) bo += idx[d]! * strides[d]!;
    out[i] = a.data[i]! * b.data[bo]!;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < a.shape[d]!) break;
      idx[d] = 0;
    }
  }
  return { shape: [...a.shape], data: out };
}

/** Per-channel scale: x[:, c, ...] * gamma[c]. */
export function channelScale(x: Tensor, gamma: Tensor): Tensor {
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const plane = numel(x.shape.slice(2));
  const out = new Float32Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      const g = gamma.data[ch]!;
      const base = (b * c + ch) * plane;
      for (let i = 0; i < plane; i++) out[base + i] = x.data[base + i]! * g;
    }
  }
  return { shape: [...x.shape], data: out };
}

/** Max or average pooling, NCHW. Average counts the zero padding (PyTorch's default). */
export function pool2d(x: Tensor, kind: 'max' | 'avg', k: Pair, s: Pair, p: Pair): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const ho = outSize(h, k[0], s[0], p[0], 1);
  const wo = outSize(w, k[1], s[1], p[1], 1);
  const out = new Float32Array(n * c * ho * wo);
  for (let bc = 0; bc < n * c; bc++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        let acc = kind === 'max' ? Number.NEGATIVE_INFINITY : 0;
        for (let ky = 0; ky < k[0]; ky++) {
          const iy = oy * s[0] - p[0] + ky;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k[1]; kx++) {
            const ix = ox * s[1] - p[1] + kx;
            if (ix < 0 || ix >= w) continue;
            const v = x.data[(bc * h + iy) * w + ix]!;
            acc = kind === 'max' ? Math.max(acc, v) : acc + v;
          }
        }
        out[(bc * ho + oy) * wo + ox] = kind === 'max' ? acc : acc / (k[0] * k[1]);
      }
    }
  }
  return { shape: [n, c, ho, wo], data: out };
}

/** Mean over all axes after 1: `[N, C, ...] -> [N, C]` values. */
export function channelMeans(x: Tensor): Float32Array {
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const plane = numel(x.shape.slice(2));
  const out = new Float32Array(n * c);
  for (let bc = 0; bc < n * c; bc++) {
    let s = 0;
    for (let i = 0; i < plane; i++) s += x.data[bc * plane + i]!;
    out[bc] = s / plane;
  }
  return out;
}
