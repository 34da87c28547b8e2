/**
 * TensorFlow.js layers that realise core spec nodes. Activations are NHWC inside the model;
 * every variable keeps the spec's canonical layout (OIHW conv weights, `[out, in]` linear
 * weights) so weight maps move between tfjs, the reference executor and ORT unchanged. The
 * layout change to HWIO happens inside `call`, at this adapter's edge.
 */
import { convOutputSize, KwError, type NodeSpec } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { batchNormTrainWasm } from './bn-wasm.js';
import { perSampleConvWasm } from './conv-wasm.js';
import { globalAvgPoolWasm } from './gap-wasm.js';

/** Keyword arguments tfjs passes to `Layer.call` (`training` among them). */
export type Kwargs = Record<string, unknown>;
type LayerVariable = tf.LayerVariable;

/** One declared tensor of a layer: short name (e.g. `weight`) and shape. */
export interface LayerWeightDecl {
  name: string;
  shape: number[];
  trainable: boolean;
}

/** Base of every spec layer: declared weights, addressable by their spec names. */
export abstract class SpecLayerBase extends tf.layers.Layer {
  /** The spec node this layer realises. */
  readonly node: NodeSpec;
  /** The tensors this layer owns (names relative to the node id). */
  readonly decls: LayerWeightDecl[];
  protected vars = new Map<string, LayerVariable>();

  constructor(args: {
    node: NodeSpec;
    decls: LayerWeightDecl[];
    name?: string;
    trainable?: boolean;
  }) {
    super({ name: args.name ?? args.node.id, trainable: args.trainable ?? true });
    this.node = args.node;
    this.decls = args.decls;
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    for (const d of this.decls) {
      this.vars.set(
        d.name,
        this.addWeight(d.name, d.shape, 'float32', tf.initializers.zeros(), undefined, d.trainable),
      );
    }
    this.built = true;
  }

  /**
   * Refuse an empty batch with a KwError naming the node: tfjs's kernels fail on one without
   * saying why (a split that cannot divide, a reshape that cannot infer) or trap on wasm.
   */
  protected requireBatch(x: tf.Tensor): void {
    if (x.shape[0] !== 0) return;
    throw new KwError(
      'TENSOR_SHAPE',
      `layer "${this.node.id}": the batch is empty (input shape [${x.shape.join(', ')}]); run it on N >= 1 samples`,
      { node: this.node.id, expected: 'N >= 1', actual: [...x.shape] },
    );
  }

  /** `[spec name, variable]` for every tensor this layer owns. */
  specWeights(): [string, LayerVariable][] {
    return this.decls.map((d) => [`${this.node.id}.${d.name}`, this.vars.get(d.name)!]);
  }

  /** Current value of this layer's tensor `name`. */
  protected v(name: string): tf.Tensor {
    return this.vars.get(name)!.read();
  }

  /** Whether tfjs called this layer in training mode. */
  protected isTraining(kwargs: Kwargs): boolean {
    return kwargs.training === true;
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), payload: encodePayload({ node: this.node, decls: this.decls }) };
  }

  /** Rebuild from {@link SpecLayerBase.getConfig} output. */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    const p = decodePayload<{ node: NodeSpec; decls: LayerWeightDecl[] }>(config.payload as string);
    return new cls({ ...p, name: config.name, trainable: config.trainable });
  }
}

/**
 * tfjs-layers rewrites every string and key of a layer config between camelCase and
 * snake_case when saving and loading, which would corrupt node ids and weight names. The
 * layer's own settings therefore travel as hex-encoded JSON, which both rewrites leave alone.
 */
export function encodePayload(value: unknown): string {
  const json = JSON.stringify(value);
  let out = '';
  for (let i = 0; i < json.length; i++) out += json.charCodeAt(i).toString(16).padStart(4, '0');
  return out;
}

/** Inverse of {@link encodePayload}. */
export function decodePayload<T>(hex: string): T {
  let json = '';
  for (let i = 0; i < hex.length; i += 4) {
    json += String.fromCharCode(Number.parseInt(hex.slice(i, i + 4), 16));
  }
  return JSON.parse(json) as T;
}

/** OIHW weight -> HWIO. */
export function oihwToHwio(w: tf.Tensor): tf.Tensor4D {
  return tf.transpose(w as tf.Tensor4D, [2, 3, 1, 0]);
}

/** Conv of NHWC `x` with an HWIO kernel `[kh, kw, I/g, O]` in `groups` groups. */
export function groupedConv(
  x: tf.Tensor4D,
  k: tf.Tensor4D,
  groups: number,
  stride: [number, number],
  padding: [number, number],
  dilation: [number, number],
): tf.Tensor4D {
  const pad: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [padding[0], padding[0]],
    [padding[1], padding[1]],
    [0, 0],
  ];
  if ((stride[0] > 1 || stride[1] > 1) && (dilation[0] > 1 || dilation[1] > 1)) {
    // tfjs refuses stride and dilation together: dilated conv at stride 1, then subsample
    const full = groupedConv(x, k, groups, [1, 1], padding, dilation);
    return tf.stridedSlice(full, [0, 0, 0, 0], full.shape, [
      1,
      stride[0],
      stride[1],
      1,
    ]) as tf.Tensor4D;
  }
  if (groups === 1) return tf.conv2d(x, k, stride, pad, 'NHWC', dilation);
  const cin = x.shape[3];
  const o = k.shape[3];
  if (k.shape[2] === 1 && groups === cin && o === cin) {
    // depthwise: [kh, kw, 1, C] -> [kh, kw, C, 1]
    const dk = tf.transpose(k, [0, 1, 3, 2]) as tf.Tensor4D;
    if (stride[0] === stride[1]) return tf.depthwiseConv2d(x, dk, stride, pad, 'NHWC', dilation);
  }
  const xs = tf.split(x, groups, 3);
  const ks = tf.split(k, groups, 3);
  return tf.concat(
    xs.map((xi, g) =>
      tf.conv2d(xi as tf.Tensor4D, ks[g] as tf.Tensor4D, stride, pad, 'NHWC', dilation),
    ),
    3,
  ) as tf.Tensor4D;
}

/** The conv geometry a per-sample convolution needs (a subset of a conv node). */
export interface ConvGeometryLike {
  groups: number;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
}

/**
 * The shapes and geometry {@link perSampleConv} takes, or a KwError naming what is wrong: tfjs's
 * conv ops return negative output sizes for a kernel larger than the padded image (and the
 * wasm heap is corrupt after one), accept negative padding, and drop extra kernels silently.
 */
function checkPerSampleConv(x: tf.Tensor, kernels: tf.Tensor, g: ConvGeometryLike): void {
  const fail = (code: 'TENSOR_SHAPE' | 'ARGUMENT_INVALID', what: string, actual: unknown) => {
    throw new KwError(code, `perSampleConv: ${what}`, { actual });
  };
  if (x.rank !== 4)
    fail('TENSOR_SHAPE', `x must be NHWC [N, H, W, C], found [${x.shape}]`, x.shape);
  if (kernels.rank !== 5)
    fail(
      'TENSOR_SHAPE',
      `kernels must be [N, kh, kw, C/groups, O], found [${kernels.shape}]`,
      kernels.shape,
    );
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const [kn, kh, kw, kc, o] = kernels.shape as [number, number, number, number, number];
  const int = (v: unknown, min: number) => Number.isInteger(v) && (v as number) >= min;
  if (!int(g.groups, 1))
    fail('ARGUMENT_INVALID', `groups must be an integer >= 1, found ${g.groups}`, g.groups);
  for (const [name, pair, min] of [
    ['stride', g.stride, 1],
    ['dilation', g.dilation, 1],
    ['padding', g.padding, 0],
  ] as const) {
    if (!(Array.isArray(pair) && pair.length === 2 && pair.every((v) => int(v, min))))
      fail('ARGUMENT_INVALID', `${name} must be two integers >= ${min}, found [${pair}]`, pair);
  }
  if (n < 1)
    fail('TENSOR_SHAPE', `the batch is empty (x [${x.shape}]); run it on N >= 1 samples`, x.shape);
  if (kn !== n)
    fail(
      'TENSOR_SHAPE',
      `${kn} kernels for a batch of ${n} (x [${x.shape}], kernels [${kernels.shape}])`,
      kernels.shape,
    );
  if (kc * g.groups !== c || o % g.groups !== 0)
    fail(
      'TENSOR_SHAPE',
      `kernels [${kernels.shape}] do not fit ${c} input channels in ${g.groups} group(s): need C/groups = ${c / g.groups} and O divisible by ${g.groups}`,
      kernels.shape,
    );
  const [ho, wo] = convOutputSize([h, w], [kh, kw], g.stride, g.padding, g.dilation);
  if (!(ho >= 1 && wo >= 1))
    fail(
      'TENSOR_SHAPE',
      `a ${kh}x${kw} kernel (dilation [${g.dilation}]) does not fit the ${h}x${w} image padded by [${g.padding}]: output ${ho}x${wo}`,
      [ho, wo],
    );
}

/**
 * Per-sample convolution of NHWC `x` (`[N, H, W, C]`): sample b is convolved with its own
 * HWIO kernel `kernels[b]` (`kernels` is `[N, kh, kw, I/g, O]`) in `g.groups` groups. tfjs has
 * no grouped conv over the batch: on wasm the per-sample kernels of `conv-wasm.ts` run it
 * where they apply; elsewhere the batch is split (batch 1 is one plain conv).
 */
export function perSampleConv(x: tf.Tensor, kernels: tf.Tensor, g: ConvGeometryLike): tf.Tensor {
  checkPerSampleConv(x, kernels, g);
  const own = perSampleConvWasm(x, kernels, g);
  if (own) return own;
  // tidy: a direct call must not leave the slices behind (a layer's call is tidied anyway)
  return tf.tidy(() => {
    const nb = x.shape[0]!;
    const kShape = kernels.shape.slice(1) as [number, number, number, number];
    const ks = nb === 1 ? [kernels] : tf.unstack(kernels);
    const xs = nb === 1 ? [x] : tf.split(x, nb, 0);
    const outs = xs.map((xi, b) =>
      groupedConv(
        xi as tf.Tensor4D,
        tf.reshape(ks[b]!, kShape) as tf.Tensor4D,
        g.groups,
        g.stride,
        g.padding,
        g.dilation,
      ),
    );
    return outs.length === 1 ? outs[0]! : tf.concat(outs, 0);
  });
}

/**
 * Per-sample OIHW kernels `[N, O, I/g, kh, kw]` (any shape with that element order) as the
 * HWIO stack `[N, kh, kw, I/g, O]` {@link perSampleConv} takes.
 */
export function oihwBatchToHwio(
  k: tf.Tensor,
  o: number,
  ig: number,
  kh: number,
  kw: number,
): tf.Tensor {
  const nb = k.shape[0]!;
  return tf.transpose(tf.reshape(k, [nb, o, ig, kh, kw]), [0, 3, 4, 2, 1]);
}

/** NHWC output shape `[N, H', W', O]` of a (dynamic) conv node on an NHWC input shape. */
export function convOutputShape(
  s: tf.Shape,
  n: {
    kernelSize: [number, number];
    stride: [number, number];
    padding: [number, number];
    dilation: [number, number];
    outChannels: number;
  },
): tf.Shape {
  const [h, w] = convOutputSize([s[1]!, s[2]!], n.kernelSize, n.stride, n.padding, n.dilation);
  return [s[0]!, h, w, n.outChannels];
}

/**
 * BatchNorm over the last axis of `x` (NHWC or `[N, F]`), PyTorch semantics, with the
 * parameters `<prefix>.weight`, `.bias`, `.running_mean`, `.running_var` of `vars` (prefix ''
 * for plain `weight`, ...). In training mode it uses the batch statistics and updates the
 * running ones.
 */
export function batchNormLast(
  x: tf.Tensor,
  vars: ReadonlyMap<string, LayerVariable>,
  prefix: string,
  eps: number,
  momentum: number,
  training: boolean,
): tf.Tensor {
  const at = (n: string) => vars.get(prefix ? `${prefix}.${n}` : n)!;
  const weight = at('weight').read();
  const bias = at('bias').read();
  const mean = at('running_mean');
  const variance = at('running_var');
  if (!training) {
    return tf.add(
      tf.mul(tf.sub(x, mean.read()), tf.mul(weight, tf.rsqrt(tf.add(variance.read(), eps)))),
      bias,
    );
  }
  // on wasm, the moments, normalisation and their gradient as four passes (bn-wasm.ts)
  const own = batchNormTrainWasm(x, weight, bias, eps);
  const mom = own ?? tf.moments(x, x.shape.map((_, i) => i).slice(0, -1));
  const count = x.size / x.shape[x.shape.length - 1]!;
  // running-stat update (PyTorch: unbiased variance), outside the gradient
  tf.tidy(() => {
    const m = mom.mean;
    const vUnb = tf.mul(mom.variance, count / Math.max(count - 1, 1));
    mean.write(tf.add(tf.mul(mean.read(), 1 - momentum), tf.mul(m, momentum)));
    variance.write(tf.add(tf.mul(variance.read(), 1 - momentum), tf.mul(vUnb, momentum)));
  });
  if (own) return own.y;
  return tf.add(
    tf.mul(tf.sub(x, mom.mean), tf.mul(weight, tf.rsqrt(tf.add(mom.variance, eps)))),
    bias,
  );
}

/** LayerNorm over the last axis. */
export function layerNormLast(
  x: tf.Tensor,
  weight: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
): tf.Tensor {
  const mom = tf.moments(x, -1, true);
  return tf.add(
    tf.mul(tf.mul(tf.sub(x, mom.mean), tf.rsqrt(tf.add(mom.variance, eps))), weight),
    bias,
  );
}

function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

/**
 * A plain (non-dynamic) spec node as a tfjs layer: conv2d, linear, batchNorm, layerNorm,
 * activations, add, mul, pools, global pool, flatten, dropout, identity.
 */
export class SpecNode extends SpecLayerBase {
  /** Class name used by `serialization.registerClass`. */
  static className = 'KwSpecNode';

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const n = this.node;
    switch (n.op) {
      case 'conv2d':
      case 'maxPool':
      case 'avgPool': {
        const d: [number, number] = n.op === 'conv2d' ? n.dilation : [1, 1];
        const [h, w] = convOutputSize([s[1]!, s[2]!], n.kernelSize, n.stride, n.padding, d);
        return [s[0]!, h, w, n.op === 'conv2d' ? n.outChannels : s[3]!];
      }
      case 'linear':
        return [s[0]!, n.outFeatures];
      case 'globalAvgPool':
        return [s[0]!, 1, 1, s[3]!];
      case 'flatten':
        return [s[0]!, s.slice(1).reduce((a, b) => a! * b!, 1)];
      default:
        return s;
    }
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const xs = Array.isArray(inputs) ? inputs : [inputs];
      const x = xs[0]!;
      this.requireBatch(x);
      const n = this.node;
      switch (n.op) {
        case 'conv2d': {
          const y = groupedConv(
            x as tf.Tensor4D,
            oihwToHwio(this.v('weight')),
            n.groups,
            n.stride,
            n.padding,
            n.dilation,
          );
          return n.bias ? tf.add(y, this.v('bias')) : y;
        }
        case 'linear': {
          const y = tf.matMul(x as tf.Tensor2D, this.v('weight') as tf.Tensor2D, false, true);
          return n.bias ? tf.add(y, this.v('bias')) : y;
        }
        case 'batchNorm':
          return batchNormLast(x, this.vars, '', n.eps, n.momentum, this.isTraining(kwargs));
        case 'layerNorm':
          return layerNormLast(x, this.v('weight'), this.v('bias'), n.eps);
        case 'relu':
          return tf.relu(x);
        case 'relu6':
          return tf.clipByValue(x, 0, 6);
        case 'gelu':
          return gelu(x);
        case 'sigmoid':
          return tf.sigmoid(x);
        case 'add':
          return xs.length === 1 ? x : tf.addN(xs);
        case 'mul':
          return xs.length === 2 ? tf.mul(x, xs[1]!) : tf.mul(x, this.v('gamma'));
        case 'maxPool':
        case 'avgPool': {
          const p = n.padding;
          const padded =
            p[0] || p[1]
              ? tf.pad(
                  x,
                  [
                    [0, 0],
                    [p[0], p[0]],
                    [p[1], p[1]],
                    [0, 0],
                  ],
                  n.op === 'maxPool' ? -3.4e38 : 0,
                )
              : x;
          const f = n.op === 'maxPool' ? tf.maxPool : tf.avgPool;
          return f(padded as tf.Tensor4D, n.kernelSize, n.stride, 'valid');
        }
        case 'globalAvgPool': {
          const own = globalAvgPoolWasm(x);
          return own ? tf.reshape(own, [x.shape[0]!, 1, 1, x.shape[3]!]) : tf.mean(x, [1, 2], true);
        }
        case 'flatten': {
          // flatten in NCHW order, as the spec (and the weights of the next linear) expect
          const t = x.rank === 4 ? tf.transpose(x as tf.Tensor4D, [0, 3, 1, 2]) : x;
          return tf.reshape(t, [x.shape[0]!, -1]);
        }
        default:
          return x;
      }
    });
  }
}
tf.serialization.registerClass(SpecNode);
