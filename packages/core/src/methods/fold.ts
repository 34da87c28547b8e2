/**
 * Spec-level inference fold: every dynamic node whose method has a `fold` (DO-Conv family,
 * SLaK) is replaced by the plain nodes it folds to (peers.md §6.5, §7.4). Exact up to float
 * rounding; other nodes and weights pass through unchanged.
 */
import { KwError } from '../errors.js';
import { layerContext, paramTable } from '../params.js';
import type { ModelSpec, NodeSpec } from '../spec/types.js';
import { validateSpec } from '../spec/validate.js';
import type { Tensor, WeightMap } from '../tensor.js';
import { checkWeights } from '../weights/check.js';
import { METHODS } from './registry.js';

/**
 * Fold every foldable dynamic node of `spec` into plain conv2d nodes.
 *
 * @example
 * const { spec: plain, weights: plainWeights } = foldSpec(spec, weights);
 */
export function foldSpec(
  spec: unknown,
  weights: WeightMap,
): { spec: ModelSpec; weights: WeightMap } {
  const table = paramTable(spec);
  const s = table.analyzed.spec;
  checkWeights(s, weights);
  const nodes: NodeSpec[] = [];
  const out: WeightMap = new Map();
  const folded = new Set<string>();
  for (const node of s.nodes) {
    if (node.op === 'dynamicConv2d' || node.op === 'dynamicLinear') {
      const m = METHODS.get(node.method.kind);
      if (m?.fold) {
        const w = (name: string): Tensor => weights.get(`${node.id}.${name}`)!;
        const r = m.fold(layerContext(table, node), w);
        if (r.nodes.length === 0 || r.nodes[r.nodes.length - 1]!.id !== node.id) {
          throw new KwError(
            'SPEC_INVALID',
            `fold of node "${node.id}" must end with a node of the same id`,
          );
        }
        nodes.push(...r.nodes);
        for (const [k, v] of r.weights) out.set(k, v);
        folded.add(node.id);
        continue;
      }
    }
    nodes.push(node);
  }
  for (const p of table.params) {
    if (p.node !== undefined && folded.has(p.node)) continue;
    out.set(p.name, weights.get(p.name)!);
  }
  const plain = validateSpec({ ...s, nodes });
  checkWeights(plain, out);
  return { spec: plain, weights: out };
}
