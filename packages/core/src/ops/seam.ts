/**
 * The op seam: the small, backend-neutral set of tensor ops every method's forward is written
 * against (once, in core). The reference executor (Float32Array), the tfjs adapter
 * (differentiable tf ops) and the ONNX builder (graph values) each implement {@link Ops} over
 * their own opaque tensor handle `T`. A backend keeps its own fast paths behind these ops
 * (tfjs's per-sample loop, ONNX BatchNorm folding and the fixed-batch grouped Conv).
 *
 * Conventions:
 * - Plain tensors are row-major in their logical layout. A leading dimension may be the batch;
 *   forwards never read the batch size (a graph builder keeps it dynamic): reshapes name it -1.
 * - Feature maps ("images", logically `[N, C, H, W]`) stay in the backend's own layout (tfjs
 *   holds NHWC); only the image ops below touch them, so a layout change happens only at a
 *   backend's edge. Conv weights are OIHW everywhere.
 * - A seam instance is bound to one layer call: {@link Ops.param} names are relative to the
 *   layer's node id, {@link Ops.shared} names are full (warehouses).
 */
import type { Pair } from '../spec/types.js';

/** Convolution geometry as the seam takes it. */
export interface ConvAttrs {
  stride: Pair;
  padding: Pair;
  dilation: Pair;
  groups: number;
}

/** A conv's output size along one axis (floor mode, PyTorch / ONNX / tfjs "valid" + explicit pads). */
export function convOutputLength(
  size: number,
  kernel: number,
  stride: number,
  padding: number,
  dilation = 1,
): number {
  return Math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

/** `[H', W']` of a conv (or pool: dilation 1) on an `[H, W]` input. */
export function convOutputSize(
  hw: readonly [number, number] | readonly number[],
  kernel: Pair,
  stride: Pair,
  padding: Pair,
  dilation: Pair = [1, 1],
): [number, number] {
  return [
    convOutputLength(hw[0]!, kernel[0], stride[0], padding[0], dilation[0]),
    convOutputLength(hw[1]!, kernel[1], stride[1], padding[1], dilation[1]),
  ];
}

/** A per-sample conv's bias: one `[O]` vector shared by the batch, or a `[N, O]` value. */
export type SampleBias<T> = { shared: T } | { perSample: T } | undefined;

/** The op set of one layer call. `T` is the backend's tensor handle. */
export interface Ops<T> {
  /** Whether BatchNorms use batch statistics (and, where the backend trains, update running ones). */
  readonly training: boolean;
  /**
   * The kernel layout the backend's {@link Ops.perSampleConv} works in: `'oihw'` (the default)
   * or `'hwio'` (tfjs). A method that builds kernels as a product may lay out its constant side
   * so that the product comes out closer to that layout and the permutation it passes is
   * cheaper (KW: the warehouse's cells transposed to `[c_in, c_out]`, a few KB per step, so
   * that a layer with G_out = 1 gets HWIO kernels with no per-sample transpose at all).
   */
  readonly kernelLayout?: 'oihw' | 'hwio';

  /** The layer's tensor `name` (relative to its node id, e.g. `attention.fc1.weight`). */
  param(name: string): T;
  /** A tensor by its full name, shared across layers (e.g. `warehouses.stage0`). */
  shared(name: string): T;
  /** A constant (never trained). */
  constant(data: Float32Array, shape: number[]): T;

  /** Same values, new shape; one dimension may be -1. */
  reshape(t: T, shape: number[]): T;
  /** Permute axes. */
  transpose(t: T, perm: number[]): T;
  /** `t[..., start:end, ...]` along `axis`. */
  slice(t: T, axis: number, start: number, end: number): T;
  /** Join along `axis`. */
  concat(ts: T[], axis: number): T;

  /** Element-wise with numpy broadcasting. */
  add(a: T, b: T): T;
  /** Element-wise with numpy broadcasting. */
  mul(a: T, b: T): T;
  /** Element-wise with numpy broadcasting. */
  div(a: T, b: T): T;
  /** `t + s`. */
  addScalar(t: T, s: number): T;
  /** `t * s`. */
  mulScalar(t: T, s: number): T;
  /** `|t|`. */
  abs(t: T): T;
  /** `max(t, 0)`. */
  relu(t: T): T;
  /** `1 / (1 + exp(-t / temperature))`. */
  sigmoid(t: T, temperature?: number): T;
  /** Softmax of `t / temperature` over the last axis. */
  softmax(t: T, temperature?: number): T;
  /** Sum over `axis`. */
  sum(t: T, axis: number, keepDims: boolean): T;

  /**
   * Matrix product over the last two axes, leading (batch) axes broadcast:
   * `a [..., m, k] x b [..., k, n]` (`b [..., n, k]` when `transB`).
   */
  matMul(a: T, b: T, transB?: boolean): T;
  /** `x [N, I] -> x W^T (+ b)` with `W` stored `[O, I, ...1]` (a Linear or a 1x1 conv weight). */
  linear(x: T, weight: T, bias?: T): T;
  /**
   * BatchNorm over the channel axis (axis 1 of `[N, C]`, the channel axis of an image) with the
   * layer's tensors `<prefix>.weight`, `.bias`, `.running_mean`, `.running_var`.
   */
  batchNorm(x: T, prefix: string, eps: number, momentum: number): T;
  /** LayerNorm over the last axis of `[N, C]` with `<prefix>.weight` and `.bias`. */
  layerNorm(x: T, prefix: string, eps: number): T;

  /** Image `[N, C, H, W]` -> `[N, C]` (mean over the spatial axes). */
  globalAvgPool(x: T): T;
  /** Image conv with one OIHW weight (+ bias `[O]`). */
  conv2d(x: T, weight: T, bias: T | undefined, attrs: ConvAttrs): T;
  /**
   * Each sample convolved with its own kernel: `kernels` holds the samples' OIHW kernels in
   * order (`[N, O, I/g, kh, kw]` or any shape with that element order), after
   * `transpose(kernels, kernelPerm)` when `kernelPerm` is given. Passing the permutation instead
   * of transposing first lets a backend fold it into its own layout change (tfjs: one
   * transpose straight to HWIO).
   */
  perSampleConv(
    x: T,
    kernels: T,
    attrs: ConvAttrs & { outChannels: number; kernelSize: Pair },
    bias?: SampleBias<T>,
    kernelPerm?: number[],
  ): T;
  /** Image times per-sample channel values `s [N, C]`. */
  scaleChannels(x: T, s: T): T;
  /**
   * Optional: a KW conv's taps mixed by its attention, for the mixed form of the conv (kw.ts's
   * `kwMixedConv`). `x` is an image `[N, C, H, W]` with `C = G_in·c_in`, `alpha [N, m, n]` a
   * layer's attention (cell `i = (t·G_out + g)·G_in + q` for kernel tap `t = h·kw + w`, zero
   * cell dropped). Returns the image `[N, G_out·n·c_in, H', W']` (the conv's output size) whose
   * channel `(g, k, c)` is the sum over taps t and input groups q of `alpha[:, i, k]` times
   * channel `q·c_in + c` of `x` at tap t of each output pixel (zero padding), or `undefined`
   * where the backend does not take it (core then assembles per-sample kernels). A backend
   * leaves it out, or returns `undefined`, where the mixed form does not pay on it.
   */
  mixTaps?(x: T, alpha: T, attrs: MixTapsAttrs): T | undefined;
  /**
   * Optional: a 1x1 conv (stride 1, no padding) of an image `[N, G·C, H, W]` that applies one
   * weight `[O, C, 1, 1]` to each of its `groups` = G channel groups (+ bias `[G·O]`):
   * `[N, G·O, H, W]`, output channel `g·O + o` from group g. Where a backend leaves it out, core
   * runs the grouped {@link Ops.conv2d} with the weight repeated G times (the mixed form of a KW
   * conv with G_out > 1 needs it; the gradient of the one weight is the sum over the groups).
   */
  sharedGroupsConv1x1?(x: T, weight: T, groups: number, bias?: T): T;
}

/**
 * The geometry {@link Ops.mixTaps} gets: the conv's, its cell groups, `c_out` per cell and the
 * warehouse's cell count `n` (the attention's last dim: a backend that cannot read it from the
 * value, such as an exporter, weighs the two forms with it).
 */
export interface MixTapsAttrs extends ConvAttrs {
  kernelSize: Pair;
  gOut: number;
  gIn: number;
  cellOut: number;
  n: number;
}
