/**
 * Parameter declarations: for every node of a spec, the named tensors it owns, their shapes,
 * whether they are trainable, whether the official recipe decays them, and how they are
 * initialised. One table drives parameter counting, initialisation, weight-file checks
 * and every adapter's weight creation.
 */
import { KwError } from './errors.js';
import { type KwPlan, planKw } from './kw/plan.js';
import { METHODS } from './methods/registry.js';
import type { NodeSpec } from './spec/types.js';
import { type AnalyzedSpec, analyzeSpec, checkModelSize, checkSize } from './spec/validate.js';
import { numel } from './tensor.js';

/** How a tensor is initialised by {@link initWeights}. */
export type InitRule =
  /** N(0, 2 / fanOut) (PyTorch kaiming_normal_, mode fan_out, ReLU gain). */
  | { kind: 'kaimingNormalFanOut'; fanOut: number }
  /** U(-bound, bound). PyTorch's default Linear init uses bound = 1/sqrt(fan_in). */
  | { kind: 'uniform'; bound: number }
  | { kind: 'normal'; std: number }
  | { kind: 'const'; value: number }
  /** KW warehouse: every layer's owned slice gets Kaiming fan-out over (end-start)*c_out. */
  | { kind: 'kwWarehouse'; warehouse: string }
  /** Delegated to the method module's init(). */
  | { kind: 'method'; node: string };

/** One named tensor of a model. */
export interface ParamDecl {
  /** Full dotted name, e.g. `layer1.0.conv1.attention.fc1.weight`. */
  name: string;
  shape: number[];
  /** 'param' is trained; 'buffer' is state (BatchNorm running statistics). */
  role: 'param' | 'buffer';
  /** Official recipe: 1-D tensors and biases are not weight-decayed. */
  decay: boolean;
  init: InitRule;
  /** Node that owns it; undefined for warehouses (shared by several nodes). */
  node: string | undefined;
}

/** Parameter declarations of a whole spec, with the KW plan they were derived from. */
export interface ParamTable {
  params: ParamDecl[];
  byName: Map<string, ParamDecl>;
  kw: KwPlan;
  analyzed: AnalyzedSpec;
}

// keyed by analyzeSpec's result, which is a fresh object whenever the spec changed since
const tables = new WeakMap<AnalyzedSpec, ParamTable>();

/** Name of the tensor holding a warehouse's cells. */
export function warehouseParamName(warehouseId: string): string {
  return `warehouses.${warehouseId}`;
}

/**
 * The official recipe's weight-decay rule (optim_factory.py): 1-D tensors and any tensor named
 * `bias` (or `*.bias`) are not decayed; buffers never are.
 */
export function decays(name: string, shape: readonly number[], role: 'param' | 'buffer'): boolean {
  return role === 'param' && shape.length > 1 && !/(^|\.)bias$/.test(name);
}

/** A parameter declaration (`node` undefined for method-relative names and warehouses). */
export function paramDecl(
  node: string | undefined,
  name: string,
  shape: number[],
  init: InitRule,
  role: 'param' | 'buffer' = 'param',
): ParamDecl {
  return { name, shape, role, decay: decays(name, shape, role), init, node };
}

function nodeParams(node: NodeSpec, a: AnalyzedSpec, kw: KwPlan): ParamDecl[] {
  const inShape = a.shapes.get(node.inputs[0]!)!;
  const id = node.id;
  const c = inShape[0]!;
  switch (node.op) {
    case 'conv2d': {
      const [kh, kw2] = node.kernelSize;
      const shape = [node.outChannels, c / node.groups, kh, kw2];
      const out = [
        paramDecl(id, `${id}.weight`, shape, {
          kind: 'kaimingNormalFanOut',
          fanOut: node.outChannels * kh * kw2,
        }),
      ];
      if (node.bias)
        out.push(paramDecl(id, `${id}.bias`, [node.outChannels], { kind: 'const', value: 0 }));
      return out;
    }
    case 'linear': {
      const bound = 1 / Math.sqrt(c);
      const out = [
        paramDecl(id, `${id}.weight`, [node.outFeatures, c], { kind: 'uniform', bound }),
      ];
      if (node.bias)
        out.push(paramDecl(id, `${id}.bias`, [node.outFeatures], { kind: 'uniform', bound }));
      return out;
    }
    case 'batchNorm':
      return [
        paramDecl(id, `${id}.weight`, [c], { kind: 'const', value: 1 }),
        paramDecl(id, `${id}.bias`, [c], { kind: 'const', value: 0 }),
        paramDecl(id, `${id}.running_mean`, [c], { kind: 'const', value: 0 }, 'buffer'),
        paramDecl(id, `${id}.running_var`, [c], { kind: 'const', value: 1 }, 'buffer'),
      ];
    case 'layerNorm':
      return [
        paramDecl(id, `${id}.weight`, [c], { kind: 'const', value: 1 }),
        paramDecl(id, `${id}.bias`, [c], { kind: 'const', value: 0 }),
      ];
    case 'mul':
      return node.inputs.length === 1
        ? [paramDecl(id, `${id}.gamma`, [c], { kind: 'const', value: node.init ?? 1 })]
        : [];
    case 'dynamicConv2d':
    case 'dynamicLinear': {
      if (node.method.kind === 'kw') return kwLayerParams(id, kw);
      const method = METHODS.get(node.method.kind)!;
      return method.params(node, inShape).map((p) => ({ ...p, name: `${id}.${p.name}`, node: id }));
    }
    default:
      return [];
  }
}

function kwLayerParams(id: string, kw: KwPlan): ParamDecl[] {
  const l = kw.layers.get(id)!;
  const w = kw.warehouses.find((x) => x.id === l.warehouse)!;
  const h = l.hidden;
  const p = `${id}.attention`;
  const fan = (out: number): InitRule => ({ kind: 'kaimingNormalFanOut', fanOut: out });
  const out = [paramDecl(id, `${p}.fc1.weight`, [h, l.inChannels], fan(h))];
  if (w.norm === 'layer')
    out.push(paramDecl(id, `${p}.fc1.bias`, [h], { kind: 'const', value: 0 }));
  out.push(paramDecl(id, `${p}.norm1.weight`, [h], { kind: 'const', value: 1 }));
  out.push(paramDecl(id, `${p}.norm1.bias`, [h], { kind: 'const', value: 0 }));
  if (w.norm === 'batch') {
    out.push(paramDecl(id, `${p}.norm1.running_mean`, [h], { kind: 'const', value: 0 }, 'buffer'));
    out.push(paramDecl(id, `${p}.norm1.running_var`, [h], { kind: 'const', value: 1 }, 'buffer'));
  }
  if (l.basis) {
    const rows = l.m * (l.basis.nLocal + l.basis.nBasis + 1);
    out.push(paramDecl(id, `${p}.fc2.weight`, [rows, h], fan(rows)));
    out.push(
      paramDecl(id, `${p}.fc3.weight`, [l.basis.nNonlocal, l.basis.nBasis], fan(l.basis.nNonlocal)),
    );
    out.push(paramDecl(id, `${p}.basis_bias`, [l.logits], { kind: 'const', value: 0 }));
  } else {
    out.push(paramDecl(id, `${p}.fc2.weight`, [l.logits, h], fan(l.logits)));
    out.push(paramDecl(id, `${p}.fc2.bias`, [l.logits], { kind: 'const', value: 0 }));
  }
  if (l.biasParams)
    out.push(paramDecl(id, `${id}.bias`, [l.weightShape[0]!], { kind: 'const', value: 0 }));
  return out;
}

/**
 * The parameter table of a spec: every named tensor in a stable order (warehouses first,
 * then nodes in spec order). Validates and plans the spec on the way.
 */
export function paramTable(spec: unknown): ParamTable {
  const analyzed = analyzeSpec(spec);
  const hit = tables.get(analyzed);
  if (hit) return hit;
  const kw = planKw(analyzed);
  const params: ParamDecl[] = kw.warehouses.map((w) =>
    paramDecl(undefined, warehouseParamName(w.id), w.shape, {
      kind: 'kwWarehouse',
      warehouse: w.id,
    }),
  );
  for (const node of analyzed.spec.nodes) params.push(...nodeParams(node, analyzed, kw));
  const byName = new Map<string, ParamDecl>();
  let total = 0;
  for (const p of params) {
    checkSize(`parameter "${p.name}"`, 'shape', p.shape);
    total += numel(p.shape);
    if (byName.has(p.name)) {
      throw new KwError(
        'SPEC_DUPLICATE_ID',
        `parameter name "${p.name}" is produced twice (node ids collide with a sub-module name)`,
      );
    }
    byName.set(p.name, p);
  }
  checkModelSize(analyzed.spec.name, total);
  const table = { params, byName, kw, analyzed };
  tables.set(analyzed, table);
  return table;
}

/** Count of trainable parameters (buffers excluded), as PyTorch's `sum(p.numel())`. */
export function countParams(spec: unknown): number {
  let n = 0;
  for (const p of paramTable(spec).params) if (p.role === 'param') n += numel(p.shape);
  return n;
}
