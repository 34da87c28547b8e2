/**
 * TensorFlow.js layers of the dynamic methods. One layer class, {@link DynamicLayer}, runs any
 * method registered in core: its forward is the method's one forward in core, run on the tf
 * implementation of the op seam ({@link TfOps}). The named subclasses ({@link CondConv2D},
 * {@link DyConv2D}, {@link ODConv2D}, {@link WeightNet2D}, {@link DOConv2D}, {@link SLaKConv2D})
 * only give saved models readable class names; a method added to core needs none.
 *
 * A layer's config (what `model.save` writes) is what the user asked for: the spec node, its
 * input shape and, for a method whose layers share tensors (KernelWarehouse), the group's
 * warehouse spec and member nodes. The layer re-plans from it on `fromConfig`.
 */
import {
  type AnalyzedSpec,
  convOutputSize,
  type DynamicNode,
  getMethod,
  KwError,
  type KwWarehouseSpec,
  type LayerContext,
  type NodeSpec,
  warehouseParamName,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import {
  convOutputShape,
  decodePayload,
  encodePayload,
  type Kwargs,
  type LayerWeightDecl,
  SpecLayerBase,
} from './layers.js';
import { TfOps } from './ops.js';

/** The spec of a group of layers sharing tensors: its warehouse(s) and member nodes in order. */
export interface GroupSpec {
  warehouses: KwWarehouseSpec[];
  members: { node: NodeSpec; inShape: number[] }[];
}

/** Constructor arguments of every method layer (what `getConfig` carries). */
export interface MethodLayerArgs {
  /** The `dynamicConv2d` / `dynamicLinear` node. */
  node: NodeSpec;
  /** Input shape without the batch, canonical (`[C, H, W]` or `[F]`). */
  inShape?: number[];
  /** For methods whose layers share tensors: the group this layer belongs to. */
  group?: GroupSpec;
  /** Layer name (default: the node id). */
  name?: string;
  /** Whether the layer's weights train (default true). */
  trainable?: boolean;
}

function methodOf(node: NodeSpec) {
  if (node.op !== 'dynamicConv2d' && node.op !== 'dynamicLinear') {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `node "${node.id}": a method layer needs a dynamicConv2d or dynamicLinear node, found op "${node.op}"`,
      { field: 'op' },
    );
  }
  const method = getMethod(node.method.kind);
  if (!method) {
    throw new KwError(
      'SPEC_UNKNOWN_METHOD',
      `node "${node.id}": method "${node.method.kind}" is not registered in core`,
      { node: node.id, actual: node.method.kind },
    );
  }
  return { node: node as DynamicNode, method };
}

/** Re-plan a group from its spec (the method's `planGroups` on the group's sub-spec). */
function planGroup(kind: string, group: GroupSpec | undefined): unknown {
  const method = getMethod(kind);
  if (!method?.planGroups || !group) return undefined;
  const shapes = new Map<string, number[]>();
  for (const m of group.members) shapes.set(m.node.inputs[0]!, m.inShape);
  const spec = { warehouses: group.warehouses, nodes: group.members.map((m) => m.node) };
  return method.planGroups({ spec, shapes } as unknown as AnalyzedSpec);
}

/**
 * A dynamic layer: its tensors are declared by the core method's `params`, its forward is the
 * core method's `forward` on {@link TfOps}. Inputs: the layer input, then (for grouped methods)
 * the group's shared tensor from a {@link SharedTensor} layer.
 */
export class DynamicLayer extends SpecLayerBase {
  /** Class name used by `serialization.registerClass`. */
  static className = 'KwDynamicLayer';
  /** What the method sees of this layer (settings, input shape, group plan). */
  readonly context: LayerContext<DynamicNode['method'], unknown>;
  readonly group: GroupSpec | undefined;
  /** KernelWarehouse's tau in [0, 1] (0 at inference); set by `setTemperature`. */
  tau = 0;
  /** DY-Conv / ODConv temperature override; set by `setMethodTemperature` (undefined: the node's). */
  methodTemperature: number | undefined;

  constructor(args: MethodLayerArgs) {
    const { node, method } = methodOf(args.node);
    const inShape = args.inShape ?? [];
    const group = planGroup(node.method.kind, args.group);
    const context = { node, settings: node.method, inShape, group };
    const decls: LayerWeightDecl[] = method.params(context).map((p) => ({
      name: p.name,
      shape: p.shape,
      trainable: p.role === 'param',
    }));
    super({ node, decls, name: args.name, trainable: args.trainable });
    this.context = context;
    this.group = args.group;
  }

  /** The method's temperature as this layer runs it (DY-Conv / ODConv: the softmax / sigmoid one). */
  get temperature(): number {
    const own = (this.context.settings as { temperature?: unknown }).temperature;
    return this.methodTemperature ?? (typeof own === 'number' ? own : 1);
  }

  set temperature(t: number) {
    this.methodTemperature = t;
  }

  /** Full name of the shared tensor this layer reads, if its method groups layers. */
  sharedName(): string | undefined {
    const group = getMethod(this.context.node.method.kind)?.groupOf?.(this.context.settings);
    return group === undefined ? undefined : warehouseParamName(group);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const n = this.context.node;
    if (n.op === 'dynamicConv2d') return convOutputShape(s, n);
    return [s[0]!, n.outFeatures];
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const xs = Array.isArray(inputs) ? inputs : [inputs];
      this.requireBatch(xs[0]!);
      const shared = new Map<string, tf.Tensor>();
      const name = this.sharedName();
      if (name !== undefined) {
        if (!xs[1]) {
          throw new KwError(
            'SPEC_UNKNOWN_WAREHOUSE',
            `layer "${this.name}": its shared tensor "${name}" is not connected`,
            { node: this.context.node.id },
          );
        }
        shared.set(name, xs[1]);
      }
      const ops = new TfOps(this.vars, shared, this.isTraining(kwargs), `layer "${this.name}"`);
      const method = getMethod(this.context.node.method.kind)!;
      return method.forward(ops, xs[0]!, {
        ...this.context,
        outShape: this.outShape(),
        temperature: this.tau,
        methodTemperature: this.methodTemperature,
      });
    });
  }

  /** Output shape without the batch, canonical. */
  private outShape(): number[] {
    const n = this.context.node;
    const s = this.context.inShape;
    if (n.op === 'dynamicLinear') return [n.outFeatures];
    const [h, w] = convOutputSize([s[1]!, s[2]!], n.kernelSize, n.stride, n.padding, n.dilation);
    return [n.outChannels, h, w];
  }

  override getConfig(): tf.serialization.ConfigDict {
    const base = tf.layers.Layer.prototype.getConfig.call(this);
    const args: MethodLayerArgs = {
      node: this.context.node,
      inShape: [...this.context.inShape],
      group: this.group,
    };
    return { ...base, payload: encodePayload(args) };
  }

  /** Rebuild from {@link DynamicLayer.getConfig} output (re-plans the group). */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    const args = decodePayload<MethodLayerArgs>(config.payload as string);
    return new cls({ ...args, name: config.name, trainable: config.trainable });
  }
}
tf.serialization.registerClass(DynamicLayer);

/** The layers of earlier releases' name for {@link DynamicLayer}. */
export const MethodConvLayer = DynamicLayer;
/** The layers of earlier releases' name for {@link DynamicLayer}. */
export type MethodConvLayer = DynamicLayer;

/**
 * One shared tensor of a model (a KernelWarehouse warehouse): a layer that owns the variable and
 * outputs it, wired as an extra input into every layer of its group, so sharing survives
 * `model.save` / `tf.loadLayersModel` with no state outside the model.
 */
export class SharedTensor extends tf.layers.Layer {
  /** Class name used by `serialization.registerClass`. */
  static className = 'KwSharedTensor';
  /** Full spec name (e.g. `warehouses.stage0`). */
  readonly specName: string;
  readonly tensorShape: number[];
  private variable: tf.LayerVariable | undefined;

  constructor(args: { specName: string; shape: number[]; name?: string }) {
    super({ name: args.name ?? args.specName });
    this.specName = args.specName;
    this.tensorShape = args.shape;
  }

  override build(): void {
    this.variable = this.addWeight(
      this.specName,
      this.tensorShape,
      'float32',
      tf.initializers.zeros(),
    );
    this.built = true;
  }

  override computeOutputShape(): tf.Shape {
    return [...this.tensorShape];
  }

  override call(): tf.Tensor {
    // a copy: a model may dispose its intermediate values, never the variable itself
    return tf.clone(this.variable!.read());
  }

  /** `[spec name, variable]`. */
  specWeights(): [string, tf.LayerVariable][] {
    return [[this.specName, this.variable!]];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      payload: encodePayload({ specName: this.specName, shape: this.tensorShape }),
    };
  }

  /** Rebuild from {@link SharedTensor.getConfig} output. */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    const p = decodePayload<{ specName: string; shape: number[] }>(config.payload as string);
    return new cls({ ...p, name: config.name });
  }
}
tf.serialization.registerClass(SharedTensor);

/** CondConv (peers.md §2): `n` experts mixed per sample by sigmoid routing. */
export class CondConv2D extends DynamicLayer {
  static override className = 'CondConv2D';
}
tf.serialization.registerClass(CondConv2D);

/** DY-Conv (peers.md §3): `K` kernels mixed per sample by a softmax attention with temperature. */
export class DyConv2D extends DynamicLayer {
  static override className = 'DyConv2D';
}
tf.serialization.registerClass(DyConv2D);

/** ODConv (peers.md §4): four attentions (channel, filter, spatial, kernel) from one hidden layer. */
export class ODConv2D extends DynamicLayer {
  static override className = 'ODConv2D';
}
tf.serialization.registerClass(ODConv2D);

/** WeightNet (peers.md §5): the kernel from a grouped FC on sigmoid gates. */
export class WeightNet2D extends DynamicLayer {
  static override className = 'WeightNet2D';
}
tf.serialization.registerClass(WeightNet2D);

/** DO-Conv, DO-DConv, DO-GConv in training form (peers.md §6); fold with `foldModel`. */
export class DOConv2D extends DynamicLayer {
  static override className = 'DOConv2D';
}
tf.serialization.registerClass(DOConv2D);

/** SLaK's decomposed large-kernel depthwise mixer in training form (peers.md §7); fold with `foldModel`. */
export class SLaKConv2D extends DynamicLayer {
  static override className = 'SLaKConv2D';
}
tf.serialization.registerClass(SLaKConv2D);

/** KernelWarehouse layer (attention, CAF, assembly from the shared warehouse, per-sample conv). */
export class KWLayer extends DynamicLayer {
  static override className = 'KWLayer';

  /** tau in [0, 1]; set by the training schedule (0 at inference). */
  override get temperature(): number {
    return this.tau;
  }

  override set temperature(t: number) {
    this.tau = t;
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

/**
 * Class names for saved models, by method kind (and `kind:op` where a method has one per op).
 * Optional: a kind not listed runs as a plain {@link DynamicLayer}.
 */
export const METHOD_LAYERS: Readonly<Record<string, new (args: MethodLayerArgs) => DynamicLayer>> =
  {
    condconv: CondConv2D,
    dyconv: DyConv2D,
    odconv: ODConv2D,
    weightnet: WeightNet2D,
    doconv: DOConv2D,
    slak: SLaKConv2D,
    kw: KWConv2D,
    'kw:dynamicLinear': KWLinear,
  };
