/**
 * The global average pool of the attention branches (KW, ODConv, DY-Conv, SE, ...) on the own
 * wasm kernels, with its gradient. tfjs's path (two one-axis means, each a float64-accumulating
 * `Mean` of fast-wasm.ts) ran its gradient as tfjs's `Mean` gradient twice: a `ones` of the
 * input's shape, a broadcast multiply and a divide over the whole feature map. Here the forward
 * is one pass over the input (per-sample channel sums in float64, `bn_moments` of
 * bn-kernels.ts) and the gradient one pass writing `dy / (H·W)` to every pixel (`copy_rows` with
 * a source stride of 0). `bench:wasm-kernels` times it against tfjs's ops (its pooling rows).
 * Values: the float64 mean rounded once to float32 (tfjs's path rounds after each axis), the
 * gradient `dy / (H·W)` rounded once.
 */
import * as tf from '@tensorflow/tfjs';
import { release, scratch } from './bn-wasm.js';
import {
  heapOffset,
  type KernelArgs,
  OwnKernelPath,
  registerOwnKernels,
  requireKernels,
  type WasmBackend,
} from './conv-wasm.js';

const FWD = 'KwWasmGlobalAvgPool';
const GRAD = 'KwWasmGlobalAvgPoolGrad';
const path = new OwnKernelPath();

/**
 * Turn this file's pooling on or off (on by default; the own kernels' switch,
 * `setOwnWasmKernels`, turns it off too); returns the previous setting. For side-by-side
 * benchmarks.
 */
export function setWasmGlobalAvgPool(enabled: boolean): boolean {
  return path.set(enabled);
}

/** The current setting of {@link setWasmGlobalAvgPool} (shard workers start with the main thread's). */
export function wasmGlobalAvgPoolSetting(): boolean {
  return path.enabled;
}

/** `x [N, H, W, C]` -> `[N, C]`, the mean over H and W. */
function forwardKernel({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { x } = inputs as { x: tf.TensorInfo };
  const [N, H, W, C] = x.shape as [number, number, number, number];
  const y = be.makeOutput([N, C], 'float32');
  const s = scratch(be, C);
  const K = requireKernels(be, FWD);
  const rows = H * W;
  const xo = heapOffset(be, x);
  // views after the last allocation (a growing heap moves); a shift of 0 (`coef`'s first row)
  const Y = be.typedArrayFromHeap(y) as Float32Array;
  const coef = be.typedArrayFromHeap(s.coef) as Float32Array;
  coef.fill(0, 0, C);
  const sums = new Float64Array(coef.buffer, s.accAt, C);
  const co = heapOffset(be, s.coef);
  for (let b = 0; b < N; b++) {
    sums.fill(0);
    K.bn_moments(xo + b * rows * C * 4, 0, rows, C, co, s.accAt);
    for (let c = 0; c < C; c++) Y[b * C + c] = sums[c]! / rows;
  }
  release(be, s);
  return y;
}

/** `dy [N, C]` -> `dx [N, H, W, C]`: `dy / (H·W)` at every pixel; attrs `h`, `w`. */
function gradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { dy } = inputs as { dy: tf.TensorInfo };
  const [N, C] = dy.shape as [number, number];
  const H = attrs!.h as number;
  const W = attrs!.w as number;
  const dx = be.makeOutput([N, H, W, C], 'float32');
  const row = be.makeOutput([N, C], 'float32');
  const rows = H * W;
  const D = be.typedArrayFromHeap(dy) as Float32Array;
  const R = be.typedArrayFromHeap(row) as Float32Array;
  for (let i = 0; i < N * C; i++) R[i] = D[i]! / rows;
  const K = requireKernels(be, GRAD);
  const ro = heapOffset(be, row);
  const xo = heapOffset(be, dx);
  // each sample's row repeated: a source stride of 0
  for (let b = 0; b < N; b++)
    K.copy_rows(ro + b * C * 4, xo + b * rows * C * 4, rows, 0, C * 4, C * 4);
  be.disposeData(row.dataId);
  return dx;
}

function ensureRegistered(): void {
  registerOwnKernels([
    [FWD, forwardKernel],
    [GRAD, gradKernel],
  ]);
  if (tf.getGradient(FWD)) return;
  // the gradient's gradient (second-order autodiff): dx = dy / (H·W) spread over the map, so
  // d(dx)/d(dy) applied to g is the pool of g
  tf.registerGradient({
    kernelName: GRAD,
    gradFunc: (g) => ({
      dy: () => tf.engine().runKernel(FWD, { x: g as tf.Tensor }) as tf.Tensor,
    }),
  });
  tf.registerGradient({
    kernelName: FWD,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => {
      const [x] = saved as tf.Tensor[];
      const [, h, w] = x!.shape;
      return {
        x: () =>
          tf.engine().runKernel(GRAD, { dy: dy as tf.Tensor }, { h: h!, w: w! }) as tf.Tensor,
      };
    },
  });
}

/**
 * The mean of an NHWC `x` over H and W (`[N, C]`) on the own wasm kernels, differentiable.
 * Returns `undefined` (the caller takes tfjs's ops) where the kernels do not apply: another
 * backend, kernels off, a non-float32 or non-4-D `x`, C not a multiple of 4, an empty `x`, or an
 * engine or heap they cannot run on.
 */
export function globalAvgPoolWasm(x: tf.Tensor): tf.Tensor | undefined {
  if (!path.active()) return undefined;
  if (x.dtype !== 'float32' || x.rank !== 4 || x.size === 0) return undefined;
  const C = x.shape[3]!;
  if (C % 4 !== 0) return undefined;
  ensureRegistered();
  return tf.engine().runKernel(FWD, { x }) as tf.Tensor;
}
