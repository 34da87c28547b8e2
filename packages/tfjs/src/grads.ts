/**
 * Gradient kernels for training on the wasm backend. tfjs-backend-wasm 4.22 has no
 * `Conv2DBackpropFilter`, `DepthwiseConv2dNativeBackpropFilter` or
 * `DepthwiseConv2dNativeBackpropInput`, and its `Conv2DBackpropInput` is a scalar loop. Each is
 * re-expressed here through forward kernels the backend has (Conv2D, DepthwiseConv2dNative,
 * Pad, Transpose, Reverse, Slice, Sum), so the work runs in XNNPACK:
 *
 * (On wasm, Conv2DBackpropFilter and Conv2DBackpropInput with channel counts that are multiples
 * of 4 run on the WebAssembly SIMD kernels of `conv-wasm.ts` first: they read the kernel
 * and dy as they are, where each XNNPACK conv below packs a new operator on every step.)
 *
 * - Conv2DBackpropFilter = Conv2D(transpose(pad(x)) as `[Cin, Hp, Wp, B]`, dy as filter
 *   `[Ho, Wo, B, Cout]`, dilation = stride), sliced to the kernel and transposed.
 * - Conv2DBackpropInput = Conv2D(pad(zero-dilate(dy)), reverse(W) with in/out swapped).
 * - DepthwiseConv2dNativeBackpropFilter = one depthwise conv over the `C*B` channels of
 *   pad(x) with dy as filter, summed over B.
 * - DepthwiseConv2dNativeBackpropInput = depthwise(pad(zero-dilate(dy)), reverse(W)).
 *
 * NHWC, dilation 1 and channel multiplier 1 only. Other cases go to the kernel the backend had
 * before (cpu has all four; its own are exact but slow: ~12x slower than these for a batch-8
 * 16x16x32 conv); where there is none (wasm), they throw with a clear message.
 */
import { KwError } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { convFilterGradWasm, convInputGradWasm } from './conv-wasm.js';

/** A case the rebuilt kernels do not cover; the backend's own kernel (if any) takes it. */
class UnsupportedCase extends KwError {
  constructor(message: string) {
    super('BACKEND_UNSUPPORTED', message);
  }
}

type Pads = { top: number; bottom: number; left: number; right: number };
type Attrs = Record<string, unknown>;

function convPads(
  xShape: [number, number, number, number],
  filterShape: [number, number, number, number],
  attrs: Attrs,
  depthwise: boolean,
): { pads: Pads; outH: number; outW: number; sh: number; sw: number } {
  const dil = attrs.dilations as number | [number, number];
  const d = typeof dil === 'number' ? [dil, dil] : dil;
  if ((d?.[0] ?? 1) !== 1 || (d?.[1] ?? 1) !== 1) {
    throw new UnsupportedCase(
      'kernelwarehouse tfjs training kernels: dilation > 1 is not supported',
    );
  }
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC') {
    throw new UnsupportedCase('kernelwarehouse tfjs training kernels: only NHWC is supported');
  }
  const info = tf.backend_util.computeConv2DInfo(
    xShape,
    filterShape,
    attrs.strides as [number, number],
    1,
    attrs.pad as 'same',
    attrs.dimRoundingMode as 'floor' | undefined,
    depthwise,
  );
  return {
    pads: info.padInfo,
    outH: info.outHeight,
    outW: info.outWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
  };
}

/** dW[i,j,c,o] = sum_{b,y,x} xpad[b, y*sh+i, x*sw+j, c] * dy[b,y,x,o]. */
function conv2dFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, attrs: Attrs): tf.Tensor4D {
  const fs = attrs.filterShape as [number, number, number, number];
  const { pads, sh, sw } = convPads(x.shape, fs, attrs, false);
  const g = { strides: [sh, sw] as [number, number], padTop: pads.top, padLeft: pads.left };
  const own = convFilterGradWasm(x, dy, [fs[0], fs[1]], g);
  if (own) return own;
  return tf.tidy(() => {
    const xp = tf.pad(x, [
      [0, 0],
      [pads.top, pads.bottom],
      [pads.left, pads.right],
      [0, 0],
    ]);
    const xt = tf.transpose(xp, [3, 1, 2, 0]) as tf.Tensor4D; // [Cin, Hp, Wp, B]
    const f = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D; // [Ho, Wo, B, Cout]
    const g = tf.conv2d(xt, f, 1, 'valid', 'NHWC', [sh, sw]); // [Cin, >=kh, >=kw, Cout]
    const s = tf.slice(g, [0, 0, 0, 0], [fs[2], fs[0], fs[1], fs[3]]);
    return tf.transpose(s, [1, 2, 0, 3]) as tf.Tensor4D;
  });
}

/** Insert (s-1) zeros between rows/cols of dy and pad so a stride-1 conv yields dx. */
function dilateAndPad(
  dy: tf.Tensor4D,
  sh: number,
  sw: number,
  kh: number,
  kw: number,
  pads: Pads,
  h: number,
  w: number,
): tf.Tensor4D {
  const [b, ho, wo, c] = dy.shape;
  let t: tf.Tensor4D = dy;
  if (sh > 1 || sw > 1) {
    const r = tf.reshape(dy, [b, ho, 1, wo, 1, c]);
    const p = tf.pad(r, [
      [0, 0],
      [0, 0],
      [0, sh - 1],
      [0, 0],
      [0, sw - 1],
      [0, 0],
    ]);
    t = tf.slice(
      tf.reshape(p, [b, ho * sh, wo * sw, c]) as tf.Tensor4D,
      [0, 0, 0, 0],
      [b, (ho - 1) * sh + 1, (wo - 1) * sw + 1, c],
    );
  }
  const hd = t.shape[1];
  const wd = t.shape[2];
  const top = kh - 1 - pads.top;
  const left = kw - 1 - pads.left;
  const bottom = h + kh - 1 - top - hd;
  const right = w + kw - 1 - left - wd;
  const padded = tf.pad(t, [
    [0, 0],
    [Math.max(top, 0), Math.max(bottom, 0)],
    [Math.max(left, 0), Math.max(right, 0)],
    [0, 0],
  ]);
  // negative pads (padding wider than the kernel) become crops
  return tf.slice(
    padded,
    [0, Math.max(-top, 0), Math.max(-left, 0), 0],
    [b, h + kh - 1, w + kw - 1, c],
  ) as tf.Tensor4D;
}

function conv2dInputGrad(dy: tf.Tensor4D, filter: tf.Tensor4D, attrs: Attrs): tf.Tensor4D {
  const xs = attrs.inputShape as [number, number, number, number];
  const [kh, kw] = filter.shape;
  const { pads, sh, sw } = convPads(xs, filter.shape, attrs, false);
  const g = { strides: [sh, sw] as [number, number], padTop: pads.top, padLeft: pads.left };
  const own = convInputGradWasm(dy, filter, xs, g);
  if (own) return own;
  return tf.tidy(() => {
    const p = dilateAndPad(dy, sh, sw, kh, kw, pads, xs[1], xs[2]);
    const wr = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
    return tf.conv2d(p, wr, 1, 'valid');
  });
}

function depthwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, attrs: Attrs): tf.Tensor4D {
  const fs = attrs.filterShape as [number, number, number, number];
  if (fs[3] !== 1)
    throw new UnsupportedCase(
      'kernelwarehouse tfjs training kernels: channel multiplier must be 1',
    );
  const { pads, sh, sw } = convPads(x.shape, fs, attrs, true);
  const [b, , , c] = x.shape;
  return tf.tidy(() => {
    const xp = tf.pad(x, [
      [0, 0],
      [pads.top, pads.bottom],
      [pads.left, pads.right],
      [0, 0],
    ]);
    const xt = tf.reshape(tf.transpose(xp, [1, 2, 3, 0]), [
      1,
      xp.shape[1],
      xp.shape[2],
      c * b,
    ]) as tf.Tensor4D;
    const f = tf.reshape(tf.transpose(dy, [1, 2, 3, 0]), [
      dy.shape[1],
      dy.shape[2],
      c * b,
      1,
    ]) as tf.Tensor4D;
    const g = tf.depthwiseConv2d(xt, f, 1, 'valid', 'NHWC', [sh, sw]);
    const s = tf.slice(g, [0, 0, 0, 0], [1, fs[0], fs[1], c * b]);
    return tf.reshape(tf.sum(tf.reshape(s, [fs[0], fs[1], c, b]), 3), fs) as tf.Tensor4D;
  });
}

function depthwiseInputGrad(dy: tf.Tensor4D, filter: tf.Tensor4D, attrs: Attrs): tf.Tensor4D {
  const xs = attrs.inputShape as [number, number, number, number];
  if (filter.shape[3] !== 1)
    throw new UnsupportedCase(
      'kernelwarehouse tfjs training kernels: channel multiplier must be 1',
    );
  const [kh, kw] = filter.shape;
  const { pads, sh, sw } = convPads(xs, filter.shape, attrs, true);
  return tf.tidy(() => {
    const p = dilateAndPad(dy, sh, sw, kh, kw, pads, xs[1], xs[2]);
    return tf.depthwiseConv2d(p, tf.reverse(filter, [0, 1]) as tf.Tensor4D, 1, 'valid');
  });
}

type KernelImpl = (a: tf.Tensor4D, b: tf.Tensor4D, attrs: Attrs) => tf.Tensor4D;

/** Kernel name -> [input names, implementation]. */
const KERNELS: Record<string, [string, string, KernelImpl]> = {
  Conv2DBackpropFilter: ['x', 'dy', conv2dFilterGrad],
  Conv2DBackpropInput: ['dy', 'filter', conv2dInputGrad],
  DepthwiseConv2dNativeBackpropFilter: ['x', 'dy', depthwiseFilterGrad],
  DepthwiseConv2dNativeBackpropInput: ['dy', 'filter', depthwiseInputGrad],
};

/** The kernel names {@link registerTrainingKernels} provides. */
export const TRAINING_KERNELS = Object.keys(KERNELS);

const registered = new Set<string>();

/**
 * Register the conv gradient kernels above for a backend (default `wasm`), in front of any it
 * has (which still take the cases these do not cover). Idempotent. Returns the kernel names
 * registered by this call.
 *
 * @example
 * registerTrainingKernels('wasm'); // model.fit on wasm now works
 */
export function registerTrainingKernels(backendName = 'wasm'): string[] {
  const done: string[] = [];
  for (const [kernelName, [a, b, impl]] of Object.entries(KERNELS)) {
    const key = `${backendName}/${kernelName}`;
    if (registered.has(key)) continue;
    const previous = tf.getKernel(kernelName, backendName);
    if (previous) tf.unregisterKernel(kernelName, backendName);
    tf.registerKernel({
      kernelName,
      backendName,
      kernelFunc: (args) => {
        const ta = args.inputs[a] as tf.Tensor4D;
        const tb = args.inputs[b] as tf.Tensor4D;
        if (ta.size === 0 || tb.size === 0) {
          // a gradient summed over nothing (an empty batch, or a conv with an empty output:
          // the XNNPACK route returned whatever its uninitialised output held)
          const shape = kernelName.endsWith('Filter')
            ? (args.attrs as Attrs).filterShape
            : (args.attrs as Attrs).inputShape;
          return tf.zeros(shape as number[]) as unknown as tf.TensorInfo;
        }
        try {
          return impl(ta, tb, args.attrs as Attrs) as unknown as tf.TensorInfo;
        } catch (e) {
          if (e instanceof UnsupportedCase && previous) return previous.kernelFunc(args);
          throw e;
        }
      },
    });
    registered.add(key);
    done.push(kernelName);
  }
  return done;
}
