/**
 * The reference implementation of the op seam on Float32Array `Tensor`s, images NCHW. Products
 * and sums accumulate in float64 and round once per output, so the reference stays the exact
 * ground truth every backend is measured against.
 */
import { KwError } from '../errors.js';
import {
  addChannelBias,
  batchNorm,
  channelMeans,
  conv2d,
  conv2dImage,
  layerNormChannels,
  linear,
} from '../reference/ops.js';
import type { Pair } from '../spec/types.js';
import { numel, type Tensor } from '../tensor.js';
import { type ConvAttrs, convOutputSize, type Ops, type SampleBias } from './seam.js';

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d]!;
  }
  return s;
}

/** numpy broadcasting of two shapes. */
function broadcastShape(a: readonly number[], b: readonly number[], what: string): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new KwError(
        'TENSOR_SHAPE',
        `${what}: shapes [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`,
      );
    }
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Offsets into `t` for every index of `shape` (t broadcast to `shape`). */
function broadcastIndex(t: readonly number[], shape: readonly number[]): Int32Array {
  const r = shape.length;
  const ts = strides(t);
  const st = new Array<number>(r).fill(0);
  for (let i = 0; i < t.length; i++) {
    const d = r - t.length + i;
    st[d] = t[i] === 1 ? 0 : ts[i]!;
  }
  const n = numel(shape);
  const out = new Int32Array(n);
  const idx = new Array<number>(r).fill(0);
  let off = 0;
  for (let k = 0; k < n; k++) {
    out[k] = off;
    for (let d = r - 1; d >= 0; d--) {
      idx[d]!++;
      off += st[d]!;
      if (idx[d]! < shape[d]!) break;
      off -= st[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

function binary(a: Tensor, b: Tensor, f: (x: number, y: number) => number, what: string): Tensor {
  const shape = broadcastShape(a.shape, b.shape, what);
  const n = numel(shape);
  const out = new Float32Array(n);
  const same = a.data.length === n && b.data.length === n;
  if (same) {
    for (let i = 0; i < n; i++) out[i] = f(a.data[i]!, b.data[i]!);
  } else {
    const ia = broadcastIndex(a.shape, shape);
    const ib = broadcastIndex(b.shape, shape);
    for (let i = 0; i < n; i++) out[i] = f(a.data[ia[i]!]!, b.data[ib[i]!]!);
  }
  return { shape, data: out };
}

function unary(t: Tensor, f: (x: number) => number): Tensor {
  const out = new Float32Array(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(t.data[i]!);
  return { shape: [...t.shape], data: out };
}

/** Resolve a reshape target with one -1. */
export function resolveShape(size: number, shape: readonly number[], what = 'reshape'): number[] {
  const known = shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
  const out = shape.map((d) => (d === -1 ? size / known : d));
  if (numel(out) !== size || !out.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new KwError(
      'TENSOR_SHAPE',
      `${what}: cannot view ${size} values as [${shape.join(', ')}]`,
    );
  }
  return out;
}

/** Options of {@link ReferenceOps}. */
export interface ReferenceOpsOptions {
  /** The layer's tensor `name` (relative). */
  param: (name: string) => Tensor | undefined;
  /** A tensor by full name. */
  shared?: (name: string) => Tensor | undefined;
  training: boolean;
  /** For error messages (e.g. `node "conv1"`). */
  where?: string;
}

/** The Float32Array reference implementation of {@link Ops}. */
export class ReferenceOps implements Ops<Tensor> {
  readonly training: boolean;
  private readonly o: ReferenceOpsOptions;

  constructor(options: ReferenceOpsOptions) {
    this.o = options;
    this.training = options.training;
  }

  param(name: string): Tensor {
    const t = this.o.param(name);
    if (!t)
      throw new KwError('WEIGHTS_MISSING', `${this.o.where ?? 'layer'}: missing tensor "${name}"`);
    return t;
  }

  shared(name: string): Tensor {
    const t = this.o.shared?.(name);
    if (!t) throw new KwError('WEIGHTS_MISSING', `missing shared tensor "${name}"`);
    return t;
  }

  constant(data: Float32Array, shape: number[]): Tensor {
    return { shape: [...shape], data };
  }

  reshape(t: Tensor, shape: number[]): Tensor {
    return { shape: resolveShape(t.data.length, shape), data: t.data };
  }

  transpose(t: Tensor, perm: number[]): Tensor {
    const shape = perm.map((p) => t.shape[p]!);
    const src = strides(t.shape);
    const permuted = perm.map((p) => src[p]!);
    const n = t.data.length;
    const out = new Float32Array(n);
    const r = shape.length;
    const idx = new Array<number>(r).fill(0);
    let off = 0;
    for (let k = 0; k < n; k++) {
      out[k] = t.data[off]!;
      for (let d = r - 1; d >= 0; d--) {
        idx[d]!++;
        off += permuted[d]!;
        if (idx[d]! < shape[d]!) break;
        off -= permuted[d]! * shape[d]!;
        idx[d] = 0;
      }
    }
    return { shape, data: out };
  }

  slice(t: Tensor, axis: number, start: number, end: number): Tensor {
    const outer = numel(t.shape.slice(0, axis));
    const inner = numel(t.shape.slice(axis + 1));
    const len = t.shape[axis]!;
    const w = end - start;
    const out = new Float32Array(outer * w * inner);
    for (let o = 0; o < outer; o++) {
      out.set(t.data.subarray((o * len + start) * inner, (o * len + end) * inner), o * w * inner);
    }
    const shape = [...t.shape];
    shape[axis] = w;
    return { shape, data: out };
  }

  concat(ts: Tensor[], axis: number): Tensor {
    const first = ts[0]!;
    const outer = numel(first.shape.slice(0, axis));
    const inner = numel(first.shape.slice(axis + 1));
    const total = ts.reduce((a, t) => a + t.shape[axis]!, 0);
    const out = new Float32Array(outer * total * inner);
    let at = 0;
    for (const t of ts) {
      const w = t.shape[axis]! * inner;
      for (let o = 0; o < outer; o++) {
        out.set(t.data.subarray(o * w, (o + 1) * w), o * total * inner + at);
      }
      at += w;
    }
    const shape = [...first.shape];
    shape[axis] = total;
    return { shape, data: out };
  }

  add(a: Tensor, b: Tensor): Tensor {
    return binary(a, b, (x, y) => x + y, 'add');
  }

  mul(a: Tensor, b: Tensor): Tensor {
    return binary(a, b, (x, y) => x * y, 'mul');
  }

  div(a: Tensor, b: Tensor): Tensor {
    return binary(a, b, (x, y) => x / y, 'div');
  }

  addScalar(t: Tensor, s: number): Tensor {
    return unary(t, (x) => x + s);
  }

  mulScalar(t: Tensor, s: number): Tensor {
    return unary(t, (x) => x * s);
  }

  abs(t: Tensor): Tensor {
    return unary(t, Math.abs);
  }

  relu(t: Tensor): Tensor {
    return unary(t, (x) => Math.max(x, 0));
  }

  sigmoid(t: Tensor, temperature = 1): Tensor {
    return unary(t, (x) => 1 / (1 + Math.exp(-x / temperature)));
  }

  softmax(t: Tensor, temperature = 1): Tensor {
    const k = t.shape[t.shape.length - 1]!;
    const rows = t.data.length / k;
    const out = new Float32Array(t.data.length);
    const e = new Float64Array(k);
    for (let r = 0; r < rows; r++) {
      let mx = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < k; j++) mx = Math.max(mx, t.data[r * k + j]! / temperature);
      let s = 0;
      for (let j = 0; j < k; j++) {
        e[j] = Math.exp(t.data[r * k + j]! / temperature - mx);
        s += e[j]!;
      }
      for (let j = 0; j < k; j++) out[r * k + j] = e[j]! / s;
    }
    return { shape: [...t.shape], data: out };
  }

  sum(t: Tensor, axis: number, keepDims: boolean): Tensor {
    const outer = numel(t.shape.slice(0, axis));
    const inner = numel(t.shape.slice(axis + 1));
    const len = t.shape[axis]!;
    const out = new Float32Array(outer * inner);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let s = 0;
        for (let j = 0; j < len; j++) s += t.data[(o * len + j) * inner + i]!;
        out[o * inner + i] = s;
      }
    }
    const shape = [...t.shape];
    if (keepDims) shape[axis] = 1;
    else shape.splice(axis, 1);
    return { shape, data: out };
  }

  matMul(a: Tensor, b: Tensor, transB = false): Tensor {
    const ra = a.shape.length;
    const rb = b.shape.length;
    const m = a.shape[ra - 2]!;
    const k = a.shape[ra - 1]!;
    const n = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
    const kb = transB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
    if (k !== kb) {
      throw new KwError(
        'TENSOR_SHAPE',
        `matMul: [${a.shape.join(', ')}] x [${b.shape.join(', ')}]${transB ? '^T' : ''} do not chain`,
      );
    }
    const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matMul');
    const nb = numel(batch);
    const ia = broadcastIndex(a.shape.slice(0, -2), batch);
    const ib = broadcastIndex(b.shape.slice(0, -2), batch);
    const out = new Float32Array(nb * m * n);
    const sa = m * k;
    const sb = k * n;
    for (let q = 0; q < nb; q++) {
      const ao = ia[q]! * sa;
      const bo = ib[q]! * sb;
      const oo = q * m * n;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          if (transB)
            for (let p = 0; p < k; p++) s += a.data[ao + i * k + p]! * b.data[bo + j * k + p]!;
          else for (let p = 0; p < k; p++) s += a.data[ao + i * k + p]! * b.data[bo + p * n + j]!;
          out[oo + i * n + j] = s;
        }
      }
    }
    return { shape: [...batch, m, n], data: out };
  }

  linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
    return linear(x, weight, bias);
  }

  batchNorm(x: Tensor, prefix: string, eps: number, _momentum: number): Tensor {
    const p = (n: string) => this.param(`${prefix}.${n}`);
    return batchNorm(
      x,
      p('weight'),
      p('bias'),
      p('running_mean'),
      p('running_var'),
      eps,
      this.training ? 'train' : 'inference',
      `${this.o.where ?? 'layer'} ${prefix}`,
    );
  }

  layerNorm(x: Tensor, prefix: string, eps: number): Tensor {
    return layerNormChannels(x, this.param(`${prefix}.weight`), this.param(`${prefix}.bias`), eps);
  }

  globalAvgPool(x: Tensor): Tensor {
    return { shape: [x.shape[0]!, x.shape[1]!], data: channelMeans(x) };
  }

  conv2d(x: Tensor, weight: Tensor, bias: Tensor | undefined, attrs: ConvAttrs): Tensor {
    return conv2d(x, weight, bias, attrs);
  }

  perSampleConv(
    x: Tensor,
    kernels: Tensor,
    attrs: ConvAttrs & { outChannels: number; kernelSize: Pair },
    bias?: SampleBias<Tensor>,
    kernelPerm?: number[],
  ): Tensor {
    if (kernelPerm) kernels = this.transpose(kernels, kernelPerm);
    const [n, c, h, w] = x.shape as [number, number, number, number];
    const [kh, kw] = attrs.kernelSize;
    const [ho, wo] = convOutputSize(
      [h, w],
      attrs.kernelSize,
      attrs.stride,
      attrs.padding,
      attrs.dilation,
    );
    const o = attrs.outChannels;
    const per = (o * c * kh * kw) / attrs.groups;
    if (kernels.data.length !== n * per) {
      throw new KwError(
        'TENSOR_SHAPE',
        `perSampleConv: expected ${n} kernels of ${per} values, found ${kernels.data.length} values`,
      );
    }
    const out = new Float32Array(n * o * ho * wo);
    for (let b = 0; b < n; b++) {
      conv2dImage(
        x.data,
        b * c * h * w,
        c,
        h,
        w,
        kernels.data,
        b * per,
        o,
        kh,
        kw,
        attrs,
        out,
        b * o * ho * wo,
      );
    }
    if (bias && 'shared' in bias) addChannelBias(out, bias.shared.data, n, o, ho * wo);
    else if (bias) {
      for (let b = 0; b < n; b++) {
        for (let oc = 0; oc < o; oc++) {
          const v = bias.perSample.data[b * o + oc]!;
          const base = (b * o + oc) * ho * wo;
          for (let i = 0; i < ho * wo; i++) out[base + i]! += v;
        }
      }
    }
    return { shape: [n, o, ho, wo], data: out };
  }

  scaleChannels(x: Tensor, s: Tensor): Tensor {
    const n = x.shape[0]!;
    const c = x.shape[1]!;
    const plane = numel(x.shape.slice(2));
    const out = new Float32Array(x.data.length);
    for (let bc = 0; bc < n * c; bc++) {
      const v = s.data[bc]!;
      for (let i = 0; i < plane; i++) out[bc * plane + i] = x.data[bc * plane + i]! * v;
    }
    return { shape: [...x.shape], data: out };
  }
}
