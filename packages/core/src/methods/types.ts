/**
 * What a dynamic method is: one module per method implements {@link DynamicMethod} (settings,
 * parameters, MACs, forward against the op seam, optional init / fold / cross-layer groups) and
 * is listed by one line in `registry.ts`.
 */
import type { ParamDecl } from '../decl.js';
import type { Ops } from '../ops/seam.js';
import type { Rng } from '../rng.js';
import type {
  DynamicConv2dNode,
  DynamicLinearNode,
  NodeSpec,
  OtherMethodRef,
} from '../spec/types.js';
import type { AnalyzedSpec } from '../spec/validate.js';
import type { Tensor } from '../tensor.js';

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

/** What {@link DynamicMethod.normalize} may consult besides the raw settings. */
export interface NormalizeContext {
  /** Ids of the spec's warehouses (groups shared across layers). */
  warehouses: ReadonlySet<string>;
}

/** A node and what a method knows about it when planning (`G`: the method's group plan). */
export interface LayerContext<R, G> {
  node: DynamicNode;
  /** The node's settings, normalized. */
  settings: R;
  /** Input shape without the batch: `[C, H, W]` or `[F]`. */
  inShape: readonly number[];
  /** The method's cross-layer plan ({@link DynamicMethod.planGroups}); undefined without one. */
  group: G;
}

/** A layer call: the layer context plus the run's temperatures. */
export interface ForwardContext<R, G> extends LayerContext<R, G> {
  /** Output shape without the batch. */
  outShape: readonly number[];
  /** The run's temperature (KernelWarehouse's tau in [0, 1]; 0 at inference). */
  temperature: number;
  /**
   * Override of a method's own softmax / sigmoid temperature (DY-Conv, ODConv anneal it 30 -> 1
   * in training); undefined: the node's setting.
   */
  methodTemperature: number | undefined;
}

/** What {@link DynamicMethod.fold} returns: replacement nodes (the last one keeps the node's id) and their weights by full name. */
export interface FoldResult {
  nodes: NodeSpec[];
  weights: Map<string, Tensor>;
}

/**
 * How a method is written on the command line: `kind:a:b` fills `fields` in order (integers
 * unless `parse` reads the field), then `settings` (default: the method's `normalize`) fills the
 * defaults. See `parseMethodText`.
 */
export interface MethodTextForm {
  /** Settings filled by the positional values, in order. */
  fields: readonly string[];
  /** Read one positional value (default: a decimal integer). */
  parse?(field: string, text: string): unknown;
  /** Settings with defaults from the raw values (default: the method's `normalize`). */
  settings?(raw: Record<string, unknown>, where: string): Record<string, unknown>;
}

/**
 * One dynamic method (`R`: its normalized settings, `G`: its plan across layers, for methods
 * whose layers share tensors, as KernelWarehouse's warehouses).
 */
export interface DynamicMethod<R extends { kind: string } = OtherMethodRef, G = undefined> {
  kind: string;
  /** Validate and fill defaults of the node's `method` settings; throw KwError naming `where`. */
  normalize(where: string, raw: Record<string, unknown>, ctx?: NormalizeContext): R;
  /** The command-line form (`odconv:4`, `weightnet:2:2`, `kw:1/2x`); absent: `kind` only. */
  textForm?: MethodTextForm;
  /** The group (warehouse id) a node with these settings joins, if the method shares across layers. */
  groupOf?(settings: R): string | undefined;
  /** Plan across layers (called once per spec, after validation). */
  planGroups?(spec: AnalyzedSpec): G;
  /** Tensors shared across layers, full names (declared once, before the nodes' own). */
  sharedParams?(group: G): ParamDecl[];
  /** The parameters (and buffers) a node owns, names relative to the node id. */
  params(layer: LayerContext<R, G>): ParamDecl[];
  /** MACs per image. */
  macs(layer: LayerContext<R, G>, outShape: readonly number[]): LayerMacs;
  /** Forward on a batch (images or `[N, F]`), written once against the op seam. */
  forward<T>(ops: Ops<T>, x: T, ctx: ForwardContext<R, G>): T;
  /** Initial values for params whose init is 'method'. */
  init?(layer: LayerContext<R, G>, rng: Rng): Map<string, Tensor>;
  /**
   * Inference-time form, where the method has one (DO-Conv, SLaK): plain nodes that compute
   * exactly the same function, with their weights under full names. `w(name)` returns this
   * node's tensor (relative name).
   */
  fold?(layer: LayerContext<R, G>, w: (name: string) => Tensor): FoldResult;
}
