/**
 * TensorFlow.js layers for the dynamic-convolution family beside KernelWarehouse (peers.md):
 * {@link CondConv2D}, {@link DyConv2D}, {@link ODConv2D}, {@link WeightNet2D} (input-dependent
 * kernels, run with the shared per-sample convolution of `layers.ts`), and the training forms
 * of the foldable methods, {@link DOConv2D} (DO-Conv, DO-DConv, DO-GConv) and
 * {@link SLaKConv2D}. Each computes what the method's `forward` in core's reference executor
 * computes, with the same tensor names and layouts, so `exportWeights` / `loadWeights` move
 * core weight maps unchanged.
 */
import {
  type DyConvRef,
  type DynamicConv2dNode,
  KwError,
  type NodeSpec,
  type OdConvRef,
  odConvHeads,
  type SlakRef,
  type WeightNetRef,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import {
  batchNormLast,
  convOutputShape,
  groupedConv,
  type Kwargs,
  type LayerWeightDecl,
  oihwBatchToHwio,
  oihwToHwio,
  perSampleConv,
  SpecLayerBase,
} from './layers.js';

/** Eps of ODConv's attention BatchNorm (PyTorch default, as core's reference). */
const BN_EPS = 1e-5;
/** Momentum of the BatchNorms inside the methods (PyTorch default). */
const BN_MOMENTUM = 0.1;

/** Constructor arguments of every method layer (what `getConfig` carries). */
export interface MethodLayerArgs {
  /** The `dynamicConv2d` node. */
  node: NodeSpec;
  /** The tensors the layer owns, names relative to the node id. */
  decls: LayerWeightDecl[];
  /** Layer name (default: the node id). */
  name?: string;
  /** Whether the layer's weights train (default true). */
  trainable?: boolean;
}

/** `[N, F] x W^T (+ b)` with W stored `[out, in, ...1]` (a 1×1 conv or a Linear weight). */
function fc(v: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor2D {
  const w2 = tf.reshape(weight, [weight.shape[0]!, -1]) as tf.Tensor2D;
  const y = tf.matMul(v as tf.Tensor2D, w2, false, true);
  return (bias ? tf.add(y, bias) : y) as tf.Tensor2D;
}

/**
 * Global average pool of NHWC `x` as `[N, C]`, as two one-axis means like the KW attention
 * (kw.ts): the wasm backend's one-shot mean over H*W rounds worse, and an attention BatchNorm
 * amplifies that rounding.
 */
function gap(x: tf.Tensor): tf.Tensor2D {
  return tf.mean(tf.mean(x, 1), 1) as tf.Tensor2D;
}

/** Per-sample `[N, C]` values broadcast over NHWC positions. */
function perChannel(a: tf.Tensor): tf.Tensor {
  return tf.reshape(a, [a.shape[0]!, 1, 1, a.shape[1]!]);
}

/**
 * Base of the method layers: one `dynamicConv2d` node, its declared tensors (spec names), conv
 * output shape and serialisation. Subclasses implement {@link MethodConvLayer.forward}.
 */
export abstract class MethodConvLayer extends SpecLayerBase {
  constructor(args: MethodLayerArgs) {
    super(args);
    if (args.node.op !== 'dynamicConv2d') {
      throw new KwError(
        'SPEC_BAD_FIELD',
        `node "${args.node.id}": the tfjs layer of method "${(args.node as { method?: { kind?: string } }).method?.kind}" applies to dynamicConv2d only, found op "${args.node.op}"`,
        { field: 'op', expected: 'dynamicConv2d', actual: args.node.op },
      );
    }
  }

  /** The node, as the conv node it is. */
  get conv(): DynamicConv2dNode {
    return this.node as DynamicConv2dNode;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return convOutputShape(inputShape as tf.Shape, this.conv);
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0]! : inputs;
      return this.forward(x as tf.Tensor4D, this.isTraining(kwargs));
    });
  }

  /** The method's forward on an NHWC batch; `training` selects batch statistics in BatchNorms. */
  abstract forward(x: tf.Tensor4D, training: boolean): tf.Tensor;

  /**
   * Mixture of whole kernels (CondConv experts, DY-Conv kernels): `W_b = Σ_i r[b, i] W_i`
   * (and the biases alike), then the per-sample convolution. `r` is `[N, count]`.
   */
  protected mixture(x: tf.Tensor4D, r: tf.Tensor2D): tf.Tensor {
    const n = this.conv;
    const c = x.shape[3];
    const count = r.shape[1];
    const bank = tf.reshape(this.v('weight'), [count, -1]) as tf.Tensor2D;
    const [kh, kw] = n.kernelSize;
    const k = oihwBatchToHwio(tf.matMul(r, bank), n.outChannels, c / n.groups, kh, kw);
    const y = perSampleConv(x, k, n);
    if (!n.bias) return y;
    return tf.add(y, perChannel(tf.matMul(r, this.v('bias') as tf.Tensor2D)));
  }
}

/**
 * CondConv (peers.md §2): `n` experts mixed per sample by sigmoid routing,
 * `W_b = Σ_i σ(R·GAP(x_b) + b_R)_i E_i`. Tensors `weight [n, |W|]`, `bias [n, f]`,
 * `routing_fn.weight [n, c]`, `routing_fn.bias [n]`.
 */
export class CondConv2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'CondConv2D';

  /** Sigmoid routing weights `[N, n]`. */
  routing(x: tf.Tensor4D): tf.Tensor2D {
    return tf.sigmoid(fc(gap(x), this.v('routing_fn.weight'), this.v('routing_fn.bias')));
  }

  /** Routing, kernel mixture and per-sample convolution. */
  forward(x: tf.Tensor4D): tf.Tensor {
    return this.mixture(x, this.routing(x));
  }
}
tf.serialization.registerClass(CondConv2D);

/**
 * DY-Conv (peers.md §3): `K` kernels mixed per sample by `softmax(FC2(ReLU(FC1(GAP(x)))) / τ)`.
 * τ starts at the node's `method.temperature`; {@link setMethodTemperature} changes it.
 */
export class DyConv2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'DyConv2D';
  /** Softmax temperature τ (> 0). */
  temperature: number;

  constructor(args: MethodLayerArgs) {
    super(args);
    this.temperature = ((args.node as DynamicConv2dNode).method as DyConvRef).temperature ?? 1;
  }

  /** Softmax attention `[N, K]`. */
  attention(x: tf.Tensor4D): tf.Tensor2D {
    const v = tf.relu(fc(gap(x), this.v('attention.fc1.weight')));
    const z = fc(v, this.v('attention.fc2.weight'), this.v('attention.fc2.bias'));
    return tf.softmax(tf.div(z, this.temperature)) as tf.Tensor2D;
  }

  /** Attention, kernel mixture and per-sample convolution. */
  forward(x: tf.Tensor4D): tf.Tensor {
    return this.mixture(x, this.attention(x));
  }
}
tf.serialization.registerClass(DyConv2D);

/**
 * ODConv (peers.md §4): four attentions from one hidden layer (FC, BatchNorm, ReLU), all
 * divided by τ: channel (σ), filter (σ), spatial (σ), kernel (softmax). Computed as the
 * official code does: the input is scaled by the channel attention, the per-sample kernel is
 * `Σ_k α_w,k (α_s ⊙ W_k)`, and the output is scaled by the filter attention (equal to the
 * kernel form). Skipped heads (depthwise: filter; 1×1: spatial; K = 1: kernel) are ≡ 1.
 * The attention BatchNorm uses batch statistics in training mode, except at batch size 1,
 * where it uses the running statistics (as KW's attention does).
 */
export class ODConv2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'ODConv2D';
  /** Temperature τ (> 0) of all four heads. */
  temperature: number;

  constructor(args: MethodLayerArgs) {
    super(args);
    this.temperature = ((args.node as DynamicConv2dNode).method as OdConvRef).temperature ?? 1;
  }

  /** The four attentions (`undefined` for a skipped head). */
  attentions(
    x: tf.Tensor4D,
    training: boolean,
  ): {
    channel: tf.Tensor2D;
    filter?: tf.Tensor2D;
    spatial?: tf.Tensor2D;
    kernel?: tf.Tensor2D;
  } {
    const n = this.conv;
    const nb = x.shape[0];
    const c = x.shape[3];
    const m = n.method as OdConvRef;
    const heads = odConvHeads(
      c,
      n.outChannels,
      n.groups,
      n.kernelSize[0],
      n.kernelSize[1],
      m.kernels,
    );
    const z = fc(gap(x), this.v('attention.fc.weight'));
    const v = tf.relu(
      batchNormLast(z, this.vars, 'attention.bn', BN_EPS, BN_MOMENTUM, training && nb > 1),
    );
    const logits = (name: string) =>
      tf.div(
        fc(v, this.v(`attention.${name}.weight`), this.v(`attention.${name}.bias`)),
        this.temperature,
      ) as tf.Tensor2D;
    return {
      channel: tf.sigmoid(logits('channel_fc')),
      filter: heads.filter ? tf.sigmoid(logits('filter_fc')) : undefined,
      spatial: heads.spatial ? tf.sigmoid(logits('spatial_fc')) : undefined,
      kernel: heads.kernel ? tf.softmax(logits('kernel_fc')) : undefined,
    };
  }

  /** Attentions, per-sample kernel assembly, scaled per-sample convolution. */
  forward(x: tf.Tensor4D, training: boolean): tf.Tensor {
    const n = this.conv;
    const nb = x.shape[0];
    const c = x.shape[3];
    const f = n.outChannels;
    const cg = c / n.groups;
    const [kh, kw] = n.kernelSize;
    const a = this.attentions(x, training);
    const w = this.v('weight');
    const K = w.shape[0]!;
    const bank = tf.reshape(w, [K, -1]) as tf.Tensor2D;
    // Σ_k α_w,k W_k per sample ([N, f·cg·kh·kw]); K = 1 is the one kernel for every sample
    let mixed: tf.Tensor = a.kernel ? tf.matMul(a.kernel, bank) : tf.tile(bank, [nb, 1]);
    if (a.spatial) {
      mixed = tf.mul(
        tf.reshape(mixed, [nb, f * cg, kh * kw]),
        tf.reshape(a.spatial, [nb, 1, kh * kw]),
      );
    }
    const k = oihwBatchToHwio(mixed, f, cg, kh, kw);
    const y = perSampleConv(tf.mul(x, perChannel(a.channel)), k, n);
    return a.filter ? tf.mul(y, perChannel(a.filter)) : y;
  }
}
tf.serialization.registerClass(ODConv2D);

/**
 * WeightNet (peers.md §5): `x_g = Reduce(GAP(x))`, `α = σ(FC1(x_g))`, kernel `= FC2(α)` with
 * FC2 grouped (group t of T reads `α[t·λ .. t·λ+λ)` and writes `S` kernel entries). Standard
 * (`groups = 1`) and depthwise layouts, as core's reference.
 */
export class WeightNet2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'WeightNet2D';

  /** Per-sample flattened OIHW kernels `[N, T·S]`. */
  kernels(x: tf.Tensor4D): tf.Tensor2D {
    const nb = x.shape[0];
    const { M, G } = this.conv.method as WeightNetRef;
    const lambda = M / G;
    const fc2 = this.v('wn_fc2.weight'); // [T·S, λ, 1, 1]
    const xg = fc(gap(x), this.v('reduce.weight'), this.v('reduce.bias'));
    const alpha = tf.sigmoid(fc(xg, this.v('wn_fc1.weight'), this.v('wn_fc1.bias')));
    const T = alpha.shape[1] / lambda;
    const S = fc2.shape[0]! / T;
    const k = tf.sum(
      tf.mul(tf.reshape(alpha, [nb, T, 1, lambda]), tf.reshape(fc2, [1, T, S, lambda])),
      3,
    );
    return tf.reshape(k, [nb, T * S]) as tf.Tensor2D;
  }

  /** Kernel generation and per-sample convolution. */
  forward(x: tf.Tensor4D): tf.Tensor {
    const n = this.conv;
    const [kh, kw] = n.kernelSize;
    const k = oihwBatchToHwio(this.kernels(x), n.outChannels, x.shape[3] / n.groups, kh, kw);
    return perSampleConv(x, k, n);
  }
}
tf.serialization.registerClass(WeightNet2D);

/**
 * DO-Conv, DO-DConv and DO-GConv in their training (over-parameterised) form (peers.md §6):
 * every call composes the OIHW kernel from `W [f, c/g, D_mul]` and `D + d_diag [c, kh·kw, D_mul]`
 * with the official index rule (row q of W uses depthwise row `q mod c`), then runs one plain
 * (grouped) conv. A 1×1 kernel has no D: W is the kernel. Fold with `foldModel` for inference.
 */
export class DOConv2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'DOConv2D';

  /** The composed OIHW kernel `[f, c/g, kh, kw]`. */
  composedKernel(c: number): tf.Tensor4D {
    const n = this.conv;
    const f = n.outChannels;
    const cg = c / n.groups;
    const [kh, kw] = n.kernelSize;
    const w = this.v('W');
    if (kh * kw === 1) return tf.reshape(w, [f, cg, kh, kw]);
    const dMul = w.shape[2]!;
    const dd = tf.add(this.v('D'), this.v('d_diag')); // [c, MN, D_mul]
    // rows q = r·c + i of W's f·c/g rows read D row i: tile D over the f/g repeats
    const rows = tf.tile(dd, [f / n.groups, 1, 1]);
    const k = tf.sum(tf.mul(rows, tf.reshape(w, [f * cg, 1, dMul])), 2);
    return tf.reshape(k, [f, cg, kh, kw]);
  }

  /** Compose the kernel, then one conv (+ bias). */
  forward(x: tf.Tensor4D): tf.Tensor {
    const n = this.conv;
    const y = groupedConv(
      x,
      oihwToHwio(this.composedKernel(x.shape[3])),
      n.groups,
      n.stride,
      n.padding,
      n.dilation,
    );
    return n.bias ? tf.add(y, this.v('bias')) : y;
  }
}
tf.serialization.registerClass(DOConv2D);

/**
 * SLaK's decomposed large-kernel depthwise mixer in its training form (peers.md §7):
 * `BN(DW_{K×N}(x)) + BN(DW_{N×K}(x)) [+ BN(DW_{N×N}(x)) when N < K]`, each branch "same"
 * padded. The BatchNorms use batch statistics in training mode. Fold with `foldModel` for
 * inference (two strips or one K×K kernel, as the node's `method.fold` says).
 */
export class SLaKConv2D extends MethodConvLayer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'SLaKConv2D';

  /** Sum of the BN-normalised branches. */
  forward(x: tf.Tensor4D, training: boolean): tf.Tensor {
    const c = x.shape[3];
    const m = this.conv.method as SlakRef;
    const outs: tf.Tensor[] = [];
    for (const b of ['LoRA1', 'LoRA2', 'small_conv']) {
      if (!this.vars.has(`${b}.conv.weight`)) continue;
      const w = this.v(`${b}.conv.weight`); // [C, 1, h, w]
      const h = w.shape[2]!;
      const ww = w.shape[3]!;
      const y = groupedConv(x, oihwToHwio(w), c, [1, 1], [(h - 1) / 2, (ww - 1) / 2], [1, 1]);
      outs.push(batchNormLast(y, this.vars, `${b}.bn`, m.eps, BN_MOMENTUM, training));
    }
    return tf.addN(outs);
  }
}
tf.serialization.registerClass(SLaKConv2D);

/** The tfjs layer class of each non-KW method kind. */
export const METHOD_LAYERS: Readonly<
  Record<string, new (args: MethodLayerArgs) => MethodConvLayer>
> = {
  condconv: CondConv2D,
  dyconv: DyConv2D,
  odconv: ODConv2D,
  weightnet: WeightNet2D,
  doconv: DOConv2D,
  slak: SLaKConv2D,
};
