import { KwError } from './errors.js';

/** A dense float32 tensor in row-major order. Activations are NCHW, conv weights OIHW. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Named tensors: the weights of a model, keyed by stable dotted names. */
export type WeightMap = Map<string, Tensor>;

/** Number of elements of a shape (1 for a scalar shape `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Create a tensor, checking that `data` has exactly `numel(shape)` elements. */
export function tensor(shape: readonly number[], data?: Float32Array | ArrayLike<number>): Tensor {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new KwError(
        'TENSOR_SHAPE',
        `tensor shape [${shape.join(', ')}] has a dimension that is not a non-negative integer`,
      );
    }
  }
  const n = numel(shape);
  let buf: Float32Array;
  if (data === undefined) buf = new Float32Array(n);
  else if (data instanceof Float32Array) buf = data;
  else buf = Float32Array.from(data);
  if (buf.length !== n) {
    throw new KwError(
      'TENSOR_SHAPE',
      `tensor data has ${buf.length} elements but shape [${shape.join(', ')}] needs ${n}`,
      { expected: n, actual: buf.length },
    );
  }
  return { shape: [...shape], data: buf };
}

/** Same shape check as the executors use: throws TENSOR_SHAPE naming `what`. */
export function assertShape(
  what: string,
  actual: readonly number[],
  expected: readonly number[],
): void {
  if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) {
    throw new KwError(
      'TENSOR_SHAPE',
      `${what}: expected shape [${expected.join(', ')}], found [${actual.join(', ')}]`,
      { expected: [...expected], actual: [...actual] },
    );
  }
}

/** Largest |a-b| / max(|b|, floor) over two equally long arrays. */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) {
    throw new KwError(
      'TENSOR_SHAPE',
      `compared arrays differ in length: ${a.length} vs ${b.length}`,
    );
  }
  let scale = floor;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) return Number.POSITIVE_INFINITY;
    worst = Math.max(worst, d);
  }
  return worst / scale;
}
