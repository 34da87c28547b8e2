import type { ParamDecl } from '../params.js';
import type { Rng } from '../rng.js';
import type {
  DynamicConv2dNode,
  DynamicLinearNode,
  NodeSpec,
  OtherMethodRef,
} from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { condConvMethod } from './condconv.js';
import { doConvMethod } from './doconv.js';
import { dyConvMethod } from './dyconv.js';
import { odConvMethod } from './odconv.js';
import { slakMethod } from './slak.js';
import { weightNetMethod } from './weightnet.js';

/** A dynamic node as a method sees it. */
export type DynamicNode = DynamicConv2dNode | DynamicLinearNode;

/** Per-image multiply-accumulate counts of one layer, split as `kw plan` reports them. */
export interface LayerMacs {
  /** The convolution (or matmul) itself. */
  conv: number;
  /** The attention / routing branch: its global average pool (one MAC per input element) and FC layers. */
  attention: number;
  /** Assembling the per-sample kernel from cells, experts or factors. */
  assembly: number;
}

/** Options the reference executor passes to a method's forward. */
export interface MethodForwardOptions {
  /** 'train' uses batch statistics in every BatchNorm. */
  mode: 'inference' | 'train';
  /** Method temperature (KW's tau, DY-Conv's softmax temperature, ...). */
  temperature: number | undefined;
}

/**
 * The faces every non-KW dynamic method has (KernelWarehouse itself is planned across
 * layers, see `kw/plan.ts`). One module per method implements this and is listed in
 * {@link METHODS}.
 */
export interface DynamicMethod<R extends OtherMethodRef = OtherMethodRef> {
  kind: string;
  /** Validate and fill defaults of the node's `method` settings; throw KwError naming `where`. */
  normalize(where: string, raw: Record<string, unknown>): R;
  /** The parameters (and buffers) this node owns, names relative to the node id. */
  params(node: DynamicNode, inShape: readonly number[]): ParamDecl[];
  /** MACs per image. */
  macs(node: DynamicNode, inShape: readonly number[], outShape: readonly number[]): LayerMacs;
  /** Reference forward on a batch (NCHW or [N, F]). `w(name)` returns this node's tensor. */
  forward(
    node: DynamicNode,
    x: Tensor,
    w: (name: string) => Tensor,
    opts: MethodForwardOptions,
  ): Tensor;
  /** Initial values for params whose init is 'method'. */
  init?(node: DynamicNode, inShape: readonly number[], rng: Rng): Map<string, Tensor>;
  /**
   * Inference-time form, where the method has one (DO-Conv, SLaK): plain nodes that compute
   * exactly the same function, with their weights under full names. `w(name)` returns this
   * node's tensor (relative name).
   */
  fold?(node: DynamicNode, inShape: readonly number[], w: (name: string) => Tensor): FoldResult;
}

/** What {@link DynamicMethod.fold} returns: replacement nodes (the last one keeps the node's id) and their weights by full name. */
export interface FoldResult {
  nodes: NodeSpec[];
  weights: Map<string, Tensor>;
}

/** Every registered non-KW method, by `kind`. */
export const METHODS: ReadonlyMap<string, DynamicMethod> = new Map<string, DynamicMethod>(
  [doConvMethod, dyConvMethod, condConvMethod, odConvMethod, slakMethod, weightNetMethod].map(
    (m) => [m.kind, m as unknown as DynamicMethod],
  ),
);
