/**
 * ONNX subgraphs of the dynamic methods that have no inference-time fold (CondConv, DY-Conv,
 * ODConv, WeightNet), and the pieces they share with KernelWarehouse: the global average pool
 * of the attention branch and the per-sample convolution. Each method computes its per-sample
 * kernel `[N, O, C/g, kh, kw]` (and, where it has one, a per-sample bias `[N, O]`) with standard
 * ops; {@link perSampleConv} then applies it with the batch dimension kept dynamic (im2col +
 * one batched MatMul) or, for a fixed batch, as one grouped Conv.
 */
import {
  type DyConvRef,
  dyConvHidden,
  foldBnIntoDepthwise,
  KwError,
  type NodeSpec,
  type OdConvRef,
  odConvHeads,
  odConvHidden,
  type Tensor,
  type WeightNetRef,
  weightNetReduce,
} from '@kernelwarehouse/core';
import type { GraphBuilder } from './onnx.js';

type ConvNode = NodeSpec & { op: 'dynamicConv2d' };
type DynNode = NodeSpec & { op: 'dynamicConv2d' | 'dynamicLinear' };

/** The eps of ODConv's attention BatchNorm (PyTorch's BatchNorm2d default, as the reference). */
const ODCONV_BN_EPS = 1e-5;

/**
 * GAP `[N, C, H, W]` -> `[N, C]` as two one-axis means (W, then H). A one-shot mean over H*W
 * rounds worse, and an attention's BatchNorm, which subtracts nearly equal numbers, amplifies
 * that rounding 10-100x into the logits (a trained KW ResNet8 1/2x on MNIST: ONNX vs the float64
 * reference 3.9e-5 with GlobalAveragePool, 2.9e-6 with this). Rank-2 inputs pass through.
 */
export function gapNC(g: GraphBuilder, x: string, inRank: number): string {
  if (inRank !== 3) return x;
  return g.op('ReduceMean', [g.op('ReduceMean', [x], { axes: [3], keepdims: 0 })], {
    axes: [2],
    keepdims: 0,
  });
}

/** `v [N, in] -> v W^T + b` with `W` stored `[out, in]` (a Linear or a 1x1 conv). */
export function dense(
  g: GraphBuilder,
  v: string,
  name: string,
  weight: Float32Array,
  out: number,
  inF: number,
  bias?: Float32Array,
): string {
  return g.op(
    'Gemm',
    [
      v,
      g.float(`${name}.w`, [out, inF], weight),
      g.float(`${name}.b`, [out], bias ?? new Float32Array(out)),
    ],
    { transB: 1 },
  );
}

/**
 * Fold an inference BatchNorm into the layer before it (core's `foldBnIntoDepthwise`, which
 * scales row r of `weight` by `gamma[r] / sqrt(var[r] + eps)`): a layer bias b enters as a
 * shifted mean, `beta + (b - mean) * scale`. Convs and FCs alike.
 */
export function foldBnRows(
  weight: Float32Array,
  bias: Float32Array | undefined,
  rows: number,
  bn: { gamma: Float32Array; beta: Float32Array; mean: Float32Array; variance: Float32Array },
  eps: number,
): { weight: Float32Array; bias: Float32Array } {
  const mean = bias ? Float32Array.from(bn.mean, (m, r) => m - bias[r]!) : bn.mean;
  return foldBnIntoDepthwise(weight, rows, bn.gamma, bn.beta, mean, bn.variance, eps);
}

/** A per-sample bias: one vector for all samples, or a `[N, O]` value. */
export type SampleBias = { shared: Float32Array } | { perSample: string } | undefined;

/**
 * Convolve each sample with its own kernel. `kernel` is any value whose rows are the samples'
 * kernels in `[O, C/g, kh, kw]` order (`[N, O, C/g, kh, kw]` or `[N, O*C/g*kh*kw]`).
 * `batch` undefined: dynamic batch, im2col (a static one-hot depthwise Conv) + one batched
 * MatMul. `batch` set: the batch folded into the channels and one Conv with
 * `group = batch x groups` (the PyTorch formulation; `group` is a static attribute).
 */
export function perSampleConv(
  g: GraphBuilder,
  x: string,
  id: string,
  conv: ConvNode,
  kernel: string,
  inShape: number[],
  outShape: number[],
  batch: number | undefined,
  bias: SampleBias,
): string {
  const [kh, kw] = conv.kernelSize;
  const groups = conv.groups;
  const o = conv.outChannels;
  const cin = inShape[0]!;
  const cg = cin / groups;
  const og = o / groups;
  const addBias = (y: string) => {
    if (!bias) return y;
    if ('shared' in bias) return g.op('Add', [y, g.float(`${id}.bias`, [o, 1, 1], bias.shared)]);
    return g.op('Add', [y, g.op('Reshape', [bias.perSample, g.int64('shape', [-1, o, 1, 1])])]);
  };
  const pads = [conv.padding[0], conv.padding[1], conv.padding[0], conv.padding[1]];
  if (batch !== undefined) {
    const wk = g.op('Reshape', [kernel, g.int64('shape', [batch * o, cg, kh, kw])]);
    const xr = g.op('Reshape', [x, g.int64('shape', [1, batch * cin, inShape[1]!, inShape[2]!])]);
    const y = g.op('Conv', [xr, wk], {
      kernel_shape: [kh, kw],
      strides: conv.stride,
      pads,
      dilations: conv.dilation,
      group: batch * groups,
    });
    return addBias(g.op('Reshape', [y, g.int64('shape', [batch, o, outShape[1]!, outShape[2]!])]));
  }
  const k = g.op('Reshape', [kernel, g.int64('shape', [-1, groups, og, cg * kh * kw])]);
  const L = outShape[1]! * outShape[2]!;
  const simple =
    kh === 1 &&
    kw === 1 &&
    conv.stride[0] === 1 &&
    conv.stride[1] === 1 &&
    conv.padding[0] === 0 &&
    conv.padding[1] === 0;
  let patches: string;
  if (simple) {
    patches = g.op('Reshape', [x, g.int64('shape', [-1, groups, cg, L])]);
  } else {
    const k2 = kh * kw;
    // one-hot depthwise kernel that copies each input channel's kh*kw taps to their own channels
    const im2col = g.shared(`im2col:${cin}:${kh}:${kw}`, () => {
      const onehot = new Float32Array(cin * k2 * k2);
      for (let ch = 0; ch < cin; ch++)
        for (let s = 0; s < k2; s++) onehot[(ch * k2 + s) * k2 + s] = 1;
      return g.float('im2col', [cin * k2, 1, kh, kw], onehot);
    });
    const cols = g.op('Conv', [x, im2col], {
      kernel_shape: [kh, kw],
      strides: conv.stride,
      pads,
      dilations: conv.dilation,
      group: cin,
    });
    patches = g.op('Reshape', [cols, g.int64('shape', [-1, groups, cg * k2, L])]);
  }
  return addBias(
    g.op('Reshape', [
      g.op('MatMul', [k, patches]),
      g.int64('shape', [-1, o, outShape[1]!, outShape[2]!]),
    ]),
  );
}

/** `z / t` unless t = 1 (the reference divides too, so the rounding matches). */
function withTemperature(g: GraphBuilder, z: string, t: number): string {
  return t === 1 ? z : g.op('Div', [z, g.scalar('temperature', t)]);
}

/**
 * The subgraph of a CondConv / DY-Conv / ODConv / WeightNet layer at inference (attention
 * BatchNorms on their running statistics, each method at the temperature its spec states).
 */
export function methodLayer(
  g: GraphBuilder,
  x: string,
  node: DynNode,
  W: (name: string) => Tensor,
  inShape: number[],
  outShape: number[],
  batch: number | undefined,
): string {
  const id = node.id;
  const kind = node.method.kind;
  if (node.op !== 'dynamicConv2d') {
    throw new KwError(
      'SPEC_UNKNOWN_METHOD',
      `node "${id}": ONNX export of method "${kind}" on ${node.op} is not supported (it makes conv kernels only)`,
    );
  }
  const w = (n: string) => W(`${id}.${n}`).data;
  const c = inShape[0]!;
  const f = node.outChannels;
  const [kh, kw] = node.kernelSize;
  const cg = c / node.groups;
  const size = f * cg * kh * kw;
  const pooled = gapNC(g, x, inShape.length);
  const tail = (kernel: string, bias: SampleBias) =>
    perSampleConv(g, x, id, node, kernel, inShape, outShape, batch, bias);
  switch (kind) {
    case 'condconv': {
      // r = sigmoid(R GAP(x) + b_R) [N, n]; W_b = r E [N, |W|]; bias_b = r B [N, f]
      const n = W(`${id}.routing_fn.weight`).shape[0]!;
      const r = g.op('Sigmoid', [
        dense(g, pooled, `${id}.routing`, w('routing_fn.weight'), n, c, w('routing_fn.bias')),
      ]);
      const kernel = g.op('MatMul', [r, g.float(`${id}.experts`, [n, size], w('weight'))]);
      const bias: SampleBias = node.bias
        ? { perSample: g.op('MatMul', [r, g.float(`${id}.expert_bias`, [n, f], w('bias'))]) }
        : undefined;
      return tail(kernel, bias);
    }
    case 'dyconv': {
      // pi = softmax(fc2(relu(fc1 GAP(x))) / T) [N, K]; W_b = pi W [N, |W|]
      const m = node.method as DyConvRef;
      const K = m.kernels;
      const h = dyConvHidden(c, K, m.ratio);
      const hid = g.op('Relu', [dense(g, pooled, `${id}.fc1`, w('attention.fc1.weight'), h, c)]);
      const z = dense(
        g,
        hid,
        `${id}.fc2`,
        w('attention.fc2.weight'),
        K,
        h,
        w('attention.fc2.bias'),
      );
      const pi = g.op('Softmax', [withTemperature(g, z, m.temperature)], { axis: -1 });
      const kernel = g.op('MatMul', [pi, g.float(`${id}.kernels`, [K, size], w('weight'))]);
      const bias: SampleBias = node.bias
        ? { perSample: g.op('MatMul', [pi, g.float(`${id}.kernel_bias`, [K, f], w('bias'))]) }
        : undefined;
      return tail(kernel, bias);
    }
    case 'odconv':
      return tail(odConvKernelGraph(g, pooled, node, w, c), undefined);
    case 'weightnet':
      return tail(weightNetKernelGraph(g, pooled, node, w, c), undefined);
    default:
      throw new KwError(
        'SPEC_UNKNOWN_METHOD',
        `node "${id}": ONNX export of method "${kind}" is not supported`,
      );
  }
}

/**
 * ODConv's kernel `W_b[o, j, s] = a_f[o] a_c[i(o, j)] a_s[s] sum_k a_w,k W_k[o, j, s]`, laid out
 * `[N, g, f/g, c/g, kh*kw]` so that each attention is a broadcast Mul: filter `[N, g, f/g, 1, 1]`,
 * channel `[N, g, 1, c/g, 1]` (input channel i = group * c/g + j), spatial `[N, 1, 1, 1, kh*kw]`.
 * Skipped heads (depthwise: no filter head; 1x1: no spatial head; K = 1: no kernel head) are 1.
 */
function odConvKernelGraph(
  g: GraphBuilder,
  pooled: string,
  node: ConvNode,
  w: (n: string) => Float32Array,
  c: number,
): string {
  const id = node.id;
  const m = node.method as OdConvRef;
  const f = node.outChannels;
  const groups = node.groups;
  const [kh, kw] = node.kernelSize;
  const mn = kh * kw;
  const K = m.kernels;
  const a = odConvHidden(c, m.reduction, m.minHidden);
  const heads = odConvHeads(c, f, groups, kh, kw, K);
  // fc (no bias) with the attention BatchNorm folded in (running statistics)
  const folded = foldBnRows(
    w('attention.fc.weight'),
    undefined,
    a,
    {
      gamma: w('attention.bn.weight'),
      beta: w('attention.bn.bias'),
      mean: w('attention.bn.running_mean'),
      variance: w('attention.bn.running_var'),
    },
    ODCONV_BN_EPS,
  );
  const v = g.op('Relu', [dense(g, pooled, `${id}.fc`, folded.weight, a, c, folded.bias)]);
  const head = (name: string, out: number, act: 'Sigmoid' | 'Softmax') => {
    const z = withTemperature(
      g,
      dense(
        g,
        v,
        `${id}.${name}`,
        w(`attention.${name}.weight`),
        out,
        a,
        w(`attention.${name}.bias`),
      ),
      m.temperature,
    );
    return act === 'Softmax' ? g.op('Softmax', [z], { axis: -1 }) : g.op('Sigmoid', [z]);
  };
  const cg = c / groups;
  const og = f / groups;
  const shape5 = (dims: number[]) => g.int64('shape', dims);
  const bank = g.float(`${id}.kernels`, [K, f * cg * mn], w('weight'));
  let kernel = heads.kernel ? g.op('MatMul', [head('kernel_fc', K, 'Softmax'), bank]) : bank; // K = 1: [1, |W|], broadcast over the batch by the Muls below
  kernel = g.op('Reshape', [kernel, shape5([-1, groups, og, cg, mn])]);
  const channel = g.op('Reshape', [
    head('channel_fc', c, 'Sigmoid'),
    shape5([-1, groups, 1, cg, 1]),
  ]);
  let scale = channel;
  if (heads.filter) {
    const filter = g.op('Reshape', [
      head('filter_fc', f, 'Sigmoid'),
      shape5([-1, groups, og, 1, 1]),
    ]);
    scale = g.op('Mul', [filter, channel]);
  }
  if (heads.spatial) {
    const spatial = g.op('Reshape', [head('spatial_fc', mn, 'Sigmoid'), shape5([-1, 1, 1, 1, mn])]);
    scale = g.op('Mul', [scale, spatial]);
  }
  return g.op('Mul', [scale, kernel]);
}

/**
 * WeightNet's kernel: `x_g = Reduce(GAP(x))`, `alpha = sigmoid(FC1 x_g)` `[N, T*lambda]`, and
 * the grouped FC2 as one broadcast MatMul `[T, S, lambda] x [N, T, lambda, 1] -> [N, T, S, 1]`,
 * whose rows are the kernel in `[O, C/g, kh, kw]` order (standard: T = G*f, S = c*k^2/G;
 * depthwise: T = c, S = k^2).
 */
function weightNetKernelGraph(
  g: GraphBuilder,
  pooled: string,
  node: ConvNode,
  w: (n: string) => Float32Array,
  c: number,
): string {
  const id = node.id;
  const { M, G } = node.method as WeightNetRef;
  const f = node.outChannels;
  const [kh, kw] = node.kernelSize;
  const lambda = M / G;
  const depthwise = node.groups === c && f === c;
  const T = depthwise ? c : G * f;
  const S = depthwise ? kh * kw : (c * kh * kw) / G;
  const cgr = weightNetReduce(c);
  const xg = dense(g, pooled, `${id}.reduce`, w('reduce.weight'), cgr, c, w('reduce.bias'));
  const alpha = g.op('Sigmoid', [
    dense(g, xg, `${id}.wn_fc1`, w('wn_fc1.weight'), T * lambda, cgr, w('wn_fc1.bias')),
  ]);
  const a4 = g.op('Reshape', [alpha, g.int64('shape', [-1, T, lambda, 1])]);
  return g.op('MatMul', [g.float(`${id}.wn_fc2`, [T, S, lambda], w('wn_fc2.weight')), a4]);
}
