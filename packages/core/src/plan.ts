/**
 * Model-level plan: parameters split the way the paper reports them, MACs per image split
 * into convolution, attention and kernel assembly, and the memory of per-sample kernels.
 */

import type { KwPlan } from './kw/plan.js';
import { type LayerMacs, METHODS } from './methods/registry.js';
import { layerContext, type ParamTable, paramTable } from './params.js';
import type { ModelSpec, NodeSpec } from './spec/types.js';
import { numel } from './tensor.js';

/** Per-node figures. */
export interface NodePlan {
  id: string;
  op: NodeSpec['op'];
  /** Per-sample output shape. */
  outShape: number[];
  /** Trainable parameters owned by this node (warehouses are counted separately). */
  params: number;
  macs: LayerMacs;
  /** Floats of the per-sample assembled kernel (dynamic layers), else 0. */
  kernelFloats: number;
}

/** Everything `kw plan` prints. */
export interface ModelPlan {
  name: string;
  nodes: NodePlan[];
  kw: KwPlan;
  params: {
    /** Warehouse cells (KW). */
    warehouse: number;
    /** KW attention modules plus other dynamic methods' routing / attention parameters. */
    attention: number;
    /** Everything else (static convs, norms, classifier, dynamic-layer biases). */
    other: number;
    total: number;
    /** The same network with every dynamic layer replaced by a static one. */
    baseline: number;
  };
  /** MACs per image. */
  macs: LayerMacs & { total: number };
  /** Floats of all per-sample assembled kernels (multiply by 4 for bytes per image). */
  kernelFloatsPerSample: number;
}

type DenseNode = Extract<NodeSpec, { op: 'conv2d' | 'linear' | 'dynamicConv2d' | 'dynamicLinear' }>;

/** Floats of a (per-sample) kernel: O * (C/g) * kh * kw, or out * in. */
function kernelSize(node: DenseNode, cin: number): number {
  return node.op === 'conv2d' || node.op === 'dynamicConv2d'
    ? node.outChannels * (cin / node.groups) * node.kernelSize[0] * node.kernelSize[1]
    : node.outFeatures * cin;
}

/** MACs of the convolution / matmul itself: kernel floats times output positions. */
function denseMacs(node: DenseNode, cin: number, outShape: readonly number[]): number {
  return kernelSize(node, cin) * (outShape.length === 3 ? outShape[1]! * outShape[2]! : 1);
}

/** The spec with every dynamic layer replaced by its static counterpart (same geometry). */
export function staticBaseline(spec: unknown): ModelSpec {
  const s = paramTable(spec).analyzed.spec;
  const nodes: NodeSpec[] = s.nodes.map((n) => {
    if (n.op === 'dynamicConv2d') {
      const { method: _m, ...rest } = n;
      return { ...rest, op: 'conv2d' };
    }
    if (n.op === 'dynamicLinear') {
      const { method: _m, ...rest } = n;
      return { ...rest, op: 'linear' };
    }
    return n;
  });
  return { ...s, name: `${s.name}-baseline`, nodes, warehouses: [] };
}

/**
 * Plan a spec: per-node parameters and MACs, parameter totals (warehouse / attention /
 * other / total / static baseline), MACs per image and per-sample kernel memory.
 *
 * @example
 * const plan = planModel(spec);
 * console.log(plan.params.total, plan.params.baseline);
 */
export function planModel(spec: unknown): ModelPlan {
  const table: ParamTable = paramTable(spec);
  const { spec: s, shapes } = table.analyzed;
  const byNode = new Map<string, number>();
  const attnByNode = new Map<string, number>();
  let warehouse = 0;
  for (const p of table.params) {
    if (p.role !== 'param') continue;
    const n = numel(p.shape);
    if (p.node === undefined) {
      warehouse += n;
      continue;
    }
    byNode.set(p.node, (byNode.get(p.node) ?? 0) + n);
    const isAttention =
      p.name.startsWith(`${p.node}.`) &&
      !p.name.endsWith(`${p.node}.bias`) &&
      isDynamic(table, p.node) &&
      !p.name.endsWith(`${p.node}.weight`);
    if (isAttention) attnByNode.set(p.node, (attnByNode.get(p.node) ?? 0) + n);
  }
  const nodes: NodePlan[] = [];
  const macs = { conv: 0, attention: 0, assembly: 0 };
  let kernelFloatsPerSample = 0;
  let attention = 0;
  let other = 0;
  for (const node of s.nodes) {
    const inShape = shapes.get(node.inputs[0]!)!;
    const outShape = shapes.get(node.id)!;
    let m: LayerMacs = { conv: 0, attention: 0, assembly: 0 };
    let kernelFloats = 0;
    if (node.op === 'conv2d' || node.op === 'linear') {
      m.conv = denseMacs(node, inShape[0]!, outShape);
    } else if (node.op === 'dynamicConv2d' || node.op === 'dynamicLinear') {
      kernelFloats = kernelSize(node, inShape[0]!);
      m = METHODS.get(node.method.kind)!.macs(layerContext(table, node), outShape);
    }
    const params = byNode.get(node.id) ?? 0;
    attention += attnByNode.get(node.id) ?? 0;
    other += params - (attnByNode.get(node.id) ?? 0);
    macs.conv += m.conv;
    macs.attention += m.attention;
    macs.assembly += m.assembly;
    kernelFloatsPerSample += kernelFloats;
    nodes.push({ id: node.id, op: node.op, outShape, params, macs: m, kernelFloats });
  }
  const total = warehouse + attention + other;
  let baseline = 0;
  for (const p of paramTable(staticBaseline(s)).params)
    if (p.role === 'param') baseline += numel(p.shape);
  return {
    name: s.name,
    nodes,
    kw: table.kw,
    params: { warehouse, attention, other, total, baseline },
    macs: { ...macs, total: macs.conv + macs.attention + macs.assembly },
    kernelFloatsPerSample,
  };
}

function isDynamic(table: ParamTable, id: string): boolean {
  const n = table.analyzed.byId.get(id);
  return n?.op === 'dynamicConv2d' || n?.op === 'dynamicLinear';
}
