/**
 * KernelWarehouse layers for TensorFlow.js: {@link KWConv2D} and {@link KWLinear}. The
 * warehouse of a group is one variable, owned by the first layer of the group (saved and
 * updated once) and read by every other layer of the group.
 */
import {
  CAF_EPS,
  KwError,
  type KwLayerPlan,
  type KwWarehousePlan,
  type NodeSpec,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import {
  batchNormLast,
  convOutputShape,
  decodePayload,
  encodePayload,
  type Kwargs,
  type LayerWeightDecl,
  layerNormLast,
  perSampleConv,
} from './layers.js';

/** Eps of the attention norm (PyTorch default). */
const NORM_EPS = 1e-5;
/** Momentum of the attention BatchNorm1d (PyTorch default). */
const NORM_MOMENTUM = 0.1;

/** Shared warehouse variables, by model key and warehouse id. */
const registry = new Map<string, tf.LayerVariable>();

/** Serializable description of one KW layer. */
export interface KwLayerConfig {
  node: NodeSpec;
  decls: LayerWeightDecl[];
  layer: KwLayerPlan;
  warehouse: Pick<KwWarehousePlan, 'id' | 'n' | 'cellOut' | 'cellIn' | 'norm' | 'shape'>;
  /** Selected cell per mixture (CAF beta), length m. */
  beta: number[];
  /** True for the first layer of the group: it owns the warehouse variable. */
  owner: boolean;
  /** Key shared by the layers of one model instance. */
  modelKey: string;
  name?: string;
}

/**
 * A KernelWarehouse dynamic layer: attention (GAP, fc1, norm, ReLU, fc2 [+ non-local
 * basis], CAF), kernel assembly from the shared warehouse, and a per-sample convolution.
 */
export class KWLayer extends tf.layers.Layer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'KWLayer';
  readonly cfg: KwLayerConfig;
  /** Temperature tau in [0, 1]; set by the training schedule (0 at inference). */
  temperature = 0;
  private vars = new Map<string, tf.LayerVariable>();
  private warehouseVar: tf.LayerVariable | undefined;
  private betaOneHot: tf.Tensor2D | undefined;

  constructor(cfg: KwLayerConfig) {
    super({ name: cfg.name ?? cfg.node.id });
    this.cfg = cfg;
  }

  override build(_inputShape: tf.Shape | tf.Shape[]): void {
    const key = `${this.cfg.modelKey}/${this.cfg.warehouse.id}`;
    if (this.cfg.owner) {
      this.warehouseVar = this.addWeight(
        `warehouses.${this.cfg.warehouse.id}`,
        this.cfg.warehouse.shape,
        'float32',
        tf.initializers.zeros(),
      );
      registry.set(key, this.warehouseVar);
    } else {
      this.warehouseVar = registry.get(key);
      if (!this.warehouseVar) {
        throw new KwError(
          'SPEC_UNKNOWN_WAREHOUSE',
          `KW layer ${this.name}: warehouse "${this.cfg.warehouse.id}" has no built owner layer in this model (${key})`,
          { node: this.cfg.node.id, warehouse: this.cfg.warehouse.id },
        );
      }
    }
    for (const d of this.cfg.decls) {
      this.vars.set(
        d.name,
        this.addWeight(d.name, d.shape, 'float32', tf.initializers.zeros(), undefined, d.trainable),
      );
    }
    const { m } = this.cfg.layer;
    const n = this.cfg.warehouse.n;
    const oh = new Float32Array(m * n);
    this.cfg.beta.forEach((b, i) => {
      if (b < n) oh[i * n + b] = 1;
    });
    this.betaOneHot = tf.keep(tf.tensor2d(oh, [m, n]));
    this.built = true;
  }

  /** `[spec name, variable]` pairs this layer owns (the warehouse only when owner). */
  specWeights(): [string, tf.LayerVariable][] {
    const out: [string, tf.LayerVariable][] = this.cfg.decls.map((d) => [
      `${this.cfg.node.id}.${d.name}`,
      this.vars.get(d.name)!,
    ]);
    if (this.cfg.owner) out.unshift([`warehouses.${this.cfg.warehouse.id}`, this.warehouseVar!]);
    return out;
  }

  private v(name: string): tf.Tensor {
    return this.vars.get(name)!.read();
  }

  /** Attention `[N*m, n]` for a batch. */
  attention(x: tf.Tensor, training: boolean): tf.Tensor2D {
    const { layer, warehouse: wh } = this.cfg;
    const nb = x.shape[0]!;
    // GAP as two one-axis means: the wasm backend's one-shot mean over H*W rounds ~5x worse
    // (1.5e-6 vs 2.8e-7 relative at 28x28), and a trained attention's BatchNorm, which
    // subtracts nearly equal numbers, amplifies that rounding ~10-100x into the logits.
    const pooled = x.rank === 4 ? tf.mean(tf.mean(x, 1), 1) : x;
    let h = tf.matMul(
      pooled as tf.Tensor2D,
      this.v('attention.fc1.weight') as tf.Tensor2D,
      false,
      true,
    ) as tf.Tensor;
    if (wh.norm === 'layer') {
      h = tf.add(h, this.v('attention.fc1.bias'));
      h = layerNormLast(
        h,
        this.v('attention.norm1.weight'),
        this.v('attention.norm1.bias'),
        NORM_EPS,
      );
    } else {
      h = batchNormLast(
        h,
        this.vars,
        'attention.norm1',
        NORM_EPS,
        NORM_MOMENTUM,
        training && nb > 1,
      );
    }
    h = tf.relu(h);
    const n = wh.n;
    const m = layer.m;
    let logits: tf.Tensor2D;
    if (layer.basis) {
      const { nLocal, nNonlocal, nBasis } = layer.basis;
      const per = nLocal + nBasis + 1;
      const raw = tf.reshape(
        tf.matMul(h as tf.Tensor2D, this.v('attention.fc2.weight') as tf.Tensor2D, false, true),
        [nb * m, per],
      );
      const local = tf.slice(raw, [0, 0], [-1, nLocal]);
      const basis = tf.slice(raw, [0, nLocal], [-1, nBasis]);
      const zero = tf.slice(raw, [0, per - 1], [-1, 1]);
      const nonlocal = tf.matMul(basis, this.v('attention.fc3.weight') as tf.Tensor2D, false, true);
      const start = Math.min(layer.start, nNonlocal);
      const parts: tf.Tensor[] = [];
      if (start > 0) parts.push(tf.slice(nonlocal, [0, 0], [-1, start]));
      parts.push(local);
      if (start < nNonlocal) parts.push(tf.slice(nonlocal, [0, start], [-1, nNonlocal - start]));
      parts.push(zero);
      const bias = tf.tile(tf.reshape(this.v('attention.basis_bias'), [m, n + 1]), [nb, 1]);
      logits = tf.add(tf.concat(parts, 1), bias) as tf.Tensor2D;
    } else {
      const l = tf.add(
        tf.matMul(h as tf.Tensor2D, this.v('attention.fc2.weight') as tf.Tensor2D, false, true),
        this.v('attention.fc2.bias'),
      );
      logits = tf.reshape(l, [nb * m, n + 1]);
    }
    // CAF: (1 - tau) * z / (sum|z| + eps) + tau * beta, zero cell dropped
    const tau = this.temperature;
    const denom = tf.add(tf.sum(tf.abs(logits), 1, true), CAF_EPS);
    const scaled = tf.mul(tf.div(tf.slice(logits, [0, 0], [-1, n]), denom), 1 - tau);
    if (tau === 0) return scaled as tf.Tensor2D;
    return tf.add(scaled, tf.mul(tf.tile(this.betaOneHot!, [nb, 1]), tau)) as tf.Tensor2D;
  }

  /** Per-sample kernels `[N, kh, kw, I/g, O]` (HWIO per sample). */
  kernels(alpha: tf.Tensor2D, nb: number): tf.Tensor {
    const { layer, warehouse: wh } = this.cfg;
    const kh = layer.kind === 'conv2d' ? layer.weightShape[2]! : 1;
    const kw = layer.kind === 'conv2d' ? layer.weightShape[3]! : 1;
    const cells = tf.matMul(
      alpha,
      tf.reshape(this.warehouseVar!.read(), [wh.n, wh.cellOut * wh.cellIn]),
    );
    const t = tf.reshape(cells, [nb, kh, kw, layer.gOut, layer.gIn, wh.cellOut, wh.cellIn]);
    const hwio = tf.transpose(t, [0, 1, 2, 4, 6, 3, 5]);
    return tf.reshape(hwio, [nb, kh, kw, layer.gIn * wh.cellIn, layer.gOut * wh.cellOut]);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShape as tf.Shape;
    const n = this.cfg.node;
    if (n.op === 'dynamicConv2d') return convOutputShape(s, n);
    return [s[0]!, this.cfg.layer.weightShape[0]!];
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0]! : inputs;
      const nb = x.shape[0]!;
      const alpha = this.attention(x, kwargs.training === true);
      const k = this.kernels(alpha, nb);
      const n = this.cfg.node;
      let y: tf.Tensor;
      if (n.op === 'dynamicConv2d') {
        y = perSampleConv(x, k, n);
      } else {
        // [N, I] x [N, I, O] -> [N, O]
        const w = tf.reshape(k, [nb, k.shape[3]!, k.shape[4]!]);
        y = tf.reshape(tf.matMul(tf.reshape(x, [nb, 1, -1]), w), [nb, -1]);
      }
      return this.cfg.layer.biasParams ? tf.add(y, this.v('bias')) : y;
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    const { name: _name, ...cfg } = this.cfg;
    return { ...super.getConfig(), payload: encodePayload(cfg) };
  }

  /** Rebuild from {@link getConfig} output. */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    const cfg = decodePayload<KwLayerConfig>(config.payload as string);
    return new cls({ ...cfg, name: config.name as string });
  }
}
tf.serialization.registerClass(KWLayer);

/** KernelWarehouse 2-D convolution (a {@link KWLayer} on a `dynamicConv2d` node). */
export class KWConv2D extends KWLayer {
  static override className = 'KWConv2D';
}
tf.serialization.registerClass(KWConv2D);

/** KernelWarehouse linear layer (a {@link KWLayer} on a `dynamicLinear` node). */
export class KWLinear extends KWLayer {
  static override className = 'KWLinear';
}
tf.serialization.registerClass(KWLinear);
