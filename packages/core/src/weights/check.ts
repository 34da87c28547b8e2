import { describeValue, KwError } from '../errors.js';
import { paramTable } from '../params.js';
import { numel, type Tensor, type WeightMap } from '../tensor.js';

/** Options of {@link checkWeights}. */
export interface CheckWeightsOptions {
  /** Allow tensors the spec does not declare (they are ignored). Default false. */
  allowExtra?: boolean;
  /** Allow missing buffers (BatchNorm running stats then default to 0 / 1). Default false. */
  allowMissingBuffers?: boolean;
}

/** A BatchNorm running variance (`bn1.running_var`, `attention.bn.running_var`, ...). */
function isRunningVar(name: string): boolean {
  return name === 'running_var' || name.endsWith('.running_var');
}

/**
 * Check a weight map against a spec: every declared tensor present with the declared
 * shape and only finite values (BatchNorm running variances also >= 0), and (unless allowed)
 * nothing extra. Throws a KwError (WEIGHTS_MISSING, WEIGHTS_UNEXPECTED, WEIGHTS_SHAPE,
 * WEIGHTS_NOT_FINITE) naming the tensor.
 */
export function checkWeights(
  spec: unknown,
  weights: WeightMap,
  options: CheckWeightsOptions = {},
): void {
  if (!(weights instanceof Map)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `weights must be a Map<string, Tensor>, found ${describeValue(weights)}`,
    );
  }
  const table = paramTable(spec);
  const missing: string[] = [];
  for (const p of table.params) {
    const t = weights.get(p.name);
    if (t === undefined) {
      if (!(p.role === 'buffer' && options.allowMissingBuffers)) missing.push(p.name);
      continue;
    }
    checkTensor(p.name, t, p.shape);
  }
  if (missing.length) {
    throw new KwError(
      'WEIGHTS_MISSING',
      `${missing.length} tensor(s) the spec "${table.analyzed.spec.name}" needs are missing: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`,
      { missing },
    );
  }
  if (!options.allowExtra) {
    const extra = [...weights.keys()].filter((k) => !table.byName.has(k));
    if (extra.length) {
      throw new KwError(
        'WEIGHTS_UNEXPECTED',
        `${extra.length} tensor(s) are not part of spec "${table.analyzed.spec.name}": ${extra.slice(0, 8).join(', ')}${extra.length > 8 ? ', ...' : ''}`,
        { extra },
      );
    }
  }
}

/**
 * Shape, dtype and finiteness check of one named tensor (and, for a BatchNorm running
 * variance, that no value is negative: sqrt(var + eps) would turn the output into NaN).
 */
export function checkTensor(name: string, t: Tensor, shape: readonly number[]): void {
  if (typeof t !== 'object' || t === null) {
    throw new KwError(
      'WEIGHTS_DTYPE',
      `tensor "${name}": expected { shape, data: Float32Array }, found ${describeValue(t)}`,
      { name },
    );
  }
  if (!Array.isArray(t.shape)) {
    throw new KwError(
      'WEIGHTS_SHAPE',
      `tensor "${name}": expected shape [${shape.join(', ')}], found ${describeValue(t.shape)}`,
      { name, expected: [...shape], actual: t.shape },
    );
  }
  if (!(t.data instanceof Float32Array)) {
    throw new KwError(
      'WEIGHTS_DTYPE',
      `tensor "${name}": expected Float32Array data, found ${Object.prototype.toString.call(t.data)}`,
    );
  }
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new KwError(
      'WEIGHTS_SHAPE',
      `tensor "${name}": expected shape [${shape.join(', ')}], found [${t.shape.join(', ')}]`,
      {
        name,
        expected: [...shape],
        actual: [...t.shape],
      },
    );
  }
  if (t.data.length !== numel(shape)) {
    throw new KwError(
      'WEIGHTS_SHAPE',
      `tensor "${name}": shape [${shape.join(', ')}] needs ${numel(shape)} values, data has ${t.data.length}`,
    );
  }
  const nonNegative = isRunningVar(name);
  const data = t.data;
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!Number.isFinite(x)) {
      throw new KwError(
        'WEIGHTS_NOT_FINITE',
        `tensor "${name}": element ${i} is ${x} (weights must be finite)`,
        { name, index: i, value: x },
      );
    }
    if (nonNegative && x < 0) {
      throw new KwError(
        'WEIGHTS_NOT_FINITE',
        `tensor "${name}": element ${i} is ${x}, expected >= 0 (a BatchNorm running variance cannot be negative: sqrt(var + eps) would give NaN)`,
        { name, index: i, value: x },
      );
    }
  }
}
