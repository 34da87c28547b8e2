/**
 * Reference KernelWarehouse layer: attention (GAP -> fc1 -> norm -> ReLU -> fc2 [-> basis
 * map] -> CAF), kernel assembly from warehouse cells, and the per-sample convolution
 * (official KWconvNd.forward, modules/kernel_warehouse.py L96-152).
 */
import { caf } from '../kw/attention.js';
import { type KwLayerPlan, type KwWarehousePlan, kwBeta } from '../kw/plan.js';
import type { Pair } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import {
  addChannelBias,
  batchNorm,
  channelMeans,
  conv2dImage,
  layerNormChannels,
  linear,
} from './ops.js';

/** Eps of the attention's BatchNorm1d / LayerNorm (PyTorch defaults). */
export const KW_ATTENTION_NORM_EPS = 1e-5;

/** Settings for one KW forward. */
export interface KwForwardOptions {
  mode: 'inference' | 'train';
  /** tau in [0, 1]; 0 is the inference setting. */
  temperature: number;
}

/**
 * Attention of a KW layer for a batch: returns `[N * m, n]` attentions (zero cell dropped)
 * and the `[N, logits]` pre-CAF logits.
 *
 * @param w returns the tensor `<layer>.<name>`, e.g. `w('attention.fc1.weight')`.
 */
export function kwAttention(
  layer: KwLayerPlan,
  wh: KwWarehousePlan,
  x: Tensor,
  w: (name: string) => Tensor,
  opts: KwForwardOptions,
): { alpha: Float32Array; logits: Float32Array } {
  const nBatch = x.shape[0]!;
  const c = x.shape[1]!;
  const pooled: Tensor = { shape: [nBatch, c], data: channelMeans(x) };
  let h = linear(
    pooled,
    w('attention.fc1.weight'),
    wh.norm === 'layer' ? w('attention.fc1.bias') : undefined,
  );
  h =
    wh.norm === 'layer'
      ? layerNormChannels(
          h,
          w('attention.norm1.weight'),
          w('attention.norm1.bias'),
          KW_ATTENTION_NORM_EPS,
        )
      : batchNorm(
          h,
          w('attention.norm1.weight'),
          w('attention.norm1.bias'),
          w('attention.norm1.running_mean'),
          w('attention.norm1.running_var'),
          KW_ATTENTION_NORM_EPS,
          opts.mode,
          `KW layer "${layer.node}" attention norm1`,
        );
  for (let i = 0; i < h.data.length; i++) if (h.data[i]! < 0) h.data[i] = 0;
  let logits: Float32Array;
  if (layer.basis) {
    const { nLocal, nNonlocal, nBasis } = layer.basis;
    const raw = linear(h, w('attention.fc2.weight'), undefined).data; // [N, m*(nLocal+nBasis+1)]
    const fc3 = w('attention.fc3.weight').data; // [nNonlocal, nBasis]
    const bb = w('attention.basis_bias').data;
    const n = wh.n;
    const per = nLocal + nBasis + 1;
    logits = new Float32Array(nBatch * layer.logits);
    for (let r = 0; r < nBatch * layer.m; r++) {
      const src = r * per;
      const dst = r * (n + 1);
      const mix = (r % layer.m) * (n + 1);
      const nonlocal = new Float64Array(nNonlocal);
      for (let a = 0; a < nNonlocal; a++) {
        let s = 0;
        for (let b = 0; b < nBasis; b++) s += fc3[a * nBasis + b]! * raw[src + nLocal + b]!;
        nonlocal[a] = s;
      }
      // [nonlocal[:start] | local | nonlocal[start:] | zero] + basis_bias
      const start = layer.start;
      let j = 0;
      for (let a = 0; a < Math.min(start, nNonlocal); a++) logits[dst + j++] = nonlocal[a]!;
      for (let a = 0; a < nLocal; a++) logits[dst + j++] = raw[src + a]!;
      for (let a = Math.min(start, nNonlocal); a < nNonlocal; a++) logits[dst + j++] = nonlocal[a]!;
      logits[dst + j++] = raw[src + per - 1]!;
      for (let k = 0; k <= n; k++) logits[dst + k]! += bb[mix + k]!;
    }
  } else {
    logits = linear(h, w('attention.fc2.weight'), w('attention.fc2.bias')).data;
  }
  const alpha = caf(logits, nBatch * layer.m, wh.n, opts.temperature, kwBeta(layer, wh));
  return { alpha, logits };
}

/**
 * Assemble per-sample kernels: `W_b[o*c_out+co, q*c_in+ci, h, w] =
 * sum_j alpha[b*m + i, j] * E[j, co, ci]` with `i = (h*kw + w)*G_out*G_in + o*G_in + q`.
 * Returns `[N, O, I/g, kh, kw]` (or `[N, O, I]` for linear layers) flattened.
 */
export function kwAssemble(
  layer: KwLayerPlan,
  wh: KwWarehousePlan,
  alpha: Float32Array,
  warehouse: Float32Array,
  nBatch: number,
): Float32Array {
  const { m, gOut, gIn, weightShape } = layer;
  const { n, cellOut, cellIn } = wh;
  const [o, ig] = weightShape as [number, number];
  const kh = layer.kind === 'conv2d' ? weightShape[2]! : 1;
  const kw = layer.kind === 'conv2d' ? weightShape[3]! : 1;
  const perKernel = o * ig * kh * kw;
  const out = new Float32Array(nBatch * perKernel);
  const cell = cellOut * cellIn;
  const acc = new Float64Array(cell);
  for (let b = 0; b < nBatch; b++) {
    for (let i = 0; i < m; i++) {
      acc.fill(0);
      const arow = (b * m + i) * n;
      for (let j = 0; j < n; j++) {
        const a = alpha[arow + j]!;
        if (a === 0) continue;
        for (let k = 0; k < cell; k++) acc[k]! += a * warehouse[j * cell + k]!;
      }
      const s = Math.floor(i / (gOut * gIn));
      const oq = i % (gOut * gIn);
      const ob = Math.floor(oq / gIn);
      const qb = oq % gIn;
      const y = Math.floor(s / kw);
      const xk = s % kw;
      for (let co = 0; co < cellOut; co++) {
        for (let ci = 0; ci < cellIn; ci++) {
          const oc = ob * cellOut + co;
          const ic = qb * cellIn + ci;
          out[b * perKernel + ((oc * ig + ic) * kh + y) * kw + xk] = acc[co * cellIn + ci]!;
        }
      }
    }
  }
  return out;
}

/** Geometry of a KW conv layer (from its spec node). */
export interface KwConvGeometry {
  stride: Pair;
  padding: Pair;
  dilation: Pair;
  groups: number;
}

/**
 * Full KW layer forward on a batch: `[N, C, H, W]` for conv layers, `[N, C]` for linear.
 * `geometry` is ignored for linear layers.
 */
export function kwForward(
  layer: KwLayerPlan,
  wh: KwWarehousePlan,
  x: Tensor,
  w: (name: string) => Tensor,
  warehouse: Tensor,
  geometry: KwConvGeometry,
  opts: KwForwardOptions,
): Tensor {
  const nBatch = x.shape[0]!;
  const { alpha } = kwAttention(layer, wh, x, w, opts);
  const kernels = kwAssemble(layer, wh, alpha, warehouse.data, nBatch);
  const o = layer.weightShape[0]!;
  const bias = layer.biasParams ? w('bias') : undefined;
  if (layer.kind === 'linear') {
    const i = layer.weightShape[1]!;
    const out = new Float32Array(nBatch * o);
    for (let b = 0; b < nBatch; b++) {
      for (let r = 0; r < o; r++) {
        let s = bias ? bias.data[r]! : 0;
        for (let k = 0; k < i; k++) s += x.data[b * i + k]! * kernels[b * o * i + r * i + k]!;
        out[b * o + r] = s;
      }
    }
    return { shape: [nBatch, o], data: out };
  }
  const [, c, h, wd] = x.shape as [number, number, number, number];
  const [, , kh, kw] = layer.weightShape as [number, number, number, number];
  const ho =
    Math.floor(
      (h + 2 * geometry.padding[0] - geometry.dilation[0] * (kh - 1) - 1) / geometry.stride[0],
    ) + 1;
  const wo =
    Math.floor(
      (wd + 2 * geometry.padding[1] - geometry.dilation[1] * (kw - 1) - 1) / geometry.stride[1],
    ) + 1;
  const out = new Float32Array(nBatch * o * ho * wo);
  const perKernel = layer.weightShape.reduce((a, d) => a * d, 1);
  for (let b = 0; b < nBatch; b++) {
    conv2dImage(
      x.data,
      b * c * h * wd,
      c,
      h,
      wd,
      kernels,
      b * perKernel,
      o,
      kh,
      kw,
      geometry,
      out,
      b * o * ho * wo,
    );
  }
  if (bias) addChannelBias(out, bias.data, nBatch, o, ho * wo);
  return { shape: [nBatch, o, ho, wo], data: out };
}
