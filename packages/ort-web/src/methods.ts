/**
 * The ONNX fast paths behind the op seam (`ops.ts`): the global average pool as two one-axis
 * means, BatchNorm folding into the layer before it, and the per-sample convolution with the
 * batch dimension kept dynamic (a `Scan` of per-sample Convs, or im2col + one batched MatMul) or,
 * for a fixed batch, as one grouped Conv.
 */
import { foldBnIntoDepthwise, type NodeSpec } from '@kernelwarehouse/core';
import { GraphBuilder, onnxPads } from './onnx.js';

export type ConvNode = NodeSpec & { op: 'dynamicConv2d' };

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
 * `batch` undefined: dynamic batch, with `scan` a `Scan` over the samples whose body is one
 * plain Conv (the sample `[C, H, W]` unsqueezed to a batch of one, its kernel
 * `[O, C/g, kh, kw]`; the scan output `[N, 1, O, H', W']` reshaped), else im2col (a static
 * one-hot depthwise Conv) + one batched MatMul. `batch` set: the batch folded into the channels
 * and one Conv with `group = batch x groups` (the PyTorch formulation; `group` is a static
 * attribute).
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
  scan = false,
): string {
  const [kh, kw] = conv.kernelSize;
  const groups = conv.groups;
  const o = conv.outChannels;
  const cin = inShape[0]!;
  const cg = cin / groups;
  const og = o / groups;
  const addBias = (y: string) => addSampleBias(g, y, id, o, bias);
  if (batch !== undefined) {
    const wk = g.op('Reshape', [kernel, g.int64('shape', [batch * o, cg, kh, kw])]);
    const xr = g.op('Reshape', [x, g.int64('shape', [1, batch * cin, inShape[1]!, inShape[2]!])]);
    const y = g.op('Conv', [xr, wk], {
      kernel_shape: [kh, kw],
      strides: conv.stride,
      pads: onnxPads(conv.padding),
      dilations: conv.dilation,
      group: batch * groups,
    });
    return addBias(g.op('Reshape', [y, g.int64('shape', [batch, o, outShape[1]!, outShape[2]!])]));
  }
  if (scan) {
    const ks = g.op('Reshape', [kernel, g.int64('shape', [-1, o, cg, kh, kw])]);
    const y = scanSamples(
      g,
      id,
      [
        { value: x, dims: inShape, prefix: 'sample' },
        { value: ks, dims: [o, cg, kh, kw], prefix: 'kernel' },
      ],
      outShape,
      (body, [xi, ki]) => sampleConv(body, xi!, ki!, conv),
    );
    return addBias(y);
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
    const cols = im2col(g, x, conv, cin);
    patches = g.op('Reshape', [cols, g.int64('shape', [-1, groups, cg * kh * kw, L])]);
  }
  return addBias(
    g.op('Reshape', [
      g.op('MatMul', [k, patches]),
      g.int64('shape', [-1, o, outShape[1]!, outShape[2]!]),
    ]),
  );
}

/**
 * One sample's conv in a `Scan` body: the sample `[C, H, W]` unsqueezed to a batch of one, its
 * kernel `[O, C/g, kh, kw]`; `[1, O, H', W']`.
 */
export function sampleConv(
  body: GraphBuilder,
  sample: string,
  kernel: string,
  conv: ConvNode,
): string {
  const [kh, kw] = conv.kernelSize;
  return body.op('Conv', [body.op('Unsqueeze', [sample, body.int64('axes', [0])]), kernel], {
    kernel_shape: [kh, kw],
    strides: conv.stride,
    pads: onnxPads(conv.padding),
    dilations: conv.dilation,
    group: conv.groups,
  });
}

/**
 * An ONNX `Scan` over the batch: `scanned` values `[N, ...dims]` are read a sample at a time by
 * the body `make` builds (its inputs, the samples' `[...dims]`, in order), whose one output is
 * `[1, ...outShape]`; returns the stacked output reshaped to `[N, ...outShape]`. The body's
 * names are drawn from the outer graph's (a subgraph value never shadows one), and it may read
 * the outer graph's values (initializers: the warehouse, onnxruntime's packed constant there too).
 */
export function scanSamples(
  g: GraphBuilder,
  id: string,
  scanned: { value: string; dims: number[]; prefix: string }[],
  outShape: number[],
  make: (body: GraphBuilder, inputs: string[]) => string,
): string {
  const body = new GraphBuilder(g);
  const inputs = scanned.map((s) => body.input(body.unused(s.prefix), s.dims));
  body.outputValue(make(body, inputs), [1, ...outShape]);
  const ys = g.op(
    'Scan',
    scanned.map((s) => s.value),
    { body: { graph: body.graph(`${id}.scan`) }, num_scan_inputs: scanned.length },
  );
  return g.op('Reshape', [ys, g.int64('shape', [-1, ...outShape])]);
}

/** `y [N, O, H, W]` plus a per-sample conv's bias, if any. */
export function addSampleBias(
  g: GraphBuilder,
  y: string,
  id: string,
  o: number,
  bias: SampleBias,
): string {
  if (!bias) return y;
  if ('shared' in bias) return g.op('Add', [y, g.float(`${id}.bias`, [o, 1, 1], bias.shared)]);
  return g.op('Add', [y, g.op('Reshape', [bias.perSample, g.int64('shape', [-1, o, 1, 1])])]);
}

/**
 * The im2col patches of a conv's input as a static one-hot depthwise `Conv`:
 * `[N, C·kh·kw, H_out, W_out]`, channel `c·kh·kw + t` holding tap `t` of input channel `c`. The
 * one-hot kernel is the same for every channel: the file holds one channel's (`kh·kw` taps) and
 * a `Tile` over the channels, which onnxruntime folds at session creation (a 512-channel 3x3
 * kernel stored whole was 166 KB); made once per (channels, kernel size), in `consts` (the outer
 * graph of a `Scan` body, which reads it from there: a `Tile` in the body would run every step).
 */
export function im2col(
  g: GraphBuilder,
  x: string,
  conv: ConvNode,
  cin: number,
  consts: GraphBuilder = g,
): string {
  const [kh, kw] = conv.kernelSize;
  const k2 = kh * kw;
  const one = consts.shared(`im2col:${kh}:${kw}`, () => {
    const data = new Float32Array(k2 * k2);
    for (let s = 0; s < k2; s++) data[s * k2 + s] = 1;
    return consts.float('im2col', [k2, 1, kh, kw], data);
  });
  const onehot = consts.shared(`im2col:${cin}:${kh}:${kw}`, () =>
    consts.op('Tile', [one, consts.int64('repeats', [cin, 1, 1, 1])]),
  );
  return g.op('Conv', [x, onehot], {
    kernel_shape: [kh, kw],
    strides: conv.stride,
    pads: onnxPads(conv.padding),
    dilations: conv.dilation,
    group: cin,
  });
}
