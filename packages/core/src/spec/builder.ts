import { KwError } from '../errors.js';
import {
  type DynamicMethodRef,
  INPUT,
  type KwWarehouseSpec,
  type ModelSpec,
  type NodeSpec,
  type Pair,
  SPEC_VERSION,
} from './types.js';
import { NODE_FIELDS, validateSpec } from './validate.js';

/** A pair, or one number used for both height and width. */
export type PairIn = number | Pair;
const P = (v: PairIn | undefined, d: number): Pair =>
  v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : [v[0], v[1]];

/** Conv settings accepted by {@link SpecBuilder.conv2d}. */
export interface ConvOptions {
  outChannels: number;
  kernelSize: PairIn;
  stride?: PairIn;
  padding?: PairIn;
  dilation?: PairIn;
  groups?: number;
  bias?: boolean;
}

/** The conv options: a conv2d node's fields (validate.ts's table, checked there against types.ts). */
const CONV_OPTIONS: readonly string[] = NODE_FIELDS.conv2d;

/** Refuse conv options the builder would drop (a `strides: 2` typo must not build stride 1). */
function checkConvOptions(id: string, o: ConvOptions): void {
  if (typeof o !== 'object' || o === null) return; // validateSpec names the missing fields
  for (const k of Object.keys(o)) {
    if (!CONV_OPTIONS.includes(k)) {
      throw new KwError(
        'SPEC_BAD_FIELD',
        `node "${id}": unknown conv option ${JSON.stringify(k)}; accepted: ${CONV_OPTIONS.join(', ')}`,
        { field: k, expected: [...CONV_OPTIONS], actual: k },
      );
    }
  }
}

/**
 * Small helper for writing specs in code. Each method appends one node and returns its id,
 * so layers chain naturally; `build()` validates and returns the canonical spec.
 *
 * @example
 * const b = new SpecBuilder('tiny', [3, 32, 32]);
 * let x = b.conv2d('conv1', b.input, { outChannels: 16, kernelSize: 3, padding: 1 });
 * x = b.relu('relu1', x);
 * x = b.flatten('flat', b.globalAvgPool('pool', x));
 * b.output(b.linear('fc', x, 10));
 * const spec = b.build();
 */
export class SpecBuilder {
  readonly input = INPUT;
  private readonly nodes: NodeSpec[] = [];
  private readonly warehouses: KwWarehouseSpec[] = [];
  private readonly outputs: string[] = [];

  constructor(
    readonly name: string,
    readonly inputShape: number[],
    readonly meta?: Record<string, unknown>,
  ) {}

  /** Append a raw node. */
  add<N extends NodeSpec>(node: N): string {
    this.nodes.push(node);
    return node.id;
  }

  /** Append a plain conv2d node reading `input`; returns its id. */
  conv2d(id: string, input: string, o: ConvOptions): string {
    checkConvOptions(id, o);
    return this.add({
      id,
      op: 'conv2d',
      inputs: [input],
      outChannels: o.outChannels,
      kernelSize: P(o.kernelSize, 1),
      stride: P(o.stride, 1),
      padding: P(o.padding, 0),
      dilation: P(o.dilation, 1),
      groups: o.groups ?? 1,
      bias: o.bias ?? false,
    });
  }

  /** A dynamic conv drawing its kernel from `method` (e.g. `{ kind: 'kw', warehouse: 'stage0' }`). */
  dynamicConv2d(id: string, input: string, o: ConvOptions, method: DynamicMethodRef): string {
    checkConvOptions(id, o);
    return this.add({
      id,
      op: 'dynamicConv2d',
      inputs: [input],
      outChannels: o.outChannels,
      kernelSize: P(o.kernelSize, 1),
      stride: P(o.stride, 1),
      padding: P(o.padding, 0),
      dilation: P(o.dilation, 1),
      groups: o.groups ?? 1,
      bias: o.bias ?? false,
      method,
    });
  }

  /** Append a linear layer (weight `[out, in]`, bias by default) on an `[F]` input. */
  linear(id: string, input: string, outFeatures: number, bias = true): string {
    return this.add({ id, op: 'linear', inputs: [input], outFeatures, bias });
  }

  /** A linear layer whose weight comes from `method` (e.g. a KW classifier). */
  dynamicLinear(
    id: string,
    input: string,
    outFeatures: number,
    method: DynamicMethodRef,
    bias = true,
  ): string {
    return this.add({ id, op: 'dynamicLinear', inputs: [input], outFeatures, bias, method });
  }

  /** BatchNorm over channels (eps 1e-5, momentum 0.1 as PyTorch). */
  batchNorm(id: string, input: string, eps = 1e-5, momentum = 0.1): string {
    return this.add({ id, op: 'batchNorm', inputs: [input], eps, momentum });
  }

  /** LayerNorm over the channel axis at every position (eps 1e-6 as ConvNeXt). */
  layerNorm(id: string, input: string, eps = 1e-6): string {
    return this.add({ id, op: 'layerNorm', inputs: [input], eps });
  }

  /** ReLU. */
  relu(id: string, input: string): string {
    return this.add({ id, op: 'relu', inputs: [input] });
  }

  /** ReLU6 (MobileNetV2). */
  relu6(id: string, input: string): string {
    return this.add({ id, op: 'relu6', inputs: [input] });
  }

  /** Exact (erf) GELU. */
  gelu(id: string, input: string): string {
    return this.add({ id, op: 'gelu', inputs: [input] });
  }

  /** Logistic sigmoid. */
  sigmoid(id: string, input: string): string {
    return this.add({ id, op: 'sigmoid', inputs: [input] });
  }

  /** Element-wise sum of two or more equally shaped inputs (residual connections). */
  addNodes(id: string, inputs: string[]): string {
    return this.add({ id, op: 'add', inputs });
  }

  /** Layer scale (one input, learned gamma) or broadcast product (two inputs). */
  mul(id: string, inputs: string[], init?: number): string {
    return this.add(
      init === undefined ? { id, op: 'mul', inputs } : { id, op: 'mul', inputs, init },
    );
  }

  /** Max pooling; stride defaults to the kernel size. */
  maxPool(
    id: string,
    input: string,
    kernelSize: PairIn,
    stride?: PairIn,
    padding?: PairIn,
  ): string {
    return this.pool('maxPool', id, input, kernelSize, stride, padding);
  }

  /** Average pooling (padding counted, as PyTorch); stride defaults to the kernel size. */
  avgPool(
    id: string,
    input: string,
    kernelSize: PairIn,
    stride?: PairIn,
    padding?: PairIn,
  ): string {
    return this.pool('avgPool', id, input, kernelSize, stride, padding);
  }

  private pool(
    op: 'maxPool' | 'avgPool',
    id: string,
    input: string,
    kernelSize: PairIn,
    stride?: PairIn,
    padding?: PairIn,
  ): string {
    const k = P(kernelSize, 1);
    return this.add({
      id,
      op,
      inputs: [input],
      kernelSize: k,
      stride: P(stride, k[0]),
      padding: P(padding, 0),
    });
  }

  /** Mean over H and W: `[C, H, W] -> [C, 1, 1]`. */
  globalAvgPool(id: string, input: string): string {
    return this.add({ id, op: 'globalAvgPool', inputs: [input] });
  }

  /** `[C, H, W] -> [C*H*W]`. */
  flatten(id: string, input: string): string {
    return this.add({ id, op: 'flatten', inputs: [input] });
  }

  /** Dropout (identity at inference). */
  dropout(id: string, input: string, rate: number): string {
    return this.add({ id, op: 'dropout', inputs: [input], rate });
  }

  /** Pass-through node (keeps official module names, e.g. a disabled DropPath). */
  identity(id: string, input: string): string {
    return this.add({ id, op: 'identity', inputs: [input] });
  }

  /** Declare a warehouse (defaults: cell ratios 1, reduction 1/16, BatchNorm, no basis). */
  warehouse(w: Partial<KwWarehouseSpec> & { id: string; budget: number }): string {
    this.warehouses.push({
      cellInRatio: 1,
      cellOutRatio: 1,
      reduction: 1 / 16,
      norm: 'batch',
      nonlocalBasisRatio: 1,
      ...w,
    });
    return w.id;
  }

  /** True when a warehouse with this id was declared. */
  hasWarehouse(id: string): boolean {
    return this.warehouses.some((w) => w.id === id);
  }

  /** Mark a node as a model output (in order). */
  output(id: string): void {
    this.outputs.push(id);
  }

  /** Validate and return the canonical spec. */
  build(): ModelSpec {
    const spec: ModelSpec = {
      specVersion: SPEC_VERSION,
      name: this.name,
      inputShape: [...this.inputShape],
      nodes: this.nodes,
      outputs: this.outputs,
      warehouses: this.warehouses,
    };
    if (this.meta) spec.meta = this.meta;
    return validateSpec(spec);
  }
}
