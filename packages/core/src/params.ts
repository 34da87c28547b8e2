/**
 * Parameter declarations: for every node of a spec, the named tensors it owns, their shapes,
 * whether they are trainable, whether the official recipe decays them, and how they are
 * initialised. One table drives parameter counting, initialisation, weight-file checks
 * and every adapter's weight creation.
 */

import { type ParamDecl, paramDecl } from './decl.js';
import { KwError } from './errors.js';
import type { KwPlan } from './kw/plan.js';
import { kwMethod } from './methods/kw.js';
import { METHODS } from './methods/registry.js';
import type { DynamicNode, LayerContext } from './methods/types.js';
import type { NodeSpec } from './spec/types.js';
import { type AnalyzedSpec, analyzeSpec, checkModelSize, checkSize } from './spec/validate.js';
import { numel } from './tensor.js';

export { decays, type InitRule, type ParamDecl, paramDecl, warehouseParamName } from './decl.js';

/** Parameter declarations of a whole spec, with the KW plan they were derived from. */
export interface ParamTable {
  params: ParamDecl[];
  byName: Map<string, ParamDecl>;
  /** Each grouping method's cross-layer plan ({@link DynamicMethod.planGroups}), by kind. */
  groups: ReadonlyMap<string, unknown>;
  /** KernelWarehouse's plan (the `kw` entry of {@link ParamTable.groups}). */
  kw: KwPlan;
  analyzed: AnalyzedSpec;
}

/** What a method knows about one of the spec's dynamic nodes (settings, input shape, group plan). */
export function layerContext(
  table: Pick<ParamTable, 'groups' | 'analyzed'>,
  node: DynamicNode,
): LayerContext<DynamicNode['method'], unknown> {
  return {
    node,
    settings: node.method,
    inShape: table.analyzed.shapes.get(node.inputs[0]!)!,
    group: table.groups.get(node.method.kind),
  };
}

// keyed by analyzeSpec's result, which is a fresh object whenever the spec changed since
const tables = new WeakMap<AnalyzedSpec, ParamTable>();

function nodeParams(
  node: NodeSpec,
  a: AnalyzedSpec,
  groups: ReadonlyMap<string, unknown>,
): ParamDecl[] {
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
      const method = METHODS.get(node.method.kind)!;
      return method
        .params(layerContext({ groups, analyzed: a }, node))
        .map((p) => ({ ...p, name: `${id}.${p.name}`, node: id }));
    }
    default:
      return [];
  }
}

/**
 * The parameter table of a spec: every named tensor in a stable order (warehouses first,
 * then nodes in spec order). Validates and plans the spec on the way.
 */
export function paramTable(spec: unknown): ParamTable {
  const analyzed = analyzeSpec(spec);
  const hit = tables.get(analyzed);
  if (hit) return hit;
  const groups = new Map<string, unknown>();
  const params: ParamDecl[] = [];
  for (const m of METHODS.values()) {
    if (!m.planGroups) continue;
    const plan = m.planGroups(analyzed);
    groups.set(m.kind, plan);
    if (m.sharedParams) params.push(...m.sharedParams(plan));
  }
  for (const node of analyzed.spec.nodes) params.push(...nodeParams(node, analyzed, groups));
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
  const kw = groups.get(kwMethod.kind) as KwPlan;
  const table = { params, byName, groups, kw, analyzed };
  tables.set(analyzed, table);
  return table;
}

/** Count of trainable parameters (buffers excluded), as PyTorch's `sum(p.numel())`. */
export function countParams(spec: unknown): number {
  let n = 0;
  for (const p of paramTable(spec).params) if (p.role === 'param') n += numel(p.shape);
  return n;
}
