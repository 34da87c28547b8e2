/**
 * Faster versions of the tfjs wasm kernels that per-sample convolution leans on, and more
 * exact `Sum` / `Mean`. Measured in tfjs-backend-wasm 4.22 (benchmarks/tfjs-wasm-kernels.mjs):
 *
 * - `Slice` copies the WHOLE input out of the wasm heap (`readSync`) before taking its part, so
 *   splitting a batch of B kernels into B slices moves B times the batch: O(B^2). `Unpack` and
 *   `SplitV` call that slice once per output. Here a contiguous slice is one `memcpy` inside
 *   the heap; other slices go to the stock kernel.
 * - `Reverse` loops per element in JavaScript; reversing leading axes (the spatial flip of an
 *   HWIO kernel in the conv input gradient) is a permutation of contiguous blocks, copied here
 *   block by block.
 * - `Transpose` moves element by element; batches of matrix transposes (KW's per-sample kernels
 *   between cell order and HWIO) go through 4x4 register blocks here (conv-wasm.ts).
 * - `BatchMatMul` / `_FusedMatMul` with `transposeA` or `transposeB` run up to 30x slower than
 *   the same product on explicitly transposed operands (the gradients of every matMul have
 *   one of the flags set); here the operand is transposed by the Transpose kernel first.
 * - `Sum` / `Mean` add in float32 one value after another: over the 12544 values a BatchNorm
 *   of a batch of 16 28x28 maps reduces, ~1e-6 relative error, which the BatchNorm backward
 *   amplifies: gradients were 0.5-1 % (median) away from PyTorch float64 (docs/parity.md). Here
 *   they add in float64 (as tfjs's cpu backend does): 3e-8, and gradients 1e-6 to 3e-5 away.
 *   Column sums skip the stock transpose: a ResNet-8 training step takes ~10 % less CPU time;
 *   long row sums are ~1.4-1.7x slower than the stock SIMD loop.
 *
 * - `Identity` (`tf.clone`, and the engine's copy of every tensor a gradient keeps while a tape
 *   records: the input of each Reshape, Cast, ...) copies the tensor in the heap; here it shares
 *   the input's memory (one more reference, as `Reshape` does and tfjs's cpu backend's
 *   `Identity` does: tensors are immutable). A KW 1x training step made ~830 such copies (80 ms,
 *   up to 75 MB each for the assembled kernels), a plain one ~340 (25 ms). `Cast` to the dtype
 *   the tensor already has is the same copy (most of a ResNet-8 training step's 67 Casts, 8 ms
 *   in `bench:tfjs-profile`: feature maps, from the gradients): shared the same way; real
 *   conversions take the stock kernel.
 * - `Conv2D` (an ordinary conv's forward) is XNNPACK's, which packs a new operator for every
 *   new filter tensor (every training step); the own `conv_fwd` kernel (conv-wasm.ts) reads
 *   the filter in 16-channel blocks with no packing: 1.2-1.5x faster (unfused) and 1.5-1.75x
 *   (fused) at most 3x3 ResNet shapes, 1.1-1.2x for a 1x1 (`bench:conv-forward`). Grouped,
 *   dilated, NCHW and odd-channel convs keep the stock kernel; a conv with an empty output is an
 *   empty tensor without it (XNNPACK corrupted the heap there) and one with a negative output
 *   size (a kernel larger than the padded image) is refused with `TENSOR_SHAPE`.
 *
 * Results are bit-identical for the copies and equal to float rounding for the products and
 * reductions.
 */
import { KwError } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import {
  conv2dForwardWasm,
  type KernelArgs,
  matMulNoPack,
  transposeBlocked,
  type WasmBackend,
} from './conv-wasm.js';

type TensorInfo = tf.TensorInfo;
type KernelFn = (args: KernelArgs) => TensorInfo | TensorInfo[];

/** Smallest contiguous block (elements) worth a block copy in Reverse. */
const MIN_BLOCK = 16;

function stock(name: string): tf.KernelConfig {
  const k = tf.getKernel(name, 'wasm');
  if (!k)
    throw new Error(`tfjs wasm has no ${name} kernel (is @tensorflow/tfjs-backend-wasm loaded?)`);
  return k;
}

/** A contiguous slice as one copy inside the heap, or `undefined` when it is not contiguous. */
function contiguousSlice(
  x: TensorInfo,
  begin: number[],
  size: number[],
  b: WasmBackend,
): TensorInfo | undefined {
  if (x.dtype === 'string' || !tf.slice_util.isSliceContinous(x.shape, begin, size)) return;
  const out = b.makeOutput(size, x.dtype);
  const n = tf.util.sizeFromShape(size);
  const off = tf.slice_util.computeFlatOffset(begin, tf.util.computeStrides(x.shape));
  // views taken after makeOutput: an allocation may grow (and move) the heap
  b.typedArrayFromHeap(out).set(b.typedArrayFromHeap(x).subarray(off, off + n));
  return out;
}

function makeSlice(prev: KernelFn): KernelFn {
  return (args) => {
    const x = args.inputs.x!;
    const [begin, size] = tf.slice_util.parseSliceParams(
      x as unknown as tf.Tensor,
      args.attrs!.begin as number[],
      args.attrs!.size as number[],
    );
    return contiguousSlice(x, begin, size, args.backend as WasmBackend) ?? prev(args);
  };
}

/** `parts` slices of `x` along `axis` with the given sizes, each fast where contiguous. */
function sliceAlong(
  args: KernelArgs,
  x: TensorInfo,
  axis: number,
  sizes: number[],
  slicer: KernelFn,
): TensorInfo[] {
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = [...x.shape];
    size[axis] = s;
    const out = slicer({
      inputs: { x },
      backend: args.backend,
      attrs: { begin: [...begin], size },
    });
    begin[axis]! += s;
    return out as TensorInfo;
  });
}

function makeUnpack(slicer: KernelFn): KernelFn {
  return (args) => {
    const value = args.inputs.value!;
    const axis = tf.util.parseAxisParam(args.attrs!.axis as number, value.shape)[0]!;
    const outShape = value.shape.filter((_, i) => i !== axis);
    const parts = sliceAlong(args, value, axis, new Array(value.shape[axis]!).fill(1), slicer);
    return parts.map((p) => ({ dataId: p.dataId, dtype: p.dtype, shape: outShape }));
  };
}

function makeSplitV(slicer: KernelFn): KernelFn {
  return (args) => {
    const x = args.inputs.x!;
    const axis = tf.util.parseAxisParam(args.attrs!.axis as number, x.shape)[0]!;
    const sizes = tf.backend_util.prepareSplitSize(
      x as unknown as tf.Tensor,
      args.attrs!.numOrSizeSplits as number | number[],
      axis,
    );
    return sliceAlong(args, x, axis, sizes, slicer);
  };
}

function makeReverse(prev: KernelFn): KernelFn {
  return (args) => {
    const x = args.inputs.x!;
    const dims = tf.util.parseAxisParam(args.attrs!.dims as number | number[], x.shape);
    if (x.dtype === 'string' || dims.length === 0) return prev(args);
    const last = Math.max(...dims);
    const block = tf.util.sizeFromShape(x.shape.slice(last + 1));
    if (block < MIN_BLOCK) return prev(args);
    const b = args.backend as WasmBackend;
    const out = b.makeOutput([...x.shape], x.dtype);
    const src = b.typedArrayFromHeap(x);
    const dst = b.typedArrayFromHeap(out);
    const outer = x.shape.slice(0, last + 1);
    const strides = tf.util.computeStrides(outer);
    const flip = outer.map((_, d) => dims.includes(d));
    const count = tf.util.sizeFromShape(outer);
    for (let o = 0; o < count; o++) {
      // output block o reads the input block with the flipped coordinates
      let rest = o;
      let s = 0;
      for (let d = 0; d < outer.length; d++) {
        const stride = d < outer.length - 1 ? strides[d]! : 1;
        const c = Math.floor(rest / stride);
        rest -= c * stride;
        s += (flip[d] ? outer[d]! - 1 - c : c) * stride;
      }
      dst.set(src.subarray(s * block, (s + 1) * block), o * block);
    }
    return out;
  };
}

/**
 * `Transpose`: batches of matrix transposes (KW's per-sample kernels between the warehouse's
 * cell order and HWIO) by 4x4 register blocks (`transposeBlocked` in conv-wasm.ts); the rest
 * by the stock kernel.
 */
function makeTranspose(prev: KernelFn): KernelFn {
  return (args) =>
    transposeBlocked(args.backend, args.inputs.x!, args.attrs!.perm as number[]) ?? prev(args);
}

/**
 * Identity (and a Cast to the input's own dtype when `cast`) as one more reference to the
 * input's memory; strings and real conversions take the stock kernel.
 */
function makeShare(prev: KernelFn, cast: boolean): KernelFn {
  return (args) => {
    const x = args.inputs.x!;
    if (x.dtype === 'string' || (cast && args.attrs!.dtype !== x.dtype)) return prev(args);
    (args.backend as WasmBackend).incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  };
}

/**
 * An ordinary conv's forward on the own `conv_fwd` kernel (conv-wasm.ts), which packs nothing;
 * what it does not cover takes the stock (XNNPACK) kernel.
 */
function makeConv2D(prev: KernelFn): KernelFn {
  return (args) =>
    emptyConv2D(args) ??
    conv2dForwardWasm(
      args.backend,
      args.inputs.x!,
      args.inputs.filter!,
      args.attrs as unknown as Parameters<typeof conv2dForwardWasm>[3],
    ) ??
    prev(args);
}

/**
 * A conv whose output has no elements, as an empty tensor, and one whose output size is negative
 * (a kernel larger than the padded image), refused: tfjs-backend-wasm 4.22's XNNPACK conv
 * corrupts the heap on an empty output (explicit padding that leaves no output row; a later
 * kernel then fails with "memory access out of bounds"), and tfjs computes a negative size into
 * a tensor of negative shape. `undefined` for every other conv (and where tfjs's own check
 * fails: the stock kernel reports that).
 */
function emptyConv2D(args: KernelArgs): TensorInfo | undefined {
  const { x, filter } = args.inputs as { x: TensorInfo; filter: TensorInfo };
  if (x.shape.length !== 4 || filter.shape.length !== 4) return undefined;
  const a = args.attrs as unknown as Parameters<typeof conv2dForwardWasm>[3];
  let info: tf.backend_util.Conv2DInfo;
  try {
    info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number],
      a.strides,
      a.dilations ?? 1,
      a.pad,
      a.dimRoundingMode,
      false,
      a.dataFormat === 'NCHW' ? 'channelsFirst' : 'channelsLast',
    );
  } catch {
    return undefined;
  }
  const { outHeight, outWidth } = info;
  if (outHeight < 0 || outWidth < 0)
    throw new KwError(
      'TENSOR_SHAPE',
      `conv2d: the ${info.filterHeight}x${info.filterWidth} kernel (dilation ${info.dilationHeight}x${info.dilationWidth}) does not fit the ${info.inHeight}x${info.inWidth} input with its padding (top ${info.padInfo.top}, bottom ${info.padInfo.bottom}, left ${info.padInfo.left}, right ${info.padInfo.right}): the output would be ${outHeight}x${outWidth}`,
      { field: 'x', actual: x.shape },
    );
  if (info.outShape.some((d) => d === 0))
    return (args.backend as WasmBackend).makeOutput([...info.outShape], x.dtype);
  return undefined;
}

/** `x` with its last two axes swapped, through the backend's Transpose kernel. */
function swapLast(x: TensorInfo, args: KernelArgs, transpose: KernelFn): TensorInfo {
  const r = x.shape.length;
  const perm = [...Array(r - 2).keys(), r - 1, r - 2];
  return transpose({ inputs: { x }, backend: args.backend, attrs: { perm } }) as TensorInfo;
}

/**
 * The `[K, N]` each `b` (by its data id) first had in a product that the stock kernel runs on
 * XNNPACK. tfjs-backend-wasm 4.22 keeps one fully connected operator per `b` id (with the bias
 * id and activation), `b` packed as its weights with the shape of that first call, and reuses it
 * for every later product with the same id: `b` under another shape (a `reshape`, which shares
 * the id) gave wrong values (`[2, 6] x reshape(w [4, 6], [6, 4])` after `[2, 4] x w` returned
 * the first product's columns) or read out of bounds.
 */
const xnnWeightShapes = new WeakMap<object, string>();

/** `t` (float32) copied into the heap under a new data id. */
function heapCopy(be: WasmBackend, t: TensorInfo): TensorInfo {
  const out = be.makeOutput(t.shape, t.dtype);
  (be.typedArrayFromHeap(out) as Float32Array).set(be.typedArrayFromHeap(t) as Float32Array);
  return out;
}

/**
 * `prev` on `inputs`, with `b` copied first where the stock kernel would take a cached XNNPACK
 * operator packed for another shape of it (see {@link xnnWeightShapes}): no batch axes other
 * than 1 in `a` or `b`, no transpose flag.
 */
function matMulFresh(prev: KernelFn, args: KernelArgs, inputs: Record<string, TensorInfo>) {
  const [a, b] = [inputs.a!, inputs.b!];
  const batch = (t: TensorInfo) => t.shape.slice(0, -2).reduce((p, d) => p * d, 1);
  if (batch(a) !== 1 || batch(b) !== 1) return prev({ ...args, inputs });
  const key = b.shape.slice(-2).join('x');
  const first = xnnWeightShapes.get(b.dataId);
  if (first === undefined) xnnWeightShapes.set(b.dataId, key);
  if (first === undefined || first === key) return prev({ ...args, inputs });
  const be = args.backend as WasmBackend;
  const copy = heapCopy(be, b);
  try {
    return prev({ ...args, inputs: { ...inputs, b: copy } });
  } finally {
    // disposing the copy deletes the operator cached for it
    be.disposeData(copy.dataId);
  }
}

/**
 * Products with a transpose flag are gradient products (whose operands are new on every step,
 * so XNNPACK's cached operators do not help): those with few output rows go to
 * `matMulNoPack` (conv-wasm.ts) when `noPack`. Every product goes past {@link matMulFresh}.
 */
function makeMatMul(prev: KernelFn, transpose: KernelFn, noPack: boolean): KernelFn {
  return (args) => {
    const attrs = args.attrs!;
    if (!attrs.transposeA && !attrs.transposeB) return matMulFresh(prev, args, args.inputs);
    const b = args.backend as WasmBackend;
    const temps: TensorInfo[] = [];
    const inputs = { ...args.inputs };
    if (attrs.transposeA) {
      inputs.a = swapLast(inputs.a!, args, transpose);
      temps.push(inputs.a);
    }
    if (attrs.transposeB) {
      inputs.b = swapLast(inputs.b!, args, transpose);
      temps.push(inputs.b);
    }
    try {
      const own = noPack ? matMulNoPack(args.backend, inputs.a!, inputs.b!) : undefined;
      if (own) return own;
      const plain = { ...args, attrs: { ...attrs, transposeA: false, transposeB: false } };
      return matMulFresh(prev, plain, inputs);
    } finally {
      for (const t of temps) b.disposeData(t.dataId);
    }
  };
}

/**
 * `Sum` / `Mean` over one contiguous run of axes of a float32 tensor, accumulated in float64.
 * The stock wasm kernels transpose the reduced axes innermost and add them one by one in
 * float32: over a BatchNorm's N*H*W = 12544 values that is ~1e-6 relative error (the cpu
 * backend, which adds in float64, ~2e-8), and the BatchNorm backward, which subtracts nearly
 * equal sums, amplified it into gradients 0.5-1 % away from PyTorch's (docs/parity.md). Here
 * the input is read in place as `[outer, reduce, inner]` (no transpose); axes that are not one
 * contiguous run, and other dtypes, go to the stock kernel.
 */
function makeReduce(prev: KernelFn, mean: boolean): KernelFn {
  return (args) => {
    const x = args.inputs.x!;
    const shape = x.shape;
    const axes = tf.util.parseAxisParam(args.attrs!.axis as number | number[], shape);
    const sorted = [...axes].sort((a, b) => a - b);
    const contiguous = sorted.every((a, i) => i === 0 || a === sorted[i - 1]! + 1);
    // an empty input too (the stock Mean divides by zero in wasm, or returns unset memory):
    // its sums and its means are 0, as tfjs's cpu kernels give
    if (x.dtype !== 'float32' || !contiguous) return prev(args);
    const first = sorted[0]!;
    const last = sorted[sorted.length - 1]!;
    const outer = tf.util.sizeFromShape(shape.slice(0, first));
    const red = tf.util.sizeFromShape(shape.slice(first, last + 1));
    const inner = tf.util.sizeFromShape(shape.slice(last + 1));
    const kept = shape.filter((_, i) => i < first || i > last);
    const outShape = args.attrs!.keepDims
      ? tf.backend_util.expandShapeToKeepDim(kept, sorted)
      : kept;
    const b = args.backend as WasmBackend;
    const out = b.makeOutput(outShape, 'float32');
    // views taken after makeOutput: an allocation may grow (and move) the heap
    const src = b.typedArrayFromHeap(x) as Float32Array;
    const dst = b.typedArrayFromHeap(out) as Float32Array;
    const scale = mean && red > 0 ? 1 / red : 1;
    if (inner === 1) {
      for (let o = 0; o < outer; o++) {
        let s = 0;
        const base = o * red;
        for (let r = 0; r < red; r++) s += src[base + r]!;
        dst[o] = s * scale;
      }
    } else {
      // column sums: four columns at a time, each in its own (float64) scalar accumulator,
      // walking the rows with stride `inner` (as fast as the stock kernel's transpose + sum)
      for (let o = 0; o < outer; o++) {
        const start = o * red * inner;
        const end = start + red * inner;
        let j = 0;
        for (; j + 4 <= inner; j += 4) {
          let s0 = 0;
          let s1 = 0;
          let s2 = 0;
          let s3 = 0;
          for (let k = start + j; k < end; k += inner) {
            s0 += src[k]!;
            s1 += src[k + 1]!;
            s2 += src[k + 2]!;
            s3 += src[k + 3]!;
          }
          const d = o * inner + j;
          dst[d] = s0 * scale;
          dst[d + 1] = s1 * scale;
          dst[d + 2] = s2 * scale;
          dst[d + 3] = s3 * scale;
        }
        for (; j < inner; j++) {
          let s = 0;
          for (let k = start + j; k < end; k += inner) s += src[k]!;
          dst[o * inner + j] = s * scale;
        }
      }
    }
    return out;
  };
}

/** The kernel names {@link registerFastWasmKernels} replaces. */
export const FAST_WASM_KERNELS = [
  'Slice',
  'Transpose',
  'Unpack',
  'SplitV',
  'Reverse',
  'BatchMatMul',
  '_FusedMatMul',
  'Sum',
  'Mean',
  'Identity',
  'Cast',
  'Conv2D',
];

/** The stock configs replaced by {@link registerFastWasmKernels} (empty when not registered). */
const replaced = new Map<string, tf.KernelConfig>();

/**
 * Register the faster wasm `Slice`, `Transpose`, `Unpack`, `SplitV`, `Reverse`, `BatchMatMul`,
 * `_FusedMatMul`, `Identity`, `Cast` and `Conv2D` kernels and the float64-accumulating `Sum`
 * and `Mean` described above, each in front of the stock one (which still takes the cases they do not
 * cover). Idempotent; `chooseBackend` calls it when it picks wasm.
 * Returns the kernel names registered by this call.
 *
 * @example
 * await tf.setBackend('wasm'); registerFastWasmKernels();
 */
export function registerFastWasmKernels(): string[] {
  if (replaced.size) return [];
  const configs = Object.fromEntries(FAST_WASM_KERNELS.map((n) => [n, stock(n)]));
  const prev = Object.fromEntries(
    Object.entries(configs).map(([n, c]) => [n, c.kernelFunc as unknown as KernelFn]),
  );
  const slice = makeSlice(prev.Slice!);
  const transpose = makeTranspose(prev.Transpose!);
  const impls: Record<string, KernelFn> = {
    Slice: slice,
    Unpack: makeUnpack(slice),
    SplitV: makeSplitV(slice),
    Reverse: makeReverse(prev.Reverse!),
    Transpose: transpose,
    BatchMatMul: makeMatMul(prev.BatchMatMul!, transpose, true),
    _FusedMatMul: makeMatMul(prev._FusedMatMul!, transpose, false),
    Sum: makeReduce(prev.Sum!, false),
    Mean: makeReduce(prev.Mean!, true),
    Identity: makeShare(prev.Identity!, false),
    Cast: makeShare(prev.Cast!, true),
    Conv2D: makeConv2D(prev.Conv2D!),
  };
  for (const [kernelName, kernelFunc] of Object.entries(impls)) {
    tf.unregisterKernel(kernelName, 'wasm');
    // keep the stock setupFunc / disposeFunc: they bind the wasm functions the stock kernel uses
    tf.registerKernel({
      ...configs[kernelName]!,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
    replaced.set(kernelName, configs[kernelName]!);
  }
  return Object.keys(impls);
}

/**
 * Put the stock wasm kernels back (undoes {@link registerFastWasmKernels}; benchmarks compare
 * the two this way). Returns the kernel names restored.
 *
 * @example
 * unregisterFastWasmKernels(); // stock tfjs wasm kernels again
 */
export function unregisterFastWasmKernels(): string[] {
  const names = [...replaced.keys()];
  for (const [name, config] of replaced) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(config);
  }
  replaced.clear();
  return names;
}
