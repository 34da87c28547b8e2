/**
 * The TensorFlow.js implementation of core's op seam: differentiable tf ops. Images are NHWC
 * and kernels arrive OIHW; the layout change happens here (in the image ops) and nowhere else.
 * Backend paths kept behind the seam: the per-sample loop of {@link perSampleConv}, grouped and
 * depthwise convs of `groupedConv`, the global average pool as two one-axis means, and on wasm
 * products whose two gradients are one pass (`matMulWasm`: KW's kernel assembly).
 */
import {
  type ConvAttrs,
  KwError,
  type MixTapsAttrs,
  type Ops,
  type SampleBias,
  simplifyTranspose,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { matMulWasm } from './conv-wasm.js';
import { globalAvgPoolWasm } from './gap-wasm.js';
import {
  batchNormLast,
  groupedConv,
  layerNormLast,
  oihwBatchToHwio,
  oihwToHwio,
  perSampleConv,
} from './layers.js';
import { mixTapsWasm } from './mix-wasm.js';

function broadcastBatch(a: readonly number[], b: readonly number[]): number[] | undefined {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(Math.max(x, y));
  }
  return out;
}

/** {@link Ops} over `tf.Tensor`, bound to one layer call. */
export class TfOps implements Ops<tf.Tensor> {
  constructor(
    private readonly vars: ReadonlyMap<string, tf.LayerVariable>,
    private readonly sharedTensors: ReadonlyMap<string, tf.Tensor>,
    readonly training: boolean,
    private readonly where: string,
  ) {}

  /** Per-sample convs run on HWIO kernels (KW assembles its cells closer to that order). */
  readonly kernelLayout = 'hwio';

  param(name: string): tf.Tensor {
    const v = this.vars.get(name);
    if (!v) throw new KwError('WEIGHTS_MISSING', `${this.where}: missing tensor "${name}"`);
    return v.read();
  }

  shared(name: string): tf.Tensor {
    const t = this.sharedTensors.get(name);
    if (!t) throw new KwError('WEIGHTS_MISSING', `${this.where}: missing shared tensor "${name}"`);
    return t;
  }

  constant(data: Float32Array, shape: number[]): tf.Tensor {
    return tf.tensor(data, shape);
  }

  reshape(t: tf.Tensor, shape: number[]): tf.Tensor {
    return tf.reshape(t, shape);
  }

  transpose(t: tf.Tensor, perm: number[]): tf.Tensor {
    return tf.transpose(t, perm);
  }

  /**
   * Per-sample OIHW kernels (any shape `[N, ..., kh, kw]` in that element order) as the HWIO
   * stack `[N, kh, kw, I/g, O]`, after `transpose(k, perm)` when `perm` is given: the two
   * permutations compose into one transpose (KW's cell re-ordering goes straight to HWIO; the
   * wasm backend's Transpose is ~100x slower for some 7-D permutations than for others).
   */
  private hwioKernels(
    k: tf.Tensor,
    o: number,
    ig: number,
    kh: number,
    kw: number,
    perm: number[] | undefined,
  ): tf.Tensor {
    const s = perm ? perm.map((p) => k.shape[p]!) : k.shape;
    const r = s.length;
    if (perm && r >= 5 && s[r - 2] === kh && s[r - 1] === kw) {
      // split the middle axes into O's and I's
      let j = 1;
      let prod = 1;
      while (j <= r - 3 && prod < o) prod *= s[j++]!;
      const rest = s.slice(j, r - 2).reduce((a, d) => a * d, 1);
      if (prod === o && rest === ig) {
        const q = [0, r - 2, r - 1];
        for (let i = j; i < r - 2; i++) q.push(i);
        for (let i = 1; i < j; i++) q.push(i);
        const composed = q.map((i) => perm[i]!);
        // a permutation that only moves size-1 axes keeps the element order: no copy
        const { perm: moved } = simplifyTranspose(k.shape, composed);
        const t = moved.every((axis, i) => axis === i) ? k : tf.transpose(k, composed);
        return tf.reshape(t, [-1, kh, kw, ig, o]);
      }
    }
    return oihwBatchToHwio(perm ? tf.transpose(k, perm) : k, o, ig, kh, kw);
  }

  slice(t: tf.Tensor, axis: number, start: number, end: number): tf.Tensor {
    const begin = t.shape.map(() => 0);
    const size = t.shape.map(() => -1);
    begin[axis] = start;
    size[axis] = end - start;
    return tf.slice(t, begin, size);
  }

  concat(ts: tf.Tensor[], axis: number): tf.Tensor {
    return ts.length === 1 ? ts[0]! : tf.concat(ts, axis);
  }

  add(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.add(a, b);
  }

  mul(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.mul(a, b);
  }

  div(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.div(a, b);
  }

  addScalar(t: tf.Tensor, s: number): tf.Tensor {
    return tf.add(t, s);
  }

  mulScalar(t: tf.Tensor, s: number): tf.Tensor {
    return tf.mul(t, s);
  }

  abs(t: tf.Tensor): tf.Tensor {
    return tf.abs(t);
  }

  relu(t: tf.Tensor): tf.Tensor {
    return tf.relu(t);
  }

  sigmoid(t: tf.Tensor, temperature = 1): tf.Tensor {
    return tf.sigmoid(temperature === 1 ? t : tf.div(t, temperature));
  }

  softmax(t: tf.Tensor, temperature = 1): tf.Tensor {
    return tf.softmax(temperature === 1 ? t : tf.div(t, temperature));
  }

  sum(t: tf.Tensor, axis: number, keepDims: boolean): tf.Tensor {
    return tf.sum(t, axis, keepDims);
  }

  matMul(a: tf.Tensor, b: tf.Tensor, transB = false): tf.Tensor {
    if (b.rank === 2 && a.rank > 2) {
      // one matrix for every leading index of a: one 2-D product, no broadcast copies of b
      const k = a.shape[a.rank - 1]!;
      const a2 = tf.reshape(a, [-1, k]) as tf.Tensor2D;
      const y =
        (transB ? undefined : matMulWasm(a2, b)) ?? tf.matMul(a2, b as tf.Tensor2D, false, transB);
      return tf.reshape(y, [...a.shape.slice(0, -1), y.shape[1]!]);
    }
    const ba = a.shape.slice(0, -2);
    const bb = b.shape.slice(0, -2);
    if (ba.length !== bb.length || ba.some((d, i) => d !== bb[i])) {
      const batch = broadcastBatch(ba, bb);
      if (!batch) {
        throw new KwError(
          'TENSOR_SHAPE',
          `matMul: batch dims [${ba.join(', ')}] and [${bb.join(', ')}] do not broadcast`,
        );
      }
      a = tf.broadcastTo(a, [...batch, ...a.shape.slice(-2)]);
      b = tf.broadcastTo(b, [...batch, ...b.shape.slice(-2)]);
    }
    return tf.matMul(a, b, false, transB);
  }

  linear(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
    const w2 = tf.reshape(weight, [weight.shape[0]!, -1]) as tf.Tensor2D;
    const y = tf.matMul(x as tf.Tensor2D, w2, false, true);
    return bias ? tf.add(y, bias) : y;
  }

  batchNorm(x: tf.Tensor, prefix: string, eps: number, momentum: number): tf.Tensor {
    // one value per channel (batch 1 of [N, C]) has no batch statistics: use the running ones.
    // Core's reference executor and PyTorch refuse this in train mode instead; here a training
    // step on one image (a last batch of one, or a shard of one) still runs (docs/trainer.md).
    const count = x.size / x.shape[x.shape.length - 1]!;
    return batchNormLast(x, this.vars, prefix, eps, momentum, this.training && count > 1);
  }

  layerNorm(x: tf.Tensor, prefix: string, eps: number): tf.Tensor {
    return layerNormLast(x, this.param(`${prefix}.weight`), this.param(`${prefix}.bias`), eps);
  }

  globalAvgPool(x: tf.Tensor): tf.Tensor {
    // on wasm: one pass forward and one backward (gap-wasm.ts)
    const own = globalAvgPoolWasm(x);
    if (own) return own;
    // elsewhere two one-axis means: since the float64-accumulating Sum/Mean kernels
    // (fast-wasm.ts) they round like one mean over (H, W) (4.4e-8 vs 4.0e-8 relative at
    // 8x56x56x64) and run faster on wasm (13 vs 17 ms); re-measured 2026-11-26. Before those
    // kernels the one-shot mean rounded ~5x worse, which an attention BatchNorm (nearly equal
    // numbers subtracted) amplified.
    return tf.mean(tf.mean(x, 1), 1);
  }

  conv2d(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | undefined, a: ConvAttrs): tf.Tensor {
    const y = groupedConv(
      x as tf.Tensor4D,
      oihwToHwio(weight),
      a.groups,
      a.stride,
      a.padding,
      a.dilation,
    );
    return bias ? tf.add(y, bias) : y;
  }

  perSampleConv(
    x: tf.Tensor,
    kernels: tf.Tensor,
    a: ConvAttrs & { outChannels: number; kernelSize: [number, number] },
    bias?: SampleBias<tf.Tensor>,
    kernelPerm?: number[],
  ): tf.Tensor {
    const ig = x.shape[3]! / a.groups;
    const [kh, kw] = a.kernelSize;
    const k = this.hwioKernels(kernels, a.outChannels, ig, kh, kw, kernelPerm);
    const y = perSampleConv(x, k, a);
    if (!bias) return y;
    if ('shared' in bias) return tf.add(y, bias.shared);
    return tf.add(y, tf.reshape(bias.perSample, [-1, 1, 1, a.outChannels]));
  }

  sharedGroupsConv1x1(
    x: tf.Tensor,
    weight: tf.Tensor,
    groups: number,
    bias?: tf.Tensor,
  ): tf.Tensor {
    // in NHWC each pixel's channel groups lie one after another: x [N, H, W, G·C] is
    // [N, H, W·G, C] and the output [N, H, W·G, O] is [N, H, W, G·O], both without a copy (a
    // grouped conv would split x into G copies and concatenate G outputs)
    const [N, H, W, C] = x.shape as [number, number, number, number];
    if (C % groups !== 0 || weight.shape[1]! * groups !== C) {
      throw new KwError(
        'TENSOR_SHAPE',
        `sharedGroupsConv1x1: ${groups} groups of weight [${weight.shape.join(', ')}] do not fit ${C} input channels`,
      );
    }
    const folded = tf.reshape(x, [N, H, W * groups, C / groups]) as tf.Tensor4D;
    const y = tf.reshape(tf.conv2d(folded, oihwToHwio(weight), 1, 'valid'), [
      N,
      H,
      W,
      groups * weight.shape[0]!,
    ]);
    return bias ? tf.add(y, bias) : y;
  }

  mixTaps(x: tf.Tensor, alpha: tf.Tensor, a: MixTapsAttrs): tf.Tensor | undefined {
    // on wasm with the own kernels, where it pays (mix-wasm.ts); elsewhere core assembles
    return mixTapsWasm(x, alpha, a, a.cellOut);
  }

  scaleChannels(x: tf.Tensor, s: tf.Tensor): tf.Tensor {
    return tf.mul(x, tf.reshape(s, [-1, 1, 1, x.shape[3]!]));
  }
}
