/**
 * KW's tap mixing (core's `Ops.mixTaps`) on the own wasm kernels (`mix_fwd` / `mix_bwd` of
 * mix-kernels.ts), differentiable in the input and the attention.
 *
 * Why: a KW conv assembles one kernel per sample (`alpha @ warehouse`: n multiply-adds per
 * kernel float and sample) and then runs a per-sample conv. Where the warehouse has about as
 * many cells as a kernel has taps (times G_in) and the maps are small (in the width-4 ResNet-8 of
 * the speed targets, `layer3.0.conv2`: n = 9 cells of 256x256 for a 3x3 kernel on 7x7 maps) the
 * same output is cheaper the other way round: mix each sample's input taps by its attention
 * first (`n·kh·kw·C` multiply-adds per output pixel and G_out group, `n / c_out` of the conv's),
 * then apply the warehouse once as a 1x1 conv shared by the whole batch (`n·c_in·c_out` per pixel
 * and group, `n / (kh·kw·G_in)` of the conv's). No kernel is assembled or moved per sample, and
 * the shared conv runs on the ordinary conv kernels, which pack their filter once per batch.
 * {@link tapMixingPays} decides per layer.
 */
import { convOutputLength, describeValue, KwError, type MixTapsAttrs } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import {
  activeOwnKernels,
  heapOffset,
  type KernelArgs,
  perSampleWinograd,
  refuseSecondOrder,
  registerOwnKernels,
  requireKernels,
  type WasmBackend,
  zeros,
} from './conv-wasm.js';

const FWD = 'KwWasmTapMix';
const GRAD = 'KwWasmTapMixGrad';
let mode: boolean | 'always' = true;

/**
 * Turn the mixed form of KW convs on (where {@link tapMixingPays}), off (every KW conv
 * assembles its per-sample kernels) or to `'always'` (wherever it applies, paying or not); on
 * by default, and off with the own kernels (`setOwnWasmKernels`). Returns the previous setting.
 * For side-by-side benchmarks and tests.
 */
export function setWasmTapMixing(setting: boolean | 'always'): boolean | 'always' {
  if (setting !== true && setting !== false && setting !== 'always') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `setWasmTapMixing: the setting must be true, false or 'always', found ${describeValue(setting)}`,
    );
  }
  const was = mode;
  mode = setting;
  return was;
}

/** The current setting of {@link setWasmTapMixing} (shard workers start with the main thread's). */
export function wasmTapMixingSetting(): boolean | 'always' {
  return mode;
}

/**
 * The geometry of a tap mixing (a KW conv's, with its cell groups): the part of core's
 * `MixTapsAttrs` the kernels read.
 */
export type TapMixGeometry = Pick<
  MixTapsAttrs,
  'kernelSize' | 'stride' | 'padding' | 'gOut' | 'gIn'
>;

interface MixAttrs {
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  pt: number;
  pl: number;
  gOut: number;
  gIn: number;
}

function dims(x: tf.TensorInfo, alpha: tf.TensorInfo, a: MixAttrs) {
  const [N, H, W, C] = x.shape as [number, number, number, number];
  const [, m, n] = alpha.shape as [number, number, number];
  const Ho = convOutputLength(H, a.kh, a.sh, a.pt);
  const Wo = convOutputLength(W, a.kw, a.sw, a.pl);
  const geometry = [H, W, C, Ho, Wo, n, a.kh, a.kw, a.sh, a.sw, a.pt, a.pl, a.gOut, a.gIn];
  return { N, H, W, C, m, n, Ho, Wo, cin: C / a.gIn, geometry };
}

/** The kernels' scratch: two i32 per tap and input group (mix-kernels.ts). */
function table(be: WasmBackend, a: MixAttrs): tf.TensorInfo {
  return be.makeOutput([2 * a.kh * a.kw * a.gIn], 'int32');
}

/** `x [N, H, W, C]`, `alpha [N, m, n]` -> `z [N, Ho, Wo, G_out·n·cin]`. */
function forwardKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { x, alpha } = inputs as { x: tf.TensorInfo; alpha: tf.TensorInfo };
  const a = attrs as unknown as MixAttrs;
  const d = dims(x, alpha, a);
  const zRow = d.Ho * d.Wo * a.gOut * d.n * d.cin;
  const z = be.makeOutput([d.N, d.Ho, d.Wo, a.gOut * d.n * d.cin], 'float32');
  const tab = table(be, a);
  const K = requireKernels(be, FWD);
  const [xo, ao, zo, to] = [x, alpha, z, tab].map((t) => heapOffset(be, t)) as number[];
  for (let b = 0; b < d.N; b++) {
    const [xb, ab] = [xo! + b * d.H * d.W * d.C * 4, ao! + b * d.m * d.n * 4];
    K.mix_fwd(xb, ab, zo! + b * zRow * 4, to!, ...d.geometry);
  }
  be.disposeData(tab.dataId);
  return z;
}

/** `x`, `alpha` and `dz` (z's shape) -> `[dx, dalpha]`. */
function gradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { x, alpha, dz } = inputs as { x: tf.TensorInfo; alpha: tf.TensorInfo; dz: tf.TensorInfo };
  const a = attrs as unknown as MixAttrs;
  const d = dims(x, alpha, a);
  const zRow = d.Ho * d.Wo * a.gOut * d.n * d.cin;
  const dx = zeros(be, [...x.shape]);
  const da = zeros(be, [...alpha.shape]);
  const tab = table(be, a);
  const K = requireKernels(be, GRAD);
  const ptrs = [x, alpha, dz, dx, da, tab].map((t) => heapOffset(be, t));
  const [xo, ao, zo, dxo, dao, to] = ptrs as number[];
  for (let b = 0; b < d.N; b++) {
    const xb = b * d.H * d.W * d.C * 4;
    const ab = b * d.m * d.n * 4;
    K.mix_bwd(xo! + xb, ao! + ab, zo! + b * zRow * 4, dxo! + xb, dao! + ab, to!, ...d.geometry);
  }
  be.disposeData(tab.dataId);
  return [dx, da];
}

function ensureRegistered(): void {
  registerOwnKernels([
    [FWD, forwardKernel],
    [GRAD, gradKernel],
  ]);
  if (tf.getGradient(GRAD)) return;
  // second-order autodiff through the mixing is not written: say so, instead of tfjs's
  // "gradient function not found" (the assembled form has none either: tfjs 4.22 has no
  // second-order gradients through convolutions)
  refuseSecondOrder(
    GRAD,
    'second-order gradients through a KW conv are not implemented (its mixed form on the own wasm kernels, like its assembled form and tfjs 4.22 convolutions, has first-order gradients only)',
  );
}

/**
 * Whether the mixed form pays for a KW conv of `n` cells, `taps` kernel taps, `gIn` input groups
 * and `cout` output channels per cell on `pixels` output pixels, by a cost model in units of the
 * conv's multiply-adds at the conv kernels' rate:
 * - mixed: the shared product, `n / (taps·G_in)` of the conv's multiply-adds, plus the mixing,
 *   `n / c_out` of them, weighed {@link TAP_MIX_COSTS}`.mixing` times (it runs below the conv
 *   kernels' rate, and its output, `G_out·n/G_in` times the input's size, is moved again);
 * - assembled: the conv (weighed {@link TAP_MIX_COSTS}`.winograd` when its per-sample conv
 *   runs as a Winograd convolution, `winograd` true: 3x3 stride-1 convs on maps of 100 pixels or
 *   more), plus per sample `assembly·n + sample` conv multiply-adds per kernel float (the
 *   assembly's product and its gradient, and the per-sample kernels' copies and transposes),
 *   spread over the `pixels` that use each kernel float.
 *
 * The mixed form is taken where it is predicted {@link TAP_MIX_COSTS}`.margin` of the assembled
 * form's time or less. (The mixed form's shared 1x1 product has no Winograd form.)
 */
export function tapMixingPays(
  n: number,
  taps: number,
  gIn: number,
  cout: number,
  pixels: number,
  winograd = false,
): boolean {
  const ints = { n, taps, gIn, cout, pixels };
  for (const [k, v] of Object.entries(ints))
    if (!Number.isInteger(v) || v < 1)
      throw new KwError(
        'ARGUMENT_INVALID',
        `tapMixingPays: ${k} must be a positive integer, found ${describeValue(v)}`,
        { field: k, expected: 'a positive integer', found: v },
      );
  if (winograd !== true && winograd !== false)
    throw new KwError(
      'ARGUMENT_INVALID',
      `tapMixingPays: winograd must be true or false, found ${describeValue(winograd)}`,
      { field: 'winograd', expected: 'true or false', found: winograd },
    );
  const c = TAP_MIX_COSTS;
  const mixed = n / (taps * gIn) + (c.mixing * n) / cout;
  const assembled = (winograd ? c.winograd : 1) + (c.assembly * n + c.sample) / pixels;
  return mixed <= c.margin * assembled;
}

/**
 * The weights of {@link tapMixingPays}, fitted to `bench:tap-mixing` (one KW conv, batch 32,
 * forward and gradients, both forms interleaved; 3x3 convs of 64-256 channels on 7x7 to 28x28
 * maps at budgets 2, 1, 1/2 and 1/4; `benchmarks/RESULTS.md`). First fitted before the
 * Winograd convs (2026-11-27 13:45 UTC): of its 32 cases the rule picked the mixed form for the
 * 12 measured at 0.42-0.97x the assembled form's time. Since per-sample 3x3 stride-1 convs on
 * 14x14 and 28x28 maps run as Winograd convolutions, their assembled form takes 0.60-0.87x the
 * time it took against the mixed form (the ratios of the two runs; 0.73 on average), and
 * `winograd` (0.7; any of 0.65-0.8 picks the same) weighs their conv: in the run after
 * (19:00 UTC) the rule picks the mixed form for 10 of the 12 cases measured at 0.42-0.92x (it
 * misses 0.84x and 0.92x, both at 1/2x, as before) and the assembled form for all 20 measured at
 * 1.12x or more (without `winograd`, 128 channels on 14x14 maps at 1/4x, measured 1.12x, took
 * the mixed form).
 */
export const TAP_MIX_COSTS = {
  mixing: 2.5,
  assembly: 0.5,
  sample: 21,
  winograd: 0.7,
  margin: 0.9,
} as const;

/**
 * Whether {@link mixTapsWasm} takes the mixed form for a KW conv of `n` cells and `cout` output
 * channels per cell, input `H x W x C` in `G_in` groups, output `Ho x Wo`, under the setting of
 * {@link setWasmTapMixing}: `c_in = C / G_in` a multiple of 16, and `'always'` or the cost rule
 * ({@link tapMixingPays}, told whether the assembled form's per-sample conv runs as Winograd).
 * Its shape checks aside, this is mixTapsWasm's decision; `bench:kw-overhead` asks it which form
 * a training step runs.
 */
export function mixedFormTaken(l: {
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  gIn: number;
  H: number;
  W: number;
  C: number;
  Ho: number;
  Wo: number;
  n: number;
  cout: number;
}): boolean {
  if (mode === false || l.C % l.gIn !== 0 || (l.C / l.gIn) % 16 !== 0) return false;
  if (mode === 'always') return true;
  const wino = perSampleWinograd(l.kh, l.kw, l.sh, l.sw, l.H, l.W);
  return tapMixingPays(l.n, l.kh * l.kw, l.gIn, l.cout, l.Ho * l.Wo, wino);
}

/**
 * Core's `mixTaps` on the own wasm kernels: `x` NHWC `[N, H, W, C]`, `alpha [N, kh·kw·G_out·G_in,
 * n]` (a KW layer's attention, zero cell dropped) -> `[N, Ho, Wo, G_out·n·c_in]`, channel
 * `(g, k, c)` the sum over taps t and input groups q of `alpha[(t, g, q), k]` times the input
 * channel `q·c_in + c` at tap t (zero padding). Returns `undefined` (core then assembles
 * kernels) where it does not apply or does not pay ({@link tapMixingPays}): another backend,
 * kernels off, non-float32 tensors, `c_in` not a multiple of 16, shapes that do not fit, an empty
 * tensor.
 */
export function mixTapsWasm(
  x: tf.Tensor,
  alpha: tf.Tensor,
  g: TapMixGeometry,
  cout: number,
): tf.Tensor | undefined {
  if (mode === false || !activeOwnKernels()) return undefined;
  if (x.dtype !== 'float32' || alpha.dtype !== 'float32' || x.rank !== 4 || alpha.rank !== 3)
    return undefined;
  const [N, H, W, C] = x.shape as [number, number, number, number];
  const [an, m, n] = alpha.shape as [number, number, number];
  const [kh, kw] = g.kernelSize;
  const [sh, sw] = g.stride;
  const [pt, pl] = g.padding;
  const ints = [kh, kw, sh, sw, g.gOut, g.gIn, N, H, W, C, n];
  if (!ints.every((v) => Number.isInteger(v) && v >= 1)) return undefined;
  if (![pt, pl].every((v) => Number.isInteger(v) && v >= 0)) return undefined;
  if (an !== N || m !== kh * kw * g.gOut * g.gIn || C % g.gIn !== 0) return undefined;
  const Ho = convOutputLength(H, kh, sh, pt);
  const Wo = convOutputLength(W, kw, sw, pl);
  if (Ho < 1 || Wo < 1) return undefined;
  if (!mixedFormTaken({ kh, kw, sh, sw, gIn: g.gIn, H, W, C, Ho, Wo, n, cout })) return undefined;
  ensureRegistered();
  const attrs = { kh, kw, sh, sw, pt, pl, gOut: g.gOut, gIn: g.gIn };
  const run = (name: string, inputs: Record<string, tf.Tensor>) =>
    tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, as, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([xs, as]);
    return {
      value: run(FWD, { x: xs, alpha: as }) as tf.Tensor,
      gradFunc: (dz: tf.Tensor, saved: tf.Tensor[]) =>
        run(GRAD, { x: saved[0]!, alpha: saved[1]!, dz }) as tf.Tensor[],
    };
  });
  return (f as unknown as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor)(x, alpha);
}
