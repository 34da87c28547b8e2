/**
 * A training BatchNorm over the last axis on the own wasm kernels (bn-kernels.ts), with its
 * gradient. tfjs's autodiff of `batchNormLast` (the batch moments, then `(x - mean) · w /
 * sqrt(var + eps) + b`) runs ~20 elementwise kernels and reductions over the feature map per
 * training step, each a pass over memory; here the forward is two passes (the moments, the
 * normalisation) and the backward two (the gradient sums, the input gradient).
 * `bench:tfjs-profile` has the step times; values equal the autodiff path's up to float rounding
 * (sums in float64 in both).
 */
import * as tf from '@tensorflow/tfjs';
import {
  activeOwnKernels,
  heapOffset,
  type KernelArgs,
  type Kernels,
  type WasmBackend,
  zeros,
} from './conv-wasm.js';

const FWD = 'KwWasmBatchNorm';
let on = true;

/**
 * Turn this file's BatchNorm on or off (on by default; the own kernels' switch,
 * `setOwnWasmKernels`, turns it off too); returns the previous setting. For side-by-side
 * benchmarks.
 */
export function setWasmBatchNorm(enabled: boolean): boolean {
  const was = on;
  on = enabled;
  return was;
}
const GRAD = 'KwWasmBatchNormGrad';

/** Scratch of a kernel call: per-channel coefficients `[4, C]` and two float64 rows of sums. */
interface Scratch {
  coef: tf.TensorInfo;
  acc: tf.TensorInfo;
  /** Byte address of the (8-byte aligned) float64 sums. */
  accAt: number;
}

function scratch(be: WasmBackend, C: number): Scratch {
  const coef = be.makeOutput([4 * C], 'float32');
  // 2C float64 sums = 4C float32, plus one float64 of slack to align them to 8 bytes
  const acc = zeros(be, [4 * C + 2]);
  const at = heapOffset(be, acc);
  return { coef, acc, accAt: at + (at % 8) };
}

function release(be: WasmBackend, s: Scratch): void {
  be.disposeData(s.coef.dataId);
  be.disposeData(s.acc.dataId);
}

/** Views of the heap, taken after the last allocation of a call (a growing heap moves). */
function views(be: WasmBackend, s: Scratch, C: number) {
  const coef = be.typedArrayFromHeap(s.coef) as Float32Array;
  return { coef, sums: new Float64Array(coef.buffer, s.accAt, 2 * C) };
}

function kernels(): Kernels {
  const own = activeOwnKernels();
  if (!own) throw new Error(`${FWD}: the own wasm kernels are not available`);
  return own.kernels;
}

function geometry(x: tf.TensorInfo): { C: number; rows: number } {
  const C = x.shape[x.shape.length - 1]!;
  return { C, rows: tf.util.sizeFromShape(x.shape) / C };
}

/** Outputs `[y, mean, variance]` (the biased batch variance, as `tf.moments`). */
function forwardKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { x, weight, bias } = inputs as Record<string, tf.TensorInfo>;
  const eps = attrs!.eps as number;
  const { C, rows } = geometry(x!);
  const y = be.makeOutput([...x!.shape], 'float32');
  const mean = be.makeOutput([C], 'float32');
  const variance = be.makeOutput([C], 'float32');
  const s = scratch(be, C);
  const { coef, sums } = views(be, s, C);
  const X = be.typedArrayFromHeap(x!) as Float32Array;
  const W = be.typedArrayFromHeap(weight!) as Float32Array;
  const B = be.typedArrayFromHeap(bias!) as Float32Array;
  const M = be.typedArrayFromHeap(mean) as Float32Array;
  const V = be.typedArrayFromHeap(variance) as Float32Array;
  // moments about the first row (close to the mean, so E[u²] - E[u]² loses nothing in float64)
  coef.set(X.subarray(0, C));
  const K = kernels();
  K.bn_moments(heapOffset(be, x!), 0, rows, C, heapOffset(be, s.coef), s.accAt);
  for (let c = 0; c < C; c++) {
    const m1 = sums[c]! / rows;
    M[c] = coef[c]! + m1;
    V[c] = Math.max(sums[C + c]! / rows - m1 * m1, 0);
    coef[c] = M[c]!;
    coef[C + c] = W[c]! / Math.sqrt(V[c]! + eps);
    coef[2 * C + c] = B[c]!;
  }
  K.bn_norm(heapOffset(be, x!), 0, heapOffset(be, y), rows, C, heapOffset(be, s.coef));
  release(be, s);
  return [y, mean, variance];
}

/** Outputs `[dx, dweight, dbias]` for dy of `y`, from the forward's input and statistics. */
function gradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { dy, x, weight, mean, variance } = inputs as Record<string, tf.TensorInfo>;
  const eps = attrs!.eps as number;
  const { C, rows } = geometry(x!);
  const dx = be.makeOutput([...x!.shape], 'float32');
  const dw = be.makeOutput([C], 'float32');
  const db = be.makeOutput([C], 'float32');
  const s = scratch(be, C);
  const { coef, sums } = views(be, s, C);
  const W = be.typedArrayFromHeap(weight!) as Float32Array;
  const M = be.typedArrayFromHeap(mean!) as Float32Array;
  const V = be.typedArrayFromHeap(variance!) as Float32Array;
  const DW = be.typedArrayFromHeap(dw) as Float32Array;
  const DB = be.typedArrayFromHeap(db) as Float32Array;
  coef.set(M.subarray(0, C));
  const K = kernels();
  const at = [x!, dy!].map((t) => heapOffset(be, t)) as [number, number];
  K.bn_gsums(...at, rows, C, heapOffset(be, s.coef), s.accAt);
  for (let c = 0; c < C; c++) {
    // sums: sum(dy) and sum(dy · (x - mean)); dx = k (dy - db/rows - x̂ dw/rows), k = w / σ
    const rstd = 1 / Math.sqrt(V[c]! + eps);
    const k = W[c]! * rstd;
    DB[c] = sums[c]!;
    DW[c] = sums[C + c]! * rstd;
    coef[C + c] = (-k * rstd * rstd * sums[C + c]!) / rows;
    coef[2 * C + c] = (-k * sums[c]!) / rows;
    coef[3 * C + c] = k;
  }
  K.bn_dx(...at, heapOffset(be, dx), rows, C, heapOffset(be, s.coef));
  release(be, s);
  return [dx, dw, db];
}

function ensureRegistered(): void {
  for (const [kernelName, fn] of [
    [FWD, forwardKernel],
    [GRAD, gradKernel],
  ] as const) {
    if (tf.getKernel(kernelName, 'wasm')) continue;
    tf.registerKernel({
      kernelName,
      backendName: 'wasm',
      kernelFunc: fn as unknown as tf.KernelFunc,
    });
  }
  if (tf.getGradient(FWD)) return;
  tf.registerGradient({
    kernelName: FWD,
    inputsToSave: ['x', 'weight'],
    outputsToSave: [false, true, true],
    gradFunc: (dys, saved, attrs) => {
      const [x, weight, mean, variance] = saved as tf.Tensor[];
      const dy = (dys as tf.Tensor[])[0]!;
      // all three in one kernel call, here (the tape calls each input's function in a tidy of
      // its own, as customGrad's functions are called: the three results live in the outer one)
      const [dx, dw, db] = tf.engine().runKernel(
        GRAD,
        { dy, x: x!, weight: weight!, mean: mean!, variance: variance! },
        {
          eps: attrs.eps as number,
        },
      ) as tf.Tensor[];
      return { x: () => dx!, weight: () => dw!, bias: () => db! };
    },
  });
}

/**
 * A training BatchNorm over the last axis of `x` (`[..., C]`, batch statistics) on the own wasm
 * kernels, differentiable in `x`, `weight` and `bias`: `y = (x - mean) · weight / sqrt(variance
 * + eps) + bias`, with the batch `mean` and biased `variance` (for the running statistics).
 * Returns `undefined` (the caller takes tfjs's ops) where the kernels do not apply: another
 * backend, kernels off, non-float32 tensors, C not a multiple of 4, `weight` / `bias` not `[C]`,
 * an empty `x`, or an engine or heap they cannot run on.
 */
export function batchNormTrainWasm(
  x: tf.Tensor,
  weight: tf.Tensor,
  bias: tf.Tensor,
  eps: number,
): { y: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor } | undefined {
  if (!on || !activeOwnKernels()) return undefined;
  const C = x.shape[x.shape.length - 1] ?? 0;
  if ([x, weight, bias].some((t) => t.dtype !== 'float32')) return undefined;
  if (x.rank < 2 || C < 4 || C % 4 !== 0 || x.size === 0) return undefined;
  if ([weight, bias].some((t) => t.rank !== 1 || t.shape[0] !== C)) return undefined;
  ensureRegistered();
  const [y, mean, variance] = tf
    .engine()
    .runKernel(FWD, { x, weight, bias }, { eps }) as tf.Tensor[];
  return { y: y!, mean: mean!, variance: variance! };
}
