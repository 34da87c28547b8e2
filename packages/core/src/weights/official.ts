/**
 * The one table between our weight names and the official OSVAI/KernelWarehouse PyTorch
 * state_dict names (reference/kernelwarehouse.md §1, §3). Our node ids are the official module
 * paths, so most names are equal; the differences are:
 *
 * | ours | official |
 * |---|---|
 * | `warehouses.<id>` | `warehouse_manager.weights.<index in spec.warehouses>` |
 * | `<kw linear>.attention.*`, `<kw linear>.bias` | `<kw linear>.conv.attention.*`, `<kw linear>.conv.bias` (KWLinear wraps a KWConv1d) |
 * | (none) | `*.num_batches_tracked` (int64 BatchNorm counters: dropped on import, written as 0 on export) |
 *
 * Tensors whose shapes differ only by size-1 dimensions (ConvNeXt-KW layer scale `[1, C, 1, 1]`
 * vs our `[C]`) are reshaped on import.
 */
import { KwError } from '../errors.js';
import { paramTable, warehouseParamName } from '../params.js';
import type { WeightMap } from '../tensor.js';
import { checkWeights } from './check.js';
import type { StoredTensor } from './safetensors.js';

function kwLinearIds(spec: unknown): Set<string> {
  const t = paramTable(spec);
  return new Set([...t.kw.layers.values()].filter((l) => l.kind === 'linear').map((l) => l.node));
}

/** Our name -> the official state_dict name. */
export function toOfficialName(spec: unknown, name: string): string {
  const t = paramTable(spec);
  const wh = t.kw.warehouses.find((w) => warehouseParamName(w.id) === name);
  if (wh) return `warehouse_manager.weights.${wh.index}`;
  for (const id of kwLinearIds(spec)) {
    if (name.startsWith(`${id}.attention.`) || name === `${id}.bias`)
      return `${id}.conv.${name.slice(id.length + 1)}`;
  }
  return name;
}

/** Official state_dict name -> ours, or undefined for tensors we do not keep (num_batches_tracked). */
export function fromOfficialName(spec: unknown, name: string): string | undefined {
  if (name.endsWith('.num_batches_tracked')) return undefined;
  const t = paramTable(spec);
  const m = /^warehouse_manager\.weights\.(\d+)$/.exec(name);
  if (m) {
    const w = t.kw.warehouses[Number(m[1])];
    if (!w)
      throw new KwError(
        'WEIGHTS_UNEXPECTED',
        `official tensor "${name}": the spec has ${t.kw.warehouses.length} warehouses`,
      );
    return warehouseParamName(w.id);
  }
  for (const id of kwLinearIds(spec)) {
    if (name.startsWith(`${id}.conv.`)) return `${id}.${name.slice(id.length + 6)}`;
  }
  return name;
}

const squeeze = (s: readonly number[]) => s.filter((d) => d !== 1).join(',');

/**
 * Convert an official state_dict (name -> float tensor, e.g. read from a safetensors file made
 * with `safetensors.torch.save_file(model.state_dict())`) into our weights for `spec`, checked.
 */
export function importOfficialStateDict(
  spec: unknown,
  tensors: Map<string, StoredTensor | { shape: number[]; data: Float32Array }>,
): WeightMap {
  const t = paramTable(spec);
  const out: WeightMap = new Map();
  for (const [name, tensor] of tensors) {
    const ours = fromOfficialName(spec, name);
    if (ours === undefined) continue;
    const decl = t.byName.get(ours);
    if (!decl)
      throw new KwError(
        'WEIGHTS_UNEXPECTED',
        `official tensor "${name}" (ours: "${ours}") is not part of spec "${t.analyzed.spec.name}"`,
      );
    let data: Float32Array;
    if (tensor.data instanceof Float32Array) data = tensor.data;
    else if (tensor.data instanceof Float64Array) data = Float32Array.from(tensor.data);
    else throw new KwError('WEIGHTS_DTYPE', `official tensor "${name}" is not floating point`);
    let shape = [...tensor.shape];
    if (shape.join(',') !== decl.shape.join(',') && squeeze(shape) === squeeze(decl.shape))
      shape = [...decl.shape];
    out.set(ours, { shape, data });
  }
  checkWeights(spec, out);
  return out;
}

/** Our weights -> official state_dict names (plus int64 `num_batches_tracked` = 0 per BatchNorm). */
export function exportOfficialStateDict(
  spec: unknown,
  weights: WeightMap,
): Map<string, StoredTensor> {
  const t = paramTable(spec);
  checkWeights(spec, weights);
  const out = new Map<string, StoredTensor>();
  for (const p of t.params) {
    const w = weights.get(p.name)!;
    out.set(toOfficialName(spec, p.name), { dtype: 'F32', shape: [...w.shape], data: w.data });
    if (p.name.endsWith('.running_var')) {
      out.set(toOfficialName(spec, p.name).replace(/running_var$/, 'num_batches_tracked'), {
        dtype: 'I64',
        shape: [],
        data: new BigInt64Array(1),
      });
    }
  }
  return out;
}
