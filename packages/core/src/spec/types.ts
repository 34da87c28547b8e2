/**
 * The model spec: a plain, JSON-serialisable, versioned description of a network.
 *
 * A spec is a list of nodes in topological order (every input names the model input or an
 * earlier node). Activations are NCHW; shapes in a spec never include the batch dimension.
 * Weight names derive from node ids: a conv2d node `layer1.0.conv1` owns
 * `layer1.0.conv1.weight` (OIHW) and, with `bias`, `layer1.0.conv1.bias`.
 */

/** Current spec format version. */
export const SPEC_VERSION = 1 as const;

/** `[height, width]` pair. */
export type Pair = [number, number];

/** Name by which nodes refer to the model input. */
export const INPUT = 'input' as const;

interface NodeBase {
  /** Unique dotted id; also the prefix of this node's weight names. */
  id: string;
  /** Ids of the nodes (or `"input"`) this node reads. */
  inputs: string[];
}

/** Convolution geometry shared by static and dynamic 2-D convolutions. */
export interface ConvGeometry {
  outChannels: number;
  kernelSize: Pair;
  stride: Pair;
  /** Symmetric zero padding `[ph, pw]`. */
  padding: Pair;
  dilation: Pair;
  groups: number;
  bias: boolean;
}

/** Plain 2-D convolution; weight `[O, I/groups, kh, kw]`. */
export interface Conv2dNode extends NodeBase, ConvGeometry {
  op: 'conv2d';
}

/** Fully connected layer on `[F]` features; weight `[out, in]` (PyTorch layout). */
export interface LinearNode extends NodeBase {
  op: 'linear';
  outFeatures: number;
  bias: boolean;
}

/** BatchNorm over the channel axis; weights `weight`, `bias`, `running_mean`, `running_var`. */
export interface BatchNormNode extends NodeBase {
  op: 'batchNorm';
  eps: number;
  momentum: number;
}

/** LayerNorm over the channel axis only (ConvNeXt "channels_first"); weights `weight`, `bias`. */
export interface LayerNormNode extends NodeBase {
  op: 'layerNorm';
  eps: number;
}

/** Element-wise activations. GELU is the exact (erf) form. */
export interface ActivationNode extends NodeBase {
  op: 'relu' | 'relu6' | 'gelu' | 'sigmoid';
}

/** Element-wise sum of two or more inputs of equal shape. */
export interface AddNode extends NodeBase {
  op: 'add';
}

/**
 * Multiplication. With one input: a learned per-channel scale `gamma` of shape `[C]`
 * (ConvNeXt layer scale), initialised to `init`. With two inputs: element-wise product
 * where size-1 dimensions of the second input broadcast (SE gating `[C,H,W] * [C,1,1]`).
 */
export interface MulNode extends NodeBase {
  op: 'mul';
  /** Initial value of `gamma` (one-input form only). */
  init?: number;
}

/** Max or average pooling with symmetric zero padding (`avgPool` counts padding, as PyTorch). */
export interface PoolNode extends NodeBase {
  op: 'maxPool' | 'avgPool';
  kernelSize: Pair;
  stride: Pair;
  padding: Pair;
}

/** Mean over H and W: `[C,H,W] -> [C,1,1]`. */
export interface GlobalAvgPoolNode extends NodeBase {
  op: 'globalAvgPool';
}

/** `[C,H,W] -> [C*H*W]`. */
export interface FlattenNode extends NodeBase {
  op: 'flatten';
}

/** Dropout: identity at inference (and in the reference executor). */
export interface DropoutNode extends NodeBase {
  op: 'dropout';
  rate: number;
}

/** Pass-through. */
export interface IdentityNode extends NodeBase {
  op: 'identity';
}

/**
 * Reference to a dynamic-convolution method. KernelWarehouse layers name the warehouse
 * they draw their cells from; other methods carry their own settings (see the methods
 * registry).
 */
export interface KwMethodRef {
  kind: 'kw';
  /** Id of an entry of {@link ModelSpec.warehouses}. */
  warehouse: string;
}

/** Any method reference. Extended by the methods registry. */
export type DynamicMethodRef = KwMethodRef | OtherMethodRef;

/** Seam for the rest of the family (CondConv, ODConv, ...): `kind` plus method settings. */
export interface OtherMethodRef {
  kind: string;
  [setting: string]: unknown;
}

/** A 2-D convolution whose kernel is produced per sample by a dynamic method. */
export interface DynamicConv2dNode extends NodeBase, ConvGeometry {
  op: 'dynamicConv2d';
  method: DynamicMethodRef;
}

/** A linear layer whose weight is produced per sample by a dynamic method. */
export interface DynamicLinearNode extends NodeBase {
  op: 'dynamicLinear';
  outFeatures: number;
  bias: boolean;
  method: DynamicMethodRef;
}

/** Every node kind. */
export type NodeSpec =
  | Conv2dNode
  | LinearNode
  | BatchNormNode
  | LayerNormNode
  | ActivationNode
  | AddNode
  | MulNode
  | PoolNode
  | GlobalAvgPoolNode
  | FlattenNode
  | DropoutNode
  | IdentityNode
  | DynamicConv2dNode
  | DynamicLinearNode;

/** Op names. */
export type OpName = NodeSpec['op'];

/** Attention normalisation inside a KW attention module. */
export type KwAttentionNorm = 'batch' | 'layer';

/**
 * One KernelWarehouse warehouse: a bank of `n` kernel cells shared by every layer that
 * names it. Mirrors the per-warehouse settings of the official `Warehouse_Manager`.
 */
export interface KwWarehouseSpec {
  id: string;
  /** Budget b = n / m_t (official `cell_num_ratio`). Integers >= 1, or 1/p for integer p. */
  budget: number;
  /** Cell input channels = max(int(gcd_in * cellInRatio), 1). Default 1. */
  cellInRatio: number;
  /** Cell output channels = max(int(gcd_out * cellOutRatio), 1). Default 1. */
  cellOutRatio: number;
  /** Attention hidden width = max(int(C_in * reduction), 16). Default 1/16. */
  reduction: number;
  /** Attention norm: BatchNorm1d (ResNet, MobileNetV2) or LayerNorm (ConvNeXt). Default 'batch'. */
  norm: KwAttentionNorm;
  /** Non-local basis ratio (official `nonlocal_basis_ratio`); < 1 enables the basis variant. Default 1. */
  nonlocalBasisRatio: number;
}

/** A complete, validated model description. */
export interface ModelSpec {
  specVersion: typeof SPEC_VERSION;
  name: string;
  /** Per-sample input shape: `[C, H, W]` for images or `[F]` for features. */
  inputShape: number[];
  nodes: NodeSpec[];
  /** Ids of the output nodes. */
  outputs: string[];
  /** KernelWarehouse warehouses, in the official reservation order. */
  warehouses: KwWarehouseSpec[];
  /** Free-form, JSON-serialisable metadata (source, paper reference, ...). */
  meta?: Record<string, unknown>;
}
