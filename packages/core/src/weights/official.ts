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
 * vs our `[C]`) are reshaped on import. A DDP `module.` prefix is not handled here: strip it
 * first (`@kernelwarehouse/torch` does).
 *
 * Official checkpoints always hold the ImageNet stem; a spec the zoo built with its small-input
 * stem (`meta.stem === 'small'`, inputs of 64 px or less by default) is refused by
 * {@link assertOfficialStem} with WEIGHTS_STEM rather than loaded into a different network.
 */
import { describeValue, KwError } from '../errors.js';
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

/** Shorter input side up to which the zoo picks its small-input stem by default. */
const SMALL_STEM_MAX_PX = 64;

/** The stem a zoo spec records in `meta.stem` (`'small'`, `'imagenet'`, `'cifar'`), if any. */
export function specStem(spec: unknown): string | undefined {
  const meta = (spec as { meta?: Record<string, unknown> } | null)?.meta;
  return typeof meta?.stem === 'string' ? meta.stem : undefined;
}

/**
 * Refuse official (ImageNet-stem) weights for a spec built with the small-input stem. The
 * message names the input size, the 65 px threshold and the flag that fixes it.
 */
export function assertOfficialStem(spec: unknown, what = 'official weights'): void {
  if (specStem(spec) !== 'small') return;
  const s = spec as { name?: string; inputShape?: number[] };
  const [, h, w] = s.inputShape ?? [];
  throw new KwError(
    'WEIGHTS_STEM',
    `${what} hold the ImageNet stem, but spec "${s.name}" was built for ${h}x${w} inputs with the zoo's small-input stem ` +
      `(chosen for inputs of ${SMALL_STEM_MAX_PX} px or less); loading them would give a different network. ` +
      `Use an input of ${SMALL_STEM_MAX_PX + 1} px or more, or keep ${h}x${w} and build the ImageNet stem with --stem imagenet (zoo option stem: 'imagenet')`,
    { input: [h, w], thresholdPx: SMALL_STEM_MAX_PX + 1, fix: '--stem imagenet' },
  );
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
  if (!(tensors instanceof Map)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `importOfficialStateDict: tensors must be a Map<string, tensor>, found ${describeValue(tensors)}`,
      { field: 'tensors', actual: Object.prototype.toString.call(tensors) },
    );
  }
  assertOfficialStem(spec);
  const t = paramTable(spec);
  const out: WeightMap = new Map();
  // our name -> the state_dict name it came from: two names for one weight (the official
  // "warehouse_manager.weights.0" and our "warehouses.stage0", or "weights.00") are refused,
  // never resolved by keeping whichever came last
  const source = new Map<string, string>();
  for (const [name, tensor] of tensors) {
    const ours = fromOfficialName(spec, name);
    if (ours === undefined) continue;
    const decl = t.byName.get(ours);
    if (!decl)
      throw new KwError(
        'WEIGHTS_UNEXPECTED',
        `official tensor "${name}" (ours: "${ours}") is not part of spec "${t.analyzed.spec.name}"`,
      );
    const first = source.get(ours);
    if (first !== undefined)
      throw new KwError(
        'WEIGHTS_UNEXPECTED',
        `official tensors "${first}" and "${name}" both map to "${ours}" of spec "${t.analyzed.spec.name}"; keep only one of them`,
        { names: [first, name], target: ours },
      );
    source.set(ours, name);
    if (typeof tensor !== 'object' || tensor === null)
      throw new KwError(
        'WEIGHTS_DTYPE',
        `official tensor "${name}": expected { shape, data }, found ${describeValue(tensor)}`,
        { name },
      );
    if (!Array.isArray(tensor.shape))
      throw new KwError(
        'WEIGHTS_SHAPE',
        `official tensor "${name}": expected a shape array, found ${describeValue(tensor.shape)}`,
        { name, expected: [...decl.shape], actual: tensor.shape },
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
