/**
 * A training BatchNorm over the last axis on the own wasm kernels (bn-kernels.ts), with its
 * gradient. tfjs's autodiff of `batchNormLast` (the batch moments, then `(x - mean) · w /
 * sqrt(var + eps) + b`) runs ~20 elementwise kernels and reductions over the feature map per
 * training step, each a pass over memory; here the forward is two passes (the moments, the
 * normalisation) and the backward two (the gradient sums, the input gradient).
 * `bench:wasm-kernels` times it against tfjs's ops (its BatchNorm rows). Values equal the
 * autodiff path's up to float rounding (sums in float64 in both; here also the float64 remainder
 * of the mean, see {@link forwardKernel}).
 */
import * as tf from '@tensorflow/tfjs';
import {
  heapOffset,
  type KernelArgs,
  OwnKernelPath,
  refuseSecondOrder,
  registerOwnKernels,
  requireKernels,
  type WasmBackend,
  zeros,
} from './conv-wasm.js';

const FWD = 'KwWasmBatchNorm';
const GRAD = 'KwWasmBatchNormGrad';
const path = new OwnKernelPath();

/**
 * Turn this file's BatchNorm on or off (on by default; the own kernels' switch,
 * `setOwnWasmKernels`, turns it off too); returns the previous setting. For side-by-side
 * benchmarks.
 */
export function setWasmBatchNorm(enabled: boolean): boolean {
  return path.set(enabled);
}

/** The current setting of {@link setWasmBatchNorm} (shard workers start with the main thread's). */
export function wasmBatchNormSetting(): boolean {
  return path.enabled;
}

/** Scratch of a kernel call: per-channel coefficients `[4, C]` and two float64 rows of sums. */
export interface Scratch {
  coef: tf.TensorInfo;
  acc: tf.TensorInfo;
  /** Byte address of the (8-byte aligned) float64 sums. */
  accAt: number;
}

/** The {@link Scratch} of C channels (the sums zeroed; gap-wasm.ts takes it too). */
export function scratch(be: WasmBackend, C: number): Scratch {
  const coef = be.makeOutput([4 * C], 'float32');
  // 2C float64 sums = 4C float32, plus one float64 of slack to align them to 8 bytes
  const acc = zeros(be, [4 * C + 2]);
  const at = heapOffset(be, acc);
  return { coef, acc, accAt: at + (at % 8) };
}

/** Frees a {@link scratch}. */
export function release(be: WasmBackend, s: Scratch): void {
  be.disposeData(s.coef.dataId);
  be.disposeData(s.acc.dataId);
}

/**
 * What both kernels start with: float32 outputs (`x`'s shape, then `perChannel` of `[C]`), the
 * scratch, and float32 views of `inputs` and the outputs plus a float64 view of the sums, all
 * taken after the last allocation (a growing heap moves).
 */
function setUp(be: WasmBackend, x: tf.TensorInfo, inputs: tf.TensorInfo[], perChannel: number) {
  const C = x.shape[x.shape.length - 1]!;
  const rows = tf.util.sizeFromShape(x.shape) / C;
  const shapes = [[...x.shape], ...new Array<number[]>(perChannel).fill([C])];
  const outs = shapes.map((shape) => be.makeOutput(shape, 'float32'));
  const s = scratch(be, C);
  const f32 = (t: tf.TensorInfo) => be.typedArrayFromHeap(t) as Float32Array;
  const coef = f32(s.coef);
  const sums = new Float64Array(coef.buffer, s.accAt, 2 * C);
  return { C, rows, outs, s, coef, sums, ins: inputs.map(f32), out: outs.map(f32) };
}

/**
 * Outputs `[y, mean, variance, meanLow]`: the batch mean as float32, the biased variance (as
 * `tf.moments`), and what the float32 mean misses of the float64 one (`mean + meanLow` is the
 * mean to ~1e-14), which both kernels fold into their per-channel shift: `x - mean` is exact in
 * float32 for x near the mean, so y and the gradients do not carry the mean's rounding (half an
 * ulp of the mean: 4e-5 of the spread for values 1000x their spread from 0).
 */
function forwardKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { x, weight, bias } = inputs as Record<string, tf.TensorInfo>;
  const eps = attrs!.eps as number;
  const { C, rows, outs, s, coef, sums, ins, out } = setUp(be, x!, [x!, weight!, bias!], 3);
  const [X, W, B] = ins as [Float32Array, Float32Array, Float32Array];
  const [, M, V, L] = out as [Float32Array, Float32Array, Float32Array, Float32Array];
  // moments about the first row (close to the mean, so E[u²] - E[u]² loses nothing in float64)
  coef.set(X.subarray(0, C));
  const K = requireKernels(be, FWD);
  K.bn_moments(heapOffset(be, x!), 0, rows, C, heapOffset(be, s.coef), s.accAt);
  for (let c = 0; c < C; c++) {
    const m1 = sums[c]! / rows;
    const mean = coef[c]! + m1;
    M[c] = mean;
    L[c] = mean - M[c]!;
    V[c] = Math.max(sums[C + c]! / rows - m1 * m1, 0);
    // y = (x - mean) a + b = (x - M) a + (b - L a)
    const a = W[c]! / Math.sqrt(V[c]! + eps);
    coef[c] = M[c]!;
    coef[C + c] = a;
    coef[2 * C + c] = B[c]! - L[c]! * a;
  }
  K.bn_norm(heapOffset(be, x!), 0, heapOffset(be, outs[0]!), rows, C, heapOffset(be, s.coef));
  release(be, s);
  return outs;
}

/** Outputs `[dx, dweight, dbias]` for dy of `y`, from the forward's input and statistics. */
function gradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { dy, x, weight, mean, variance, meanLow } = inputs as Record<string, tf.TensorInfo>;
  const eps = attrs!.eps as number;
  const setup = setUp(be, x!, [weight!, mean!, variance!, meanLow!], 2);
  const { C, rows, outs, s, coef, sums, ins, out } = setup;
  const [W, M, V, L] = ins as [Float32Array, Float32Array, Float32Array, Float32Array];
  const [, DW, DB] = out as [Float32Array, Float32Array, Float32Array];
  coef.set(M.subarray(0, C));
  const K = requireKernels(be, FWD);
  const at = [x!, dy!].map((t) => heapOffset(be, t)) as [number, number];
  K.bn_gsums(...at, rows, C, heapOffset(be, s.coef), s.accAt);
  for (let c = 0; c < C; c++) {
    // sums: sum(dy) and sum(dy · (x - M)), so sum(dy · (x - mean)) = the second - L · the
    // first; dx = k (dy - db/rows - x̂ dw/rows), k = w / σ, x̂ = (x - M - L) / σ
    const rstd = 1 / Math.sqrt(V[c]! + eps);
    const k = W[c]! * rstd;
    const sb = sums[c]!;
    const sw = sums[C + c]! - L[c]! * sb;
    DB[c] = sb;
    DW[c] = sw * rstd;
    const a = (-k * rstd * rstd * sw) / rows;
    coef[C + c] = a;
    coef[2 * C + c] = (-k * sb) / rows - L[c]! * a;
    coef[3 * C + c] = k;
  }
  K.bn_dx(...at, heapOffset(be, outs[0]!), rows, C, heapOffset(be, s.coef));
  release(be, s);
  return outs;
}

function ensureRegistered(): void {
  registerOwnKernels([
    [FWD, forwardKernel],
    [GRAD, gradKernel],
  ]);
  if (tf.getGradient(FWD)) return;
  // the gradient's own gradient (second-order autodiff through a training BatchNorm) is not
  // written: say so and how to get it, instead of tfjs's "gradient function not found"
  refuseSecondOrder(
    GRAD,
    'second-order gradients through a training BatchNorm are not implemented on the own wasm kernels; call setOwnWasmKernels(false) for them (tfjs ops), or use the cpu backend',
  );
  tf.registerGradient({
    kernelName: FWD,
    inputsToSave: ['x', 'weight'],
    outputsToSave: [false, true, true, true],
    gradFunc: (dys, saved, attrs) => {
      const [x, weight, mean, variance, meanLow] = saved as tf.Tensor[];
      const dy = (dys as tf.Tensor[])[0]!;
      // all three in one kernel call, here (the tape calls each input's function in a tidy of
      // its own, as customGrad's functions are called: the three results live in the outer one)
      const [dx, dw, db] = tf.engine().runKernel(
        GRAD,
        { dy, x: x!, weight: weight!, mean: mean!, variance: variance!, meanLow: meanLow! },
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
  if (!path.active()) return undefined;
  const C = x.shape[x.shape.length - 1] ?? 0;
  if ([x, weight, bias].some((t) => t.dtype !== 'float32')) return undefined;
  if (x.rank < 2 || C < 4 || C % 4 !== 0 || x.size === 0) return undefined;
  if ([weight, bias].some((t) => t.rank !== 1 || t.shape[0] !== C)) return undefined;
  ensureRegistered();
  const [y, mean, variance, meanLow] = tf
    .engine()
    .runKernel(FWD, { x, weight, bias }, { eps }) as tf.Tensor[];
  // meanLow is for the gradient alone, which keeps its own copy (a taped kernel's saved outputs)
  meanLow!.dispose();
  return { y: y!, mean: mean!, variance: variance! };
}
