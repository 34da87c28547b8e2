import { KwError } from '../errors.js';
import { paramTable } from '../params.js';
import type { WeightMap } from '../tensor.js';
import { type CheckWeightsOptions, checkWeights } from './check.js';
import { assertOfficialStem, specStem } from './official.js';
import { readSafetensors, safetensorsToWeights, writeSafetensors } from './safetensors.js';

/**
 * Save a spec's weights as safetensors (F32, names from the spec, deterministic bytes). The spec
 * name and format version go into `__metadata__`. Checks the weights against the spec first.
 *
 * @example
 * const bytes = saveWeights(spec, weights);
 * const again = loadWeights(spec, bytes);
 */
export function saveWeights(
  spec: unknown,
  weights: WeightMap,
  metadata: Record<string, string> = {},
): Uint8Array {
  const table = paramTable(spec);
  checkWeights(table.analyzed.spec, weights);
  const ordered: WeightMap = new Map();
  for (const p of table.params) ordered.set(p.name, weights.get(p.name)!);
  const stem = specStem(spec);
  return writeSafetensors(ordered, {
    format: 'kernelwarehouse.js',
    spec: table.analyzed.spec.name,
    ...(stem ? { stem } : {}),
    ...metadata,
  });
}

/**
 * Load safetensors bytes as weights for a spec: float dtypes become float32, integer tensors are
 * dropped, and the result is checked (missing, extra, shape, non-finite) with a KwError naming
 * the tensor. A file whose metadata records a stem (`imagenet`, `small`) different from the
 * spec's `meta.stem` is refused with WEIGHTS_STEM.
 */
export function loadWeights(
  spec: unknown,
  bytes: Uint8Array,
  options: CheckWeightsOptions = {},
): WeightMap {
  const file = readSafetensors(bytes);
  const fileStem = file.metadata.stem;
  const stem = specStem(spec);
  if (fileStem && stem && fileStem !== stem) {
    if (fileStem === 'imagenet') assertOfficialStem(spec, 'these weights');
    throw new KwError(
      'WEIGHTS_STEM',
      `these weights were saved from a model with the ${fileStem} stem, spec "${paramTable(spec).analyzed.spec.name}" has the ${stem} stem; build it with --stem ${fileStem} (zoo option stem: '${fileStem}')`,
    );
  }
  for (const [name, t] of file.tensors) {
    if (
      !(t.data instanceof Float32Array || t.data instanceof Float64Array) &&
      paramTable(spec).byName.has(name)
    ) {
      throw new KwError(
        'WEIGHTS_DTYPE',
        `tensor "${name}": the spec needs floats, the file stores ${t.dtype}`,
      );
    }
  }
  const weights = safetensorsToWeights(file);
  checkWeights(spec, weights, options);
  if (options.allowExtra) {
    const table = paramTable(spec);
    for (const k of [...weights.keys()]) if (!table.byName.has(k)) weights.delete(k);
  }
  return weights;
}
