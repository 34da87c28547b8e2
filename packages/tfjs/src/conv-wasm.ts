/**
 * Convolution kernels of our own for the wasm backend (forward, input gradient, filter
 * gradient), written as WebAssembly SIMD by {@link wasmModule} and run directly on the tensors
 * in tfjs-backend-wasm's heap (the module imports that heap's memory).
 *
 * Why: tfjs-backend-wasm's Conv2D creates (transposes and packs) a new XNNPACK operator for
 * every new filter tensor. Dynamic convolution has a new kernel per sample on every step, so
 * the stock per-sample loop paid that packing once per sample, layer and pass: 1.2-2.2x a
 * shared conv forward and 1.6-2.7x with gradients (benchmarks/tfjs-per-sample.mjs); and an
 * ordinary conv's gradients (grads.ts re-expresses them as XNNPACK convs whose filter is dy or
 * the flipped kernel) pack a new operator on every training step too. These kernels read the
 * HWIO kernel and dy as they are, with no packing:
 *
 * - forward: direct convolution, tiles of 2 output pixels x 16 output channels accumulated over
 *   (kernel row, kernel column, input channel), one broadcast input value times four 4-lane
 *   kernel rows per step, each 16-channel block of a sample's kernel first copied to a
 *   contiguous scratch ({@link forwardInBlocks}; the same products, added in the same order, as XNNPACK's: outputs
 *   were bit-identical to tf.conv2d on wasm at the benchmark's shapes);
 * - input gradient: tiles of 2 input pixels x 4 input channels, dot products over the output
 *   channels (contiguous in both dy and the HWIO kernel), so the kernel is not transposed; at
 *   stride 1 (a shared kernel, or per-sample kernels on images of 100 pixels or more) it is
 *   the forward kernel on dy with the flipped, transposed kernel instead, and at larger strides
 *   one such forward conv per output phase ({@link inputGradByPhases});
 * - filter gradient: tiles of 4 input channels x 8 output channels accumulated over the output
 *   pixels each kernel tap sees (and over the samples, for a kernel shared by the batch), reading
 *   channel-block copies of x and dy (`conv_dw_blk`);
 * - 3x3 stride-1 convs (a shared kernel, or per-sample kernels on maps of 100 pixels or more):
 *   the forward and the input gradient as Winograd F(2x2, 3x3), the filter gradient as F(4x4,
 *   3x3) where it saves products ({@link winogradConv}, {@link winogradFilterGrad},
 *   {@link winogradForm}; the transforms in winograd-kernels.ts, the 16 or 36 products on the
 *   kernels above as 1x1 convs and 1x1 filter gradients): 2.25x or 4x fewer multiply-adds on
 *   maps the tiles divide, rounded differently from the direct sums ({@link setWasmWinograd}
 *   switches it off).
 *
 * Used by `perSampleConv` (every dynamic method) and by the Conv2DBackpropInput / Filter
 * kernels of `grads.ts` (every ordinary conv layer in training); the forward kernel also serves
 * an ordinary conv's forward (`Conv2D`, {@link conv2dForwardWasm}) and few-row gradient products
 * ({@link matMulNoPack}), a 4x4-block kernel serves transposes ({@link transposeBlocked}), and
 * `mm_grads` both gradients of KW's kernel assembly in one pass ({@link matMulWasm}); the same
 * module carries the training BatchNorm's kernels (bn-kernels.ts, run by bn-wasm.ts). Covered:
 * float32, groups 1, dilation 1, input and output channels multiples of 4, any stride and
 * padding. Everything else (and a heap that is shared between threads, and an engine without
 * WebAssembly SIMD) takes the stock route, which gives the same results up to float rounding.
 */
import { convOutputLength, describeValue, KwError, simplifyTranspose } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { adamFunction } from './adam-kernels.js';
import { batchNormFunctions } from './bn-kernels.js';
import { tapMixFunctions } from './mix-kernels.js';
import { Frame, f32Lanes, indices, WasmCode, type WasmFunction, wasmModule } from './wasm-emit.js';
import {
  WINOGRAD_FORMS,
  type WinogradForm,
  winogradFunctions,
  winogradStride,
} from './winograd-kernels.js';

const range = (n: number): number[] => [...Array(n).keys()];

/** A public switch's argument: true or false, else ARGUMENT_INVALID naming the switch. */
function switchValue(name: string, on: unknown): boolean {
  if (on !== true && on !== false)
    throw new KwError(
      'ARGUMENT_INVALID',
      `${name}: the setting must be true or false, found ${describeValue(on)}`,
      { field: name, expected: 'true or false', found: on },
    );
  return on;
}

/** Whether the module being written uses relaxed SIMD's multiply-add (see {@link bind}). */
let fusedMultiplyAdd = false;

/** `q += a * b` on 4 lanes: one relaxed multiply-add, or a multiply and an add. */
function madd(k: WasmCode, q: number, a: number, b: number): void {
  if (fusedMultiplyAdd) k.get(a).get(b).get(q).f32x4RelaxedMadd().set(q);
  else k.get(q).get(a).get(b).f32x4Mul().f32x4Add().set(q);
}

/** The conv geometry parameters every conv kernel takes, in this order (after its pointers). */
const CONV_GEOMETRY = [
  'H',
  'W',
  'Cin',
  'Ho',
  'Wo',
  'Cout',
  'kh',
  'kw',
  'sh',
  'sw',
  'pt',
  'pl',
] as const;

/**
 * One step of the forward kernels' inner loop: `nv` 4-lane kernel vectors at `w`, times each
 * row's value at `rows[r]` (broadcast), added to `acc[r·nv + h]`; then every row pointer moves
 * to its next value and `w` to its next row (`wRowB` bytes on).
 */
function tileStep(
  k: WasmCode,
  l: { w: number; wRowB: number; rows: number[]; acc: number[]; b: number[]; av: number },
  nv: number,
): void {
  for (let h = 0; h < nv; h++)
    k.get(l.w)
      .vLoad(16 * h)
      .set(l.b[h]!);
  l.rows.forEach((row, r) => {
    k.get(row).vLoadSplat32().set(l.av);
    for (let h = 0; h < nv; h++) madd(k, l.acc[r * nv + h]!, l.av, l.b[h]!);
  });
  for (const row of l.rows) k.get(row).i32(4).add().set(row);
  k.get(l.w).get(l.wRowB).add().set(l.w);
}

/**
 * The forward kernels' tile stores: row r's `nv` vectors at `out[r]` + 4·`col` bytes, the last
 * row first (a row repeated past the end is written with the same values again).
 */
function storeTile(k: WasmCode, out: number[], col: number, acc: number[], nv: number): void {
  for (let r = out.length - 1; r >= 0; r--)
    for (let h = 0; h < nv; h++)
      k.get(out[r]!)
        .get(col)
        .i32(4)
        .mul()
        .add()
        .get(acc[r * nv + h]!)
        .vStore(16 * h);
}

/**
 * The column loop of the forward kernels: blocks of `4·NV` columns from `o0 = 0` while a whole
 * block fits in `N` (`block(NV)`), then the rest 4 at a time (`block(1)`); `o0` is the block's
 * first column.
 */
function columnBlocks(
  k: WasmCode,
  o0: number,
  N: number,
  NV: number,
  block: (nv: number) => void,
): void {
  k.i32(0).set(o0).block().loop();
  k.get(o0)
    .i32(4 * NV)
    .add()
    .get(N)
    .gtS()
    .brIf(1);
  block(NV);
  k.get(o0)
    .i32(4 * NV)
    .add()
    .set(o0)
    .br(0)
    .end()
    .end();
  k.block().loop();
  k.get(o0).get(N).ltS().eqz().brIf(1);
  block(1);
  k.get(o0).i32(4).add().set(o0).br(0).end().end();
}

/**
 * The row loop of the forward kernels: tiles of MR rows from `p0 = 0` while `p0 < P`; for each
 * row r of a tile `row(r)` runs with `t = min(p0 + r, P - 1)` set (rows past the end repeat the
 * last one), then `tile()`.
 */
function rowTiles(
  k: WasmCode,
  l: { p0: number; t: number; P: number },
  MR: number,
  row: (r: number) => void,
  tile: () => void,
): void {
  const { p0, t, P } = l;
  k.i32(0).set(p0).block().loop();
  k.get(p0).get(P).ltS().eqz().brIf(1);
  for (let r = 0; r < MR; r++) {
    k.get(p0).i32(r).add().set(t).get(t).get(P).i32(1).sub().get(t).get(P).ltS().select();
    k.set(t);
    row(r);
  }
  tile();
  k.get(p0).i32(MR).add().set(p0).br(0).end().end();
}

/**
 * `conv_fwd(x, w, y, zero, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl, wRowB, yRowB)`,
 * one sample: `y[Ho, Wo, Cout] = conv(x[H, W, Cin], w[kh, kw, Cin, Cout])`; `zero` points at
 * >= Cin zeros (read in place of padding). Byte addresses; the rows of `w` (one per tap and
 * input channel) are `wRowB` bytes apart and the rows of `y` (one per pixel) `yRowB` apart, so
 * a block of columns of a wider matrix can be read or written in place (4 Cout for a conv). Cout % 4 == 0. Tiles of MR pixels x 4·NV output
 * channels (the rest of Cout 4 at a time); 2 x 16 measured fastest of 4x8, 2x16, 3x16, 5x8, 6x8
 * at the width-4 ResNet-8 stage shapes (16 channels = one 64-byte cache line of a kernel row).
 */
function convForward(MR: number, NV: number): WasmFunction {
  const f = new Frame(18);
  const { x, w, y, zero, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl, wRowB, yRowB } = indices(
    ['x', 'w', 'y', 'zero', ...CONV_GEOMETRY, 'wRowB', 'yRowB'],
    0,
  );
  const { P, p0, o0, i, j, c, wp, t, inB, iy, ix } = f.i32s([
    'P',
    'p0',
    'o0',
    'i',
    'j',
    'c',
    'wp',
    't',
    'inB',
    'iy',
    'ix',
  ]);
  const a = range(MR).map(() => f.i32()); // input row pointer of each of the 4 pixels
  const oy = range(MR).map(() => f.i32()); // oy * sh - pt
  const ox = range(MR).map(() => f.i32()); // ox * sw - pl
  const yo = range(MR).map(() => f.i32()); // output row address
  const acc = range(MR * NV).map(() => f.v128());
  const b = range(NV).map(() => f.v128());
  const av = f.v128();
  const k = new WasmCode();
  // one tile of MR pixels x (4 * nv) output channels at o0
  const tile = (nv: number): void => {
    for (let q = 0; q < MR * nv; q++) k.vZero().set(acc[q]!);
    k.i32(0).set(i).loop();
    k.i32(0).set(j).loop();
    for (let r = 0; r < MR; r++) {
      k.get(oy[r]!).get(i).add().set(iy).get(ox[r]!).get(j).add().set(ix);
      k.get(x).get(iy).get(W).mul().get(ix).add().get(inB).mul().add();
      k.get(zero);
      k.get(iy).get(H).ltU().get(ix).get(W).ltU().and();
      k.select().set(a[r]!);
    }
    k.get(i).get(kw).mul().get(j).add().get(Cin).mul().get(wRowB).mul();
    k.get(o0).i32(4).mul().add().get(w).add().set(wp);
    k.get(Cin).set(c).loop();
    tileStep(k, { w: wp, wRowB, rows: a, acc, b, av }, nv);
    k.get(c).i32(1).sub().tee(c).brIf(0).end();
    k.get(j).i32(1).add().tee(j).get(kw).ltU().brIf(0).end();
    k.get(i).i32(1).add().tee(i).get(kh).ltU().brIf(0).end();
    // pixels past the end repeat the last one: its row is written with the same values again
    storeTile(k, yo, o0, acc, nv);
  };
  k.get(Ho).get(Wo).mul().set(P);
  k.get(Cin).i32(4).mul().set(inB);
  // output channels outermost: the kernel columns of one tile ([kh, kw, Cin, 4 NV])
  // stay in cache while every pixel tile passes over them (pixels outermost streamed the
  // whole kernel, 2.4 MB at 3x3x256x256, once per pixel tile)
  const pixels = (nv: number): void =>
    rowTiles(
      k,
      { p0, t, P },
      MR,
      (r) => {
        k.get(t).get(Wo).divU().set(oy[r]!);
        k.get(t).get(oy[r]!).get(Wo).mul().sub().get(sw).mul().get(pl).sub().set(ox[r]!);
        k.get(oy[r]!).get(sh).mul().get(pt).sub().set(oy[r]!);
        k.get(y).get(t).get(yRowB).mul().add().set(yo[r]!);
      },
      () => tile(nv),
    );
  // whole tiles of 4·NV output channels, then the last Cout % (4 NV) 4 at a time
  columnBlocks(k, o0, Cout, NV, pixels);
  return f.fn('conv_fwd', k);
}

/**
 * `gemm_rows(a, b, c, rows, K, N, bRowB, cRowB)`: `c[r, n] = Σ_k a[r, k]·b[k, n]` for `rows`
 * contiguous rows of `a` (`K` floats each) and the `N` columns of `b` (rows `bRowB` bytes
 * apart), into rows of `c` `cRowB` bytes apart; N % 4 == 0. {@link convForward}'s tiles (MR rows
 * x 4·NV columns, the last row repeated when `rows` is not a multiple of MR, the last N % (4·NV)
 * columns 4 at a time) and the same products in the same order as `conv_fwd` on a 1x1 conv,
 * without its pixel geometry (a division per pixel and a padding check per tap, which cost a
 * short K such as a Winograd product's C): the products of {@link winogradConv}.
 */
function gemmRows(MR: number, NV: number): WasmFunction {
  const f = new Frame(8);
  const { a, b, c, rows, K, N, bRowB, cRowB } = indices(
    ['a', 'b', 'c', 'rows', 'K', 'N', 'bRowB', 'cRowB'],
    0,
  );
  const { p0, n0, t, kk, bp, aRowB } = f.i32s(['p0', 'n0', 't', 'kk', 'bp', 'aRowB']);
  const ap = range(MR).map(() => f.i32()); // the tile's rows of a
  const cp = range(MR).map(() => f.i32()); // and of c
  const acc = range(MR * NV).map(() => f.v128());
  const bv = range(NV).map(() => f.v128());
  const av = f.v128();
  const k = new WasmCode();
  k.get(rows).eqz().get(K).eqz().add().get(N).eqz().add().if().br(1).end();
  k.get(K).i32(4).mul().set(aRowB);
  const tile = (nv: number): void => {
    for (let q = 0; q < MR * nv; q++) k.vZero().set(acc[q]!);
    k.get(b).get(n0).i32(4).mul().add().set(bp);
    k.get(K).set(kk).loop();
    tileStep(k, { w: bp, wRowB: bRowB, rows: ap, acc, b: bv, av }, nv);
    k.get(kk).i32(1).sub().tee(kk).brIf(0).end();
    storeTile(k, cp, n0, acc, nv);
  };
  const pass = (nv: number): void =>
    rowTiles(
      k,
      { p0, t, P: rows },
      MR,
      (r) => {
        k.get(a).get(t).get(aRowB).mul().add().set(ap[r]!);
        k.get(c).get(t).get(cRowB).mul().add().set(cp[r]!);
      },
      () => tile(nv),
    );
  // columns outermost, as conv_fwd: one block of b stays in cache over every row tile
  columnBlocks(k, n0, N, NV, pass);
  return f.fn('gemm_rows', k);
}

/**
 * `conv_dx1(dy, w, dx, zero, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl)`, one sample,
 * strides 1 (sh and sw are ignored; {@link convInputGradStrided} takes the others):
 * `dx[H, W, Cin]` of the forward above given `dy[Ho, Wo, Cout]`; `zero` points at >= Cout
 * zeros. Cin % 4 == 0 and Cout % 4 == 0. Tiles of 2 neighbouring pixels (in row-major order).
 */
function convInputGrad(): WasmFunction {
  const f = new Frame(16);
  const { dy, w, dx, zero, H, W, Cin, Ho, Wo, Cout, kh, kw, pt, pl } = indices(
    ['dy', 'w', 'dx', 'zero', ...CONV_GEOMETRY],
    0,
  );
  const { HW, q0, c0, i, j, kb, t, inB, outB, oy, ox } = f.i32s([
    'HW',
    'q0',
    'c0',
    'i',
    'j',
    'kb',
    't',
    'inB',
    'outB',
    'oy',
    'ox',
  ]);
  const R = 2;
  const iy = range(R).map(() => f.i32()); // iy + pt of each pixel
  const ix = range(R).map(() => f.i32()); // ix + pl
  const dxo = range(R).map(() => f.i32());
  const d = range(R).map(() => f.i32()); // dy row of the tap, or zero
  const wq = range(4).map(() => f.i32()); // kernel rows of the 4 input channels
  const acc = range(4 * R).map(() => f.v128());
  const dv = range(R).map(() => f.v128());
  const wv = f.v128();
  const s0 = f.v128();
  const s1 = f.v128();
  const k = new WasmCode();
  k.get(H).get(W).mul().set(HW);
  k.get(Cin).i32(4).mul().set(inB).get(Cout).i32(4).mul().set(outB);
  // input channels outermost: the kernel rows of 4 channels ([kh, kw, 4, Cout]) stay in cache
  // while every pixel pair passes over them
  k.i32(0).set(c0).loop();
  k.i32(0).set(q0).block().loop();
  k.get(q0).get(HW).ltS().eqz().brIf(1);
  for (let r = 0; r < R; r++) {
    k.get(q0).i32(r).add().set(t).get(t).get(HW).i32(1).sub().get(t).get(HW).ltS().select().set(t);
    k.get(t).get(W).divU().set(iy[r]!);
    k.get(t).get(iy[r]!).get(W).mul().sub().get(pl).add().set(ix[r]!);
    k.get(iy[r]!).get(pt).add().set(iy[r]!);
    k.get(dx).get(t).get(inB).mul().add().set(dxo[r]!);
  }
  for (const q of acc) k.vZero().set(q);
  k.i32(0).set(i).loop();
  k.i32(0).set(j).loop();
  for (let r = 0; r < R; r++) {
    // the output pixel whose tap (i, j) reads this input pixel: (iy + pt - i, ix + pl - j)
    // (a negative value wraps to a huge unsigned one and fails the bound)
    k.get(iy[r]!).get(i).sub().set(oy).get(ix[r]!).get(j).sub().set(ox);
    k.get(dy).get(oy).get(Wo).mul().get(ox).add().get(outB).mul().add();
    k.get(zero);
    k.get(oy).get(Ho).ltU().get(ox).get(Wo).ltU().and();
    k.select().set(d[r]!);
  }
  dotTap(k, { i, j, kw, Cin, c0, outB, w, kb, wq, d, dv, wv, acc });
  k.get(j).i32(1).add().tee(j).get(kw).ltU().brIf(0).end();
  k.get(i).i32(1).add().tee(i).get(kh).ltU().brIf(0).end();
  storeLaneSums(k, acc, dxo, c0, s0, s1);
  k.get(q0).i32(R).add().set(q0).br(0).end().end();
  k.get(c0).i32(4).add().tee(c0).get(Cin).ltU().brIf(0).end();
  return f.fn('conv_dx1', k);
}

/**
 * `conv_dxs(...)`: {@link convInputGrad} for any strides (same parameters). An input pixel
 * receives from tap (i, j) only when (iy + pt - i) and (ix + pl - j) are multiples of the
 * strides, 1 tap in 4 at stride 2: here the 2 pixels of a tile share a row and a column phase
 * (ix and ix + sw), so a tap that reaches neither is skipped as a whole, where pairing
 * neighbours read a zero row for it (4x the work of the forward at stride 2).
 */
function convInputGradStrided(): WasmFunction {
  const f = new Frame(16);
  const { dy, w, dx, zero, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl } = indices(
    ['dy', 'w', 'dx', 'zero', ...CONV_GEOMETRY],
    0,
  );
  const { yy, ph, xx, c0, i, j, kb, inB, outB, ty, oy, t } = f.i32s([
    'yy',
    'ph',
    'xx',
    'c0',
    'i',
    'j',
    'kb',
    'inB',
    'outB',
    'ty',
    'oy',
    't',
  ]);
  const R = 2;
  const ix = range(R).map(() => f.i32()); // ix + pl of each pixel
  const ox = range(R).map(() => f.i32());
  const dxo = range(R).map(() => f.i32());
  const d = range(R).map(() => f.i32());
  const wq = range(4).map(() => f.i32());
  const acc = range(4 * R).map(() => f.v128());
  const dv = range(R).map(() => f.v128());
  const wv = f.v128();
  const s0 = f.v128();
  const s1 = f.v128();
  const k = new WasmCode();
  k.get(Cin).i32(4).mul().set(inB).get(Cout).i32(4).mul().set(outB);
  k.i32(0).set(c0).loop();
  k.i32(0).set(yy).loop();
  k.i32(0).set(ph).loop();
  k.get(ph).set(xx).block().loop();
  k.get(xx).get(W).ltS().eqz().brIf(1);
  for (let r = 0; r < R; r++) {
    // pixel xx, and xx + sw (or xx again past the row's end: its row is written twice)
    k.get(xx);
    if (r > 0) k.get(sw).add().tee(t).get(xx).get(t).get(W).ltS().select();
    k.tee(t).get(pl).add().set(ix[r]!);
    k.get(yy).get(W).mul().get(t).add().get(inB).mul().get(dx).add().set(dxo[r]!);
  }
  for (const q of acc) k.vZero().set(q);
  k.i32(0).set(i).loop();
  // the output row of tap i: (yy + pt - i) / sh, exact and inside (a negative numerator wraps
  // to a huge unsigned value and fails the bound)
  k.get(yy).get(pt).add().get(i).sub().tee(ty).get(sh).divU().set(oy);
  k.get(ty).get(oy).get(sh).mul().sub().eqz().get(oy).get(Ho).ltU().and().if();
  k.i32(0).set(j).loop();
  for (let r = 0; r < R; r++) k.get(ix[r]!).get(j).sub().get(sw).divU().set(ox[r]!);
  // both pixels share the column phase: test the first
  k.get(ix[0]!).get(j).sub().get(ox[0]!).get(sw).mul().sub().eqz().if();
  for (let r = 0; r < R; r++) {
    k.get(dy).get(oy).get(Wo).mul().get(ox[r]!).add().get(outB).mul().add();
    k.get(zero).get(ox[r]!).get(Wo).ltU().select().set(d[r]!);
  }
  dotTap(k, { i, j, kw, Cin, c0, outB, w, kb, wq, d, dv, wv, acc });
  k.end(); // column phase
  k.get(j).i32(1).add().tee(j).get(kw).ltU().brIf(0).end();
  k.end(); // row
  k.get(i).i32(1).add().tee(i).get(kh).ltU().brIf(0).end();
  storeLaneSums(k, acc, dxo, c0, s0, s1);
  k.get(xx).get(sw).i32(2).mul().add().set(xx).br(0).end().end();
  k.get(ph).i32(1).add().tee(ph).get(sw).ltU().brIf(0).end();
  k.get(yy).i32(1).add().tee(yy).get(H).ltU().brIf(0).end();
  k.get(c0).i32(4).add().tee(c0).get(Cin).ltU().brIf(0).end();
  return f.fn('conv_dxs', k);
}

/** Locals of {@link dotTap}. */
interface DotTapLocals {
  i: number;
  j: number;
  kw: number;
  Cin: number;
  c0: number;
  outB: number;
  w: number;
  kb: number;
  wq: number[];
  d: number[];
  dv: number[];
  wv: number;
  acc: number[];
}

/**
 * One kernel tap of the input gradient: for each pixel r (dy row `d[r]`) and each of the 4 input
 * channels from c0 (kernel rows `wq`), add the dot product over the output channels, 4 lanes at
 * a time, into `acc[4 r + cc]`.
 */
function dotTap(k: WasmCode, v: DotTapLocals): void {
  const { i, j, kw, Cin, c0, outB, w, kb, wq, d, dv, wv, acc } = v;
  k.get(i).get(kw).mul().get(j).add().get(Cin).mul().get(c0).add().get(outB).mul().get(w).add();
  k.set(wq[0]!);
  for (let cc = 1; cc < 4; cc++)
    k.get(wq[cc - 1]!)
      .get(outB)
      .add()
      .set(wq[cc]!);
  k.i32(0).set(kb).loop();
  for (let r = 0; r < d.length; r++) k.get(d[r]!).get(kb).add().vLoad().set(dv[r]!);
  for (let cc = 0; cc < 4; cc++) {
    k.get(wq[cc]!).get(kb).add().vLoad().set(wv);
    d.forEach((_, r) => {
      const q = acc[r * 4 + cc]!;
      madd(k, q, dv[r]!, wv);
    });
  }
  k.get(kb).i32(16).add().tee(kb).get(outB).ltU().brIf(0).end();
}

/**
 * Store the input-gradient tile: the lane sums of each pixel's 4 accumulators as one v128
 * `[c0, c0+1, c0+2, c0+3]` at `dxo[r] + 4 c0` (last pixel first: a repeated pixel is written
 * with the same values).
 */
function storeLaneSums(
  k: WasmCode,
  acc: number[],
  dxo: number[],
  c0: number,
  s0: number,
  s1: number,
): void {
  for (let r = dxo.length - 1; r >= 0; r--) {
    const [a0, a1, a2, a3] = acc.slice(r * 4, r * 4 + 4) as [number, number, number, number];
    k.get(a0)
      .get(a1)
      .shuffle(f32Lanes([0, 4, 1, 5]));
    k.get(a0)
      .get(a1)
      .shuffle(f32Lanes([2, 6, 3, 7]))
      .f32x4Add()
      .set(s0);
    k.get(a2)
      .get(a3)
      .shuffle(f32Lanes([0, 4, 1, 5]));
    k.get(a2)
      .get(a3)
      .shuffle(f32Lanes([2, 6, 3, 7]))
      .f32x4Add()
      .set(s1);
    k.get(dxo[r]!).get(c0).i32(4).mul().add();
    k.get(s0)
      .get(s1)
      .shuffle(f32Lanes([0, 1, 4, 5]));
    k.get(s0)
      .get(s1)
      .shuffle(f32Lanes([2, 3, 6, 7]))
      .f32x4Add()
      .vStore();
  }
}

/**
 * `conv_dw(x, dy, dw, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl, accumulate)`, one
 * sample: `dw[kh, kw, Cin, Cout]` of the forward above (added to what `dw` holds when
 * `accumulate` is not 0). Cin % 4 == 0 and Cout % 4 == 0.
 * `conv_dw_blk` (`blocked`), the same with x as `[Cin/4, H·W, 4]` and dy as `[Cout/8, Ho·Wo, 8]`
 * (the last block of 4 when Cout % 8 is 4), copied so by `copy_rows` first: a tile (4 input x 8
 * output channels) then reads 16 and 32 contiguous bytes per pixel instead of 16 and 32 bytes
 * of a 64-byte line whose rows are Cin·4 and Cout·4 bytes apart, a quarter and a half of the
 * cache lines it pulls through L2 for every tile (`bench:wasm-kernels`' gradient table).
 */
function convFilterGrad(blocked = false): WasmFunction {
  const f = new Frame(16);
  const { x, dy, dw, H, W, Cin, Ho, Wo, Cout, kh, kw, sh, sw, pt, pl, accumulate } = indices(
    ['x', 'dy', 'dw', ...CONV_GEOMETRY, 'accumulate'],
    0,
  );
  const { i, j, c0, o0, oy, iy, lo, hi, t, xp, dp, cnt, inB, outB, xStep, dwp } = f.i32s([
    'i',
    'j',
    'c0',
    'o0',
    'oy',
    'iy',
    'lo',
    'hi',
    't',
    'xp',
    'dp',
    'cnt',
    'inB',
    'outB',
    'xStep',
    'dwp',
  ]);
  const acc = range(8).map(() => f.v128());
  const a = f.v128();
  const b = [f.v128(), f.v128()];
  const s = f.v128();
  const k = new WasmCode();
  k.get(Cin).i32(4).mul().set(inB).get(Cout).i32(4).mul().set(outB);
  if (blocked) k.get(sw).i32(16).mul().set(xStep);
  else k.get(sw).get(inB).mul().set(xStep);
  // one tile of 4 input channels (c0) x (4 * nv) output channels (o0) at tap (i, j)
  const tile = (nv: number): void => {
    k.get(i).get(kw).mul().get(j).add().get(Cin).mul().get(c0).add().get(outB).mul();
    k.get(o0).i32(4).mul().add().get(dw).add().set(dwp);
    // start from zero, or from what dw holds (a shared kernel's gradient summed over samples)
    k.get(accumulate).if();
    for (let l = 0; l < 4; l++) {
      for (let h = 0; h < nv; h++) {
        k.get(dwp)
          .get(outB)
          .i32(l)
          .mul()
          .add()
          .vLoad(16 * h)
          .set(acc[l * nv + h]!);
      }
    }
    k.else();
    for (let q = 0; q < 4 * nv; q++) k.vZero().set(acc[q]!);
    k.end();
    k.i32(0).set(oy).loop();
    k.get(oy).get(sh).mul().get(i).add().get(pt).sub().tee(iy).get(H).ltU();
    k.get(hi).get(lo).gtS().and().if();
    k.get(iy).get(W).mul().get(lo).get(sw).mul().add().get(j).add().get(pl).sub();
    if (blocked) {
      // x as [Cin/4, H·W, 4]: channel block c0/4 at c0·H·W floats, one pixel 16 bytes
      k.i32(16).mul().get(c0).get(H).mul().get(W).mul().i32(4).mul().add().get(x).add().set(xp);
    } else k.get(Cin).mul().get(c0).add().i32(4).mul().get(x).add().set(xp);
    if (blocked) {
      // dy as blocks of 8 output channels ([Cout/8, Ho·Wo, 8], the last one of 4 when Cout % 8
      // is 4): block o0/8 at o0·Ho·Wo floats, one pixel 4·nv floats
      k.get(oy)
        .get(Wo)
        .mul()
        .get(lo)
        .add()
        .i32(16 * nv)
        .mul();
      k.get(o0).get(Ho).mul().get(Wo).mul().i32(4).mul().add();
    } else k.get(oy).get(Wo).mul().get(lo).add().get(Cout).mul().get(o0).add().i32(4).mul();
    k.get(dy).add().set(dp);
    k.get(hi).get(lo).sub().set(cnt).loop();
    k.get(xp).vLoad().set(a);
    for (let h = 0; h < nv; h++)
      k.get(dp)
        .vLoad(16 * h)
        .set(b[h]!);
    for (let l = 0; l < 4; l++) {
      k.get(a)
        .get(a)
        .shuffle(f32Lanes([l, l, l, l]))
        .set(s);
      for (let h = 0; h < nv; h++) {
        const q = acc[l * nv + h]!;
        madd(k, q, s, b[h]!);
      }
    }
    k.get(xp).get(xStep).add().set(xp).get(dp);
    if (blocked) k.i32(16 * nv);
    else k.get(outB);
    k.add().set(dp);
    k.get(cnt).i32(1).sub().tee(cnt).brIf(0).end();
    k.end();
    k.get(oy).i32(1).add().tee(oy).get(Ho).ltU().brIf(0).end();
    for (let l = 0; l < 4; l++) {
      for (let h = 0; h < nv; h++)
        k.get(dwp)
          .get(acc[l * nv + h]!)
          .vStore(16 * h);
      k.get(dwp).get(outB).add().set(dwp);
    }
  };
  k.i32(0).set(i).loop();
  k.i32(0).set(j).loop();
  // output columns whose tap j lands inside the image: [lo, hi)
  // lo = max(0, ceil((pl - j) / sw)); hi = min(Wo, floor((W - 1 + pl - j) / sw) + 1)
  k.get(pl).get(j).sub().tee(t).i32(0).gtS().if();
  k.get(t).get(sw).add().i32(1).sub().get(sw).divU().set(lo);
  k.else().i32(0).set(lo).end();
  k.get(W).i32(1).sub().get(pl).add().get(j).sub().tee(t).i32(0).ltS().if();
  k.i32(0).set(hi);
  k.else();
  k.get(t).get(sw).divU().i32(1).add().tee(hi).get(Wo).get(hi).get(Wo).ltS().select().set(hi);
  k.end();
  k.i32(0).set(c0).loop();
  k.i32(0).set(o0).block().loop();
  k.get(o0).i32(8).add().get(Cout).gtS().brIf(1);
  tile(2);
  k.get(o0).i32(8).add().set(o0).br(0).end().end();
  k.get(o0).get(Cout).ltS().if();
  tile(1);
  k.end();
  k.get(c0).i32(4).add().tee(c0).get(Cin).ltU().brIf(0).end();
  k.get(j).i32(1).add().tee(j).get(kw).ltU().brIf(0).end();
  k.get(i).i32(1).add().tee(i).get(kh).ltU().brIf(0).end();
  return f.fn(blocked ? 'conv_dw_blk' : 'conv_dw', k);
}

/**
 * `copy_rows(src, dst, rows, srcRowB, dstRowB, rowB)`: `rows` rows of `rowB` bytes (a multiple
 * of 16) from rows `srcRowB` apart to rows `dstRowB` apart.
 */
function copyRows(): WasmFunction {
  const f = new Frame(6);
  const { src, dst, rows, srcRowB, dstRowB, rowB } = indices(
    ['src', 'dst', 'rows', 'srcRowB', 'dstRowB', 'rowB'],
    0,
  );
  const { r, o } = f.i32s(['r', 'o']);
  const k = new WasmCode();
  k.get(rows).eqz().if().br(1).end();
  k.i32(0).set(r).loop();
  k.i32(0).set(o).loop();
  k.get(dst).get(o).add().get(src).get(o).add().vLoad().vStore();
  k.get(o).i32(16).add().tee(o).get(rowB).ltU().brIf(0).end();
  k.get(src).get(srcRowB).add().set(src).get(dst).get(dstRowB).add().set(dst);
  k.get(r).i32(1).add().tee(r).get(rows).ltU().brIf(0).end();
  return f.fn('copy_rows', k);
}

/**
 * `transpose_2d(src, dst, R, C, srcRowB, dstRowB)`: a matrix `[R, C]` (rows `srcRowB` bytes
 * apart) to `[C, R]` (rows `dstRowB` apart), R and C multiples of 4, by 4x4 blocks through
 * registers (4 loads, 8 shuffles, 4 stores).
 */
function matrixTranspose(): WasmFunction {
  const f = new Frame(6);
  const { src, dst, R, C, srcRowB, dstRowB } = indices(
    ['src', 'dst', 'R', 'C', 'srcRowB', 'dstRowB'],
    0,
  );
  const { r0, c0, sp, dp } = f.i32s(['r0', 'c0', 'sp', 'dp']);
  const v = range(4).map(() => f.v128());
  const t = range(4).map(() => f.v128());
  const k = new WasmCode();
  k.i32(0).set(r0).loop();
  k.i32(0).set(c0).loop();
  // source block at row r0, column c0; destination block at row c0, column r0
  k.get(src).get(r0).get(srcRowB).mul().add().get(c0).i32(4).mul().add().set(sp);
  k.get(dst).get(c0).get(dstRowB).mul().add().get(r0).i32(4).mul().add().set(dp);
  for (let q = 0; q < 4; q++) k.get(sp).get(srcRowB).i32(q).mul().add().vLoad().set(v[q]!);
  k.get(v[0]!)
    .get(v[1]!)
    .shuffle(f32Lanes([0, 4, 1, 5]))
    .set(t[0]!);
  k.get(v[0]!)
    .get(v[1]!)
    .shuffle(f32Lanes([2, 6, 3, 7]))
    .set(t[1]!);
  k.get(v[2]!)
    .get(v[3]!)
    .shuffle(f32Lanes([0, 4, 1, 5]))
    .set(t[2]!);
  k.get(v[2]!)
    .get(v[3]!)
    .shuffle(f32Lanes([2, 6, 3, 7]))
    .set(t[3]!);
  const out: [number, number, number[]][] = [
    [t[0]!, t[2]!, [0, 1, 4, 5]],
    [t[0]!, t[2]!, [2, 3, 6, 7]],
    [t[1]!, t[3]!, [0, 1, 4, 5]],
    [t[1]!, t[3]!, [2, 3, 6, 7]],
  ];
  out.forEach(([x, y, lanes], q) => {
    k.get(dp).get(dstRowB).i32(q).mul().add().get(x).get(y).shuffle(f32Lanes(lanes)).vStore();
  });
  k.get(c0).i32(4).add().tee(c0).get(C).ltU().brIf(0).end();
  k.get(r0).i32(4).add().tee(r0).get(R).ltU().brIf(0).end();
  return f.fn('transpose_2d', k);
}

/** Columns per block of {@link matMulGrads}: 1 KB of each row, the block of `db` in L1 / L2. */
const MMG_BLOCK = 256;
/** Rows of `dy` per pass of {@link matMulGrads} (`mm_grads_R`; `mm_grads_1` takes the rest). */
const MMG_ROWS = 4;

/**
 * `mm_grads_R(a, b, dy, da, db, r0, r1, K, N)`: both gradients of `y = a @ b` (`a [M, K]`,
 * `b [K, N]`) in one pass over `dy [M, N]`: `da[r, j] += dy[r, :] . b[j, :]` and
 * `db[j, :] += sum_r a[r, j] dy[r, :]`, for rows r0..r1-1 (r1 - r0 a multiple of R), both
 * accumulated into what `da` and `db` hold (the caller zeroes them). Blocks of
 * {@link MMG_BLOCK} columns; in a block, R rows of `dy` at a time: for each j, one pass over the
 * block does R dot products with `b[j]` and adds the R rows, scaled by `a[r, j]`, to `db[j]`
 * (read and written once per R rows). N % 4 == 0. The KW kernel assembly `alpha @ warehouse`
 * has few columns in `a` (the n cells) and a long `dy` (the per-sample kernels' gradient, e.g.
 * 288 x 65536): its two gradient products each read all of `dy`, here it is read once.
 */
function matMulGrads(R: number): WasmFunction {
  const f = new Frame(9);
  const { a, b, dy, da, db, r0, r1, K, N } = indices(
    ['a', 'b', 'dy', 'da', 'db', 'r0', 'r1', 'K', 'N'],
    0,
  );
  const { cb, cend, r, j, c, bRow, dbRow, rowB } = f.i32s([
    'cb',
    'cend',
    'r',
    'j',
    'c',
    'bRow',
    'dbRow',
    'rowB',
  ]);
  const yRow = range(R).map(() => f.i32());
  const s = range(R).map(() => f.v128());
  const acc = range(R).map(() => f.v128());
  const bv = f.v128();
  const d = f.v128();
  const yv = f.v128();
  const k = new WasmCode();
  k.get(N).i32(4).mul().set(rowB);
  // column blocks: cb and cend are byte offsets into a row
  k.i32(0).set(cb).block().loop();
  k.get(cb).get(rowB).ltU().eqz().brIf(1);
  k.get(cb)
    .i32(MMG_BLOCK * 4)
    .add()
    .set(cend);
  k.get(cend).get(rowB).get(cend).get(rowB).ltU().select().set(cend);
  // R rows at a time
  k.get(r0).set(r).block().loop();
  k.get(r).get(r1).ltU().eqz().brIf(1);
  for (let q = 0; q < R; q++) k.get(dy).get(r).i32(q).add().get(rowB).mul().add().set(yRow[q]!);
  k.i32(0).set(j).loop();
  for (let q = 0; q < R; q++) {
    // a[r + q, j], in all four lanes
    k.get(a)
      .get(r)
      .i32(q)
      .add()
      .get(K)
      .mul()
      .get(j)
      .add()
      .i32(4)
      .mul()
      .add()
      .vLoadSplat32()
      .set(s[q]!);
    k.vZero().set(acc[q]!);
  }
  k.get(b).get(j).get(rowB).mul().add().set(bRow);
  k.get(db).get(j).get(rowB).mul().add().set(dbRow);
  k.get(cb).set(c).loop();
  k.get(bRow).get(c).add().vLoad().set(bv);
  k.get(dbRow).get(c).add().vLoad().set(d);
  for (let q = 0; q < R; q++) {
    k.get(yRow[q]!).get(c).add().vLoad().set(yv);
    madd(k, acc[q]!, yv, bv);
    madd(k, d, s[q]!, yv);
  }
  k.get(dbRow).get(c).add().get(d).vStore();
  k.get(c).i32(16).add().tee(c).get(cend).ltU().brIf(0).end();
  // da[r + q, j] += the four lanes of acc[q]
  for (let q = 0; q < R; q++) {
    k.get(da).get(r).i32(q).add().get(K).mul().get(j).add().i32(4).mul().add().tee(c);
    k.get(c).f32Load();
    for (let lane = 0; lane < 4; lane++) k.get(acc[q]!).f32x4ExtractLane(lane).f32Add();
    k.f32Store();
  }
  k.get(j).i32(1).add().tee(j).get(K).ltU().brIf(0).end();
  k.get(r).i32(R).add().set(r).br(0).end().end();
  k.get(cend).set(cb).br(0).end().end();
  return f.fn(R === 1 ? 'mm_grads_1' : 'mm_grads_R', k);
}

export type ConvFn = (...args: number[]) => void;
export interface Kernels {
  conv_fwd: ConvFn;
  gemm_rows: ConvFn;
  conv_dx1: ConvFn;
  conv_dxs: ConvFn;
  conv_dw: ConvFn;
  conv_dw_blk: ConvFn;
  copy_rows: ConvFn;
  transpose_2d: ConvFn;
  mm_grads_R: ConvFn;
  mm_grads_1: ConvFn;
  bn_moments: ConvFn;
  bn_gsums: ConvFn;
  bn_norm: ConvFn;
  bn_dx: ConvFn;
  mix_fwd: ConvFn;
  mix_bwd: ConvFn;
  adam: ConvFn;
  wino_w: ConvFn;
  wino_in: ConvFn;
  wino_out: ConvFn;
  wino_dy: ConvFn;
  wino_wg: ConvFn;
  wino4_w: ConvFn;
  wino4_in: ConvFn;
  wino4_out: ConvFn;
  wino4_dy: ConvFn;
  wino4_wg: ConvFn;
}

/** The parts of tfjs-backend-wasm's BackendWasm used here and in fast-wasm.ts. */
export interface WasmBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object): void;
  incRef(dataId: object): void;
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  wasm?: { asm?: { memory?: unknown }; wasmMemory?: unknown };
}

let enabled = true;

/** The WebAssembly API (typed here: the package builds without DOM or Node types). */
interface WasmApi {
  Memory: abstract new (...args: never[]) => { buffer: unknown };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
  validate(bytes: Uint8Array): boolean;
}
const WA = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/** A binding of the kernels to one heap, or why there is none. */
interface Binding {
  kernels: Kernels | null;
  why: string;
  fma: boolean;
}

const moduleBytes = new Map<boolean, Uint8Array>();
function bytesFor(fma: boolean): Uint8Array {
  let b = moduleBytes.get(fma);
  if (!b) {
    b = writeModule(fma);
    moduleBytes.set(fma, b);
  }
  return b;
}

let fmaAllowed = true;
let relaxedSimd: boolean | undefined;
/**
 * Whether the kernels use relaxed SIMD's multiply-add: allowed (the default) and the engine
 * has relaxed SIMD (Node >= 22, Chrome >= 114; Node 20 with `--experimental-wasm-relaxed-simd`).
 */
function useFma(): boolean {
  if (!fmaAllowed || !WA) return false;
  relaxedSimd ??= WA.validate(bytesFor(true));
  return relaxedSimd;
}

const instances = new WeakMap<object, Map<boolean, Binding>>();

/** The kernels bound to this backend's heap, or null where they cannot run there. */
export function kernelsFor(be: WasmBackend): Kernels | null {
  return bind(be).kernels;
}

/**
 * The kernels bound to this heap for kernel `name`, which runs only where they can: a gradient
 * runs on them even if they were switched off since its forward.
 */
export function requireKernels(be: WasmBackend, name: string): Kernels {
  const k = kernelsFor(be);
  if (!k) throw new Error(`${name}: the own wasm kernels cannot run on this heap`);
  return k;
}

/**
 * The own kernels bound to the active wasm backend's heap, or null: another backend, the kernels
 * turned off ({@link setOwnWasmKernels}), or an engine or heap they cannot run on. The one check
 * every entry point makes (`applies`, {@link matMulWasm}, bn-wasm.ts).
 */
export function activeOwnKernels(): { be: WasmBackend; kernels: Kernels } | null {
  if (!enabled || tf.getBackend() !== 'wasm') return null;
  const be = tf.backend() as unknown as WasmBackend;
  const kernels = kernelsFor(be);
  return kernels ? { be, kernels } : null;
}

/**
 * The on/off switch of one path on the own kernels (bn-wasm.ts, gap-wasm.ts, adam-wasm.ts; on by
 * default, and {@link setOwnWasmKernels}`(false)` turns every path off too), for side-by-side
 * benchmarks: `set` returns the previous setting, `active` is {@link activeOwnKernels} while on.
 */
export class OwnKernelPath {
  private on = true;
  set(enabled: boolean): boolean {
    const was = this.on;
    this.on = enabled;
    return was;
  }
  /** The setting (shard workers take the main thread's). */
  get enabled(): boolean {
    return this.on;
  }
  active(): ReturnType<typeof activeOwnKernels> {
    return this.on ? activeOwnKernels() : null;
  }
}

/** All kernels as one module; `fma`: with relaxed SIMD's multiply-add. */
function writeModule(fma: boolean): Uint8Array {
  fusedMultiplyAdd = fma;
  try {
    return wasmModule([
      convForward(2, 4),
      gemmRows(2, 4),
      convInputGrad(),
      convInputGradStrided(),
      convFilterGrad(),
      convFilterGrad(true),
      copyRows(),
      matrixTranspose(),
      matMulGrads(MMG_ROWS),
      matMulGrads(1),
      ...batchNormFunctions(),
      ...tapMixFunctions(madd),
      adamFunction(),
      ...winogradFunctions(),
    ]);
  } finally {
    fusedMultiplyAdd = false;
  }
}

/** The kernels bound to this backend's heap, or why they cannot run there. */
function bind(be: WasmBackend): Binding {
  const mem = be.wasm?.asm?.memory ?? be.wasm?.wasmMemory;
  if (!WA) return { kernels: null, why: 'this engine has no WebAssembly', fma: false };
  if (!(mem instanceof WA.Memory)) {
    const why = "the wasm backend's memory is not reachable (unknown build)";
    return { kernels: null, why, fma: false };
  }
  const fma = useFma();
  let byMode = instances.get(mem);
  if (!byMode) {
    byMode = new Map();
    instances.set(mem, byMode);
  }
  const cached = byMode.get(fma);
  if (cached) return cached;
  let r: Binding;
  if (!(mem.buffer instanceof ArrayBuffer)) {
    // tfjs's threaded build: its heap is shared between threads (would need a shared import)
    r = { kernels: null, why: 'the wasm heap is shared between threads (threaded build)', fma };
  } else {
    try {
      const inst = new WA.Instance(new WA.Module(bytesFor(fma)), { env: { mem } });
      r = { kernels: inst.exports as unknown as Kernels, why: '', fma };
    } catch (e) {
      const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
      const why = `this engine cannot compile them (no WebAssembly SIMD?): ${msg}`;
      r = { kernels: null, why, fma };
    }
  }
  byMode.set(fma, r);
  return r;
}

/**
 * Every switch of this file's kernels: the public ones ({@link setOwnWasmKernels},
 * {@link setWasmFusedMultiplyAdd}, {@link setWasmWinograd}) and those for side-by-side
 * benchmarks and tests. Most change the numbers by float rounding, so shard workers take the
 * main thread's at every step (shards.ts), to compute what in-thread shards compute.
 */
export interface OwnKernelSettings {
  enabled: boolean;
  fmaAllowed: boolean;
  winograd: boolean;
  winogradTiles: 'auto' | 2 | 4;
  winogradChunkFloats: number;
  dxByForward: boolean;
  dxByPhases: boolean;
  dwBlocked: boolean;
  assemblyNoPack: boolean;
}

/** The current {@link OwnKernelSettings}. */
export function ownWasmKernelSettings(): OwnKernelSettings {
  return {
    enabled,
    fmaAllowed,
    winograd,
    winogradTiles,
    winogradChunkFloats: WINO_CHUNK_FLOATS,
    dxByForward,
    dxByPhases,
    dwBlocked,
    assemblyNoPack,
  };
}

/** Set every switch of {@link OwnKernelSettings} (a shard worker, from the main thread's). */
export function applyOwnWasmKernelSettings(s: OwnKernelSettings): void {
  setOwnWasmKernels(s.enabled);
  setWasmFusedMultiplyAdd(s.fmaAllowed);
  setWasmWinograd(s.winograd);
  setWinogradTiles(s.winogradTiles);
  setWinogradChunkFloats(s.winogradChunkFloats);
  setInputGradByForward(s.dxByForward);
  setStridedInputGradByPhases(s.dxByPhases);
  setFilterGradBlocked(s.dwBlocked);
  setAssemblyForwardNoPack(s.assemblyNoPack);
}

/**
 * Allow or forbid relaxed SIMD's multiply-add in the kernels (allowed by default; used where the
 * engine has relaxed SIMD: 1.2-1.35x faster convolutions, `bench:per-sample`). It rounds once
 * where the hardware fuses (a·b + c exactly rounded), so results differ from the unfused kernels
 * (and from XNNPACK) by float rounding; forbid it to get the same numbers on every engine.
 * Returns the previous setting.
 */
export function setWasmFusedMultiplyAdd(allowed: boolean): boolean {
  const was = fmaAllowed;
  fmaAllowed = switchValue('setWasmFusedMultiplyAdd', allowed);
  return was;
}

/** V8's switch for WebAssembly relaxed SIMD (on by default from V8 11.4: Node 22, Chrome 114). */
const RELAXED_SIMD_FLAG = '--experimental-wasm-relaxed-simd';

/**
 * Make relaxed SIMD available to the kernels on Node 20, whose V8 (11.3) has it behind
 * `--experimental-wasm-relaxed-simd`: sets that flag through `node:v8` (process-wide, so worker
 * threads started later have it too) when the engine does not validate relaxed SIMD yet. The
 * kernels then use its multiply-add (unless {@link setWasmFusedMultiplyAdd} forbids it):
 * 1.1-1.3x faster convolutions (`bench:conv-forward` with and without `KW_BENCH_FMA=off`,
 * `bench:per-sample`). Results differ
 * from the unfused kernels by float rounding. Node documents flags set after start-up as
 * unsupported territory; this one is only read when a module is validated or compiled, and
 * `packages/tfjs/test/conv-wasm.test.ts` checks the kernels under it. Returns whether the
 * engine has relaxed SIMD now (true at once on Node >= 22; false in a browser without it, or
 * where `node:v8` cannot be loaded). `chooseBackend({ fusedMultiplyAdd: true })` calls it when
 * it picks wasm, as `kw train` does unless `--fma off`.
 *
 * @example
 * await enableRelaxedSimd(); // before the first kernel runs (chooseBackend reports bind them)
 */
export async function enableRelaxedSimd(): Promise<boolean> {
  if (!WA) return false;
  const probe = () => WA.validate(bytesFor(true));
  if (probe()) {
    relaxedSimd = true;
    return true;
  }
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (!proc?.versions?.node) return false;
  try {
    // a name in a variable, as for node:fs and node:worker_threads: bundlers for browsers do
    // not try to resolve it
    const name = 'node:v8';
    const v8 = (await import(name)) as { setFlagsFromString(f: string): void };
    v8.setFlagsFromString(RELAXED_SIMD_FLAG);
  } catch {
    return false;
  }
  relaxedSimd = probe();
  return relaxedSimd;
}

/**
 * Whether this file's kernels run on the current backend, and if not why (for reports):
 * `{ active: true }` on the wasm backend of tfjs 4.22 in Node and in browsers without
 * cross-origin isolation; `fma` when they use relaxed SIMD's multiply-add.
 */
export function ownWasmKernelsStatus(): { active: boolean; fma: boolean; reason: string } {
  const off = (reason: string) => ({ active: false, fma: false, reason });
  if (tf.getBackend() !== 'wasm') return off('the backend is not wasm');
  if (!enabled) return off('turned off with setOwnWasmKernels(false)');
  const { kernels, why, fma } = bind(tf.backend() as unknown as WasmBackend);
  if (!kernels) return off(why);
  return { active: true, fma, reason: fma ? 'on, with fused multiply-add' : 'on' };
}

interface Geometry {
  strides: [number, number];
  pads: [number, number];
}

/** The byte address of a tensor's data in the wasm heap. */
export function heapOffset(be: WasmBackend, t: tf.TensorInfo): number {
  const d = be.dataIdMap.get(t.dataId);
  if (!d) throw new Error('conv-wasm kernel: a tensor is not in the wasm heap');
  return d.memoryOffset;
}

/** A zero-filled float32 tensor of `shape` in the heap (dispose with disposeData). */
export function zeros(be: WasmBackend, shape: number[]): tf.TensorInfo {
  const z = be.makeOutput(shape, 'float32');
  be.typedArrayFromHeap(z).fill(0);
  return z;
}

const FWD = 'KwWasmConv2D';
const DX = 'KwWasmConv2DBackpropInput';
const DW = 'KwWasmConv2DBackpropFilter';

/**
 * {@link matMulNoPack} takes products with at most this many output rows (more go to XNNPACK,
 * whose packing is then a smaller share of the work). `bench:wasm-kernels`, own kernels off vs
 * on, `288xR ^T x 288x16384` with a new operand each call: 2.8x faster at 9 rows, 1.9x at 64,
 * 1.6x at 256 (its 512-row case is above the limit: XNNPACK in both columns). The KW warehouse
 * gradients measured here have 9-76 rows.
 */
const MM_MAX_ROWS = 256;

/**
 * `conv_fwd` of one sample, 16 output channels at a time: each block of the kernel
 * (`[kh·kw·C rows, 16]`, rows `4·O` bytes apart) is copied to the contiguous `scratch` (at least
 * `kh·kw·C·16` floats) first. Read in place those rows fall into few L1 sets (1.65x slower at
 * 7x7x256, the rows 1 KB apart); the copy is one pass over the kernel. `g` is the conv
 * geometry `[H, W, C, Ho, Wo, O, kh, kw, sh, sw, pt, pl]`; byte addresses.
 */
function forwardInBlocks(
  K: Kernels,
  scratch: number,
  x: number,
  w: number,
  y: number,
  zero: number,
  g: readonly number[],
): void {
  for (let o0 = 0; o0 < g[5]!; o0 += 16) {
    copyBlock(K, w, scratch, g, o0);
    convBlock(K, x, scratch, y, zero, g, o0);
  }
}

/**
 * The kernel's columns `o0 .. o0 + 16` (fewer in the last block) from `w` (rows `4·O` bytes
 * apart) to the contiguous `[kh·kw·C, nb]` block at `dst`; `g` as in {@link forwardInBlocks}.
 */
function copyBlock(K: Kernels, w: number, dst: number, g: readonly number[], o0: number): void {
  const O = g[5]!;
  const nb = Math.min(16, O - o0);
  K.copy_rows(w + o0 * 4, dst, g[6]! * g[7]! * g[2]!, O * 4, nb * 4, nb * 4);
}

/** `conv_fwd` of one sample for the output channels of the block {@link copyBlock} wrote. */
function convBlock(
  K: Kernels,
  x: number,
  block: number,
  y: number,
  zero: number,
  g: readonly number[],
  o0: number,
): void {
  const O = g[5]!;
  const nb = Math.min(16, O - o0);
  const geometry = [...g];
  geometry[5] = nb;
  K.conv_fwd(x, block, y + o0 * 4, zero, ...geometry, nb * 4, O * 4);
}

/**
 * `c [rows, N] = a [rows, K] @ b` on `gemm_rows`, for `b` laid out as {@link copyBlock} lays a
 * kernel out: blocks of 16 columns (fewer in the last), block `o0` at `K·o0` floats with rows
 * `min(16, N - o0)` floats long; `c`'s rows `N` floats apart. Byte addresses; N % 4 == 0.
 */
function gemmBlocks(
  K: Kernels,
  a: number,
  b: number,
  c: number,
  rows: number,
  Kd: number,
  N: number,
): void {
  for (let o0 = 0; o0 < N; o0 += 16) {
    const nb = Math.min(16, N - o0);
    K.gemm_rows(a, b + Kd * o0 * 4, c + o0 * 4, rows, Kd, nb, nb * 4, N * 4);
  }
}

/**
 * conv_dw_blk's copies of x `[rowsX, C]` and dy `[rowsDy, O]`: x as `[C/4, rowsX, 4]` at `xBlk`,
 * dy as `[O/8, rowsDy, 8]` at `dyBlk` (the last block of 4 when O % 8 is 4). Byte addresses.
 */
function dwBlockCopies(
  K: Kernels,
  x: number,
  xBlk: number,
  rowsX: number,
  C: number,
  dy: number,
  dyBlk: number,
  rowsDy: number,
  O: number,
): void {
  for (let c0 = 0; c0 < C; c0 += 4)
    K.copy_rows(x + c0 * 4, xBlk + c0 * rowsX * 4, rowsX, C * 4, 16, 16);
  for (let o0 = 0; o0 < O; o0 += 8) {
    const nb = Math.min(8, O - o0) * 4;
    K.copy_rows(dy + o0 * 4, dyBlk + o0 * rowsDy * 4, rowsDy, O * 4, nb, nb);
  }
}

let winograd = true;

/**
 * Whether 3x3 stride-1 convs run as Winograd convolutions (on by default: F(2x2, 3x3) for the
 * forward and the input gradient, F(4x4, 3x3) for the filter gradient on maps where it saves
 * products) or as direct convs on `conv_fwd`; returns the previous setting. Both round differently (the results
 * agree to float32 rounding); for side-by-side benchmarks and for the numbers of earlier
 * releases.
 */
export function setWasmWinograd(on: boolean): boolean {
  const was = winograd;
  winograd = switchValue('setWasmWinograd', on);
  return was;
}

/**
 * The transformed inputs of one piece of {@link winogradPieces} (`a² · samples · tiles ·
 * max(C, O)` floats) are kept within this many floats (512 KB, in L2 beside the products'
 * output; sweeping 16 K to 16 M floats moved the forward within this host's noise).
 */
let WINO_CHUNK_FLOATS = 1 << 17;

/**
 * Set {@link WINO_CHUNK_FLOATS} (tests: a small budget makes small maps take the band path);
 * returns the previous value.
 */
export function setWinogradChunkFloats(floats: number): number {
  const was = WINO_CHUNK_FLOATS;
  WINO_CHUNK_FLOATS = floats;
  return was;
}

/**
 * Per-sample kernels (each transformed for its one sample) take {@link winogradConv} and
 * {@link winogradFilterGrad} from this many input pixels up. Batch 32, forward / forward with
 * both gradients in F(2x2, 3x3) against the direct kernels: 1.47x / 1.43x faster at 28x28x64,
 * 1.46x / 1.37x at 14x14x128, but 0.80x / 0.95x at 7x7x256 and 0.77x / 0.77x at 7x7x128, where a
 * sample's 16 tiles do not repay its kernel's transform (one-off timings on the Intel Xeon of
 * `RESULTS.md`'s run 21, before F(4x4, 3x3), whose transformed kernel is 2.25x larger; a shared
 * kernel, transformed once for the batch, is faster at all of them: `bench:winograd`).
 */
const WINO_MIN_PIXELS = 100;

/** Whether a conv of this geometry runs as {@link winogradConv} (not counting per-sample rules). */
function winogradApplies(kh: number, kw: number, sh: number, sw: number): boolean {
  return winograd && kh === 3 && kw === 3 && sh === 1 && sw === 1;
}

/**
 * Whether a conv with one kernel per sample, of this kernel, stride and input map, runs as a
 * Winograd convolution on the own kernels (forward, input and filter gradients): 3x3, stride 1,
 * at least {@link WINO_MIN_PIXELS} input pixels, Winograd on ({@link setWasmWinograd}). For the
 * tap-mixing cost rule (mix-wasm.ts), whose assembled form then costs less.
 */
export function perSampleWinograd(
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  H: number,
  W: number,
): boolean {
  return winogradApplies(kh, kw, sh, sw) && H * W >= WINO_MIN_PIXELS;
}

/** A conv's sizes: batch, input map and channels, output map and channels. */
type ConvDims = { B: number; H: number; W: number; C: number; Ho: number; Wo: number; O: number };

/**
 * The kernels a Winograd conv reads or writes: one for the whole batch (`perSample` false,
 * `at(0)`), or one per sample (`at(b)`: sample b's address, computed, or built, when asked).
 */
interface WinogradKernelsAt {
  perSample: boolean;
  at: (b: number) => number;
}

/**
 * `y = conv(x, w)` for a 3x3 stride-1 conv with HWIO kernels `w [3, 3, C, O]` (one for all `B`
 * samples, or one per sample: `w.at`), as Winograd F(m x m, 3x3) (winograd-kernels.ts; m = 4 or
 * 2 by {@link winogradForm}): each kernel transformed once (`wino_w`, which writes blocks of 16
 * output channels); then, piece by piece ({@link winogradPieces}), the inputs' `a x a` tiles
 * transformed (`wino_in`, a = m + 2), the `a²` products `V[k] @ U[k]` on `gemm_rows` and the
 * m x m output tiles written (`wino_out`): `a²` multiply-adds per m x m output pixels and
 * channel pair instead of `9·m²` (36 for 16 pixels, 16 for 4; a map the tiles do not divide pays
 * for the whole last tile). Any padding (rows and columns outside the input read as zeros,
 * `at.zero` points at >= C zeros); Ho and Wo as the caller computed them. Byte addresses;
 * C % 4 == 0 and O % 4 == 0.
 */
function winogradConv(
  be: WasmBackend,
  K: Kernels,
  at: { x: number; y: number; zero: number },
  w: WinogradKernelsAt,
  d: ConvDims,
  pads: { pt: number; pl: number },
  pass: 'forward' | 'inputGrad' = 'forward',
): void {
  const { H, W, C, Ho, Wo, O } = d;
  const F = winogradForm(Ho, Wo, pass, w.perSample);
  const fn = winogradKernels(K, F);
  const P = F.a * F.a; // products per tile
  const plan = winogradPieces(F, d, w.perSample);
  const { uB, vB, mB } = plan;
  const tmp = [uB, vB, mB].map((b) => be.makeOutput([(P * b) / 4], 'float32'));
  const [uo, vo, mo] = tmp.map((t) => heapOffset(be, t)) as [number, number, number];
  plan.pieces.forEach((q, i) => {
    // the kernel once, or each sample's at its first piece
    if (i === 0 || (w.perSample && q.ty0 === 0)) fn.w(w.at(q.b0), uo, C, O, uB);
    const x = at.x + q.b0 * H * W * C * 4;
    // a band of tile rows from ty0: the same tiles with the padding moved up by m·ty0 rows
    const pt = pads.pt - F.m * q.ty0;
    fn.in(x, vo, at.zero, H, W, C, q.th, plan.TW, pt, pads.pl, q.n, vB);
    // U[k] (blocks of 16 output channels, as wino_w writes them) at k·uB bytes
    for (let k = 0; k < P; k++) gemmBlocks(K, vo + k * vB, uo + k * uB, mo + k * mB, q.rows, C, O);
    const y = at.y + (q.b0 * Ho * Wo + F.m * q.ty0 * Wo) * O * 4;
    fn.out(mo, y, Ho - F.m * q.ty0, Wo, O, q.th, plan.TW, q.n, mB);
  });
  for (const t of tmp) be.disposeData(t.dataId);
}

/**
 * How {@link winogradConv} and {@link winogradFilterGrad} walk a batch: pieces of whole samples
 * (one at a time with per-sample kernels) whose transformed inputs (`a² · tiles · max(C, O)`
 * floats a sample) fit {@link WINO_CHUNK_FLOATS}, or, where one sample does not, bands of tile
 * rows of one sample (so that a large image needs scratch of the budget's size, not of the
 * image's). `R` is the most rows of V[k] and M[k] a piece has; `uB`, `vB` and `mB` are the
 * bytes from one of the `a²` matrices of U (`[C, O]`), V (`[R, C]`) and M (`[R, O]`) to the next
 * ({@link winogradStride}, padded unless {@link setWinogradPadding} says otherwise).
 */
function winogradPieces(
  F: WinogradForm,
  d: Pick<ConvDims, 'B' | 'C' | 'Ho' | 'Wo' | 'O'>,
  perSample: boolean,
): {
  TW: number;
  R: number;
  pieces: { b0: number; n: number; ty0: number; th: number; rows: number }[];
  uB: number;
  vB: number;
  mB: number;
} {
  const { B, C, Ho, Wo, O } = d;
  const [TH, TW] = [Math.ceil(Ho / F.m), Math.ceil(Wo / F.m)];
  const perRow = F.a * F.a * TW * Math.max(C, O); // floats of one tile row's transformed inputs
  const pieces: { b0: number; n: number; ty0: number; th: number; rows: number }[] = [];
  let R: number;
  if (perRow * TH <= WINO_CHUNK_FLOATS) {
    const most = perSample ? 1 : B;
    const nS = Math.max(1, Math.min(most, Math.floor(WINO_CHUNK_FLOATS / (perRow * TH))));
    for (let b0 = 0; b0 < B; b0 += nS) {
      const n = Math.min(nS, B - b0);
      pieces.push({ b0, n, ty0: 0, th: TH, rows: n * TH * TW });
    }
    R = Math.min(nS, B) * TH * TW;
  } else {
    const band = Math.max(1, Math.floor(WINO_CHUNK_FLOATS / perRow));
    for (let b0 = 0; b0 < B; b0++)
      for (let ty0 = 0; ty0 < TH; ty0 += band) {
        const th = Math.min(band, TH - ty0);
        pieces.push({ b0, n: 1, ty0, th, rows: th * TW });
      }
    R = Math.min(band, TH) * TW;
  }
  const [uB, vB, mB] = [C * O, R * C, R * O].map((n) => winogradStride(n, winogradPadding)) as [
    number,
    number,
    number,
  ];
  return { TW, R, pieces, uB, vB, mB };
}

/**
 * The filter gradient of {@link winogradConv}: `dw [3, 3, C, O]`, the gradient of `conv(x, w)`
 * given `dy` summed over the `B` samples (one `dw` at `dw.at(0)`) or each sample's own (at
 * `dw.at(b)`), in the transformed domain: the inputs' tiles (`wino_in`) and `dy`'s tiles spread
 * to `a x a` (`wino_dy`, `A dy Aᵀ`) give the `a²` gradients `dU[k] = V[k]ᵀ @ dM[k]` as 1x1
 * filter gradients on `conv_dw_blk` (accumulated over the pieces of {@link winogradPieces} that
 * make one `dw`), then `dw = Gᵀ dU G` (`wino_wg`). `at.zero` points at >= max(C, O) zeros; byte
 * addresses.
 */
function winogradFilterGrad(
  be: WasmBackend,
  K: Kernels,
  at: { x: number; dy: number; zero: number },
  dw: WinogradKernelsAt,
  d: ConvDims,
  pads: { pt: number; pl: number },
): void {
  const { H, W, C, Ho, Wo, O } = d;
  const F = winogradForm(Ho, Wo, 'filterGrad', dw.perSample);
  const fn = winogradKernels(K, F);
  const P = F.a * F.a;
  const plan = winogradPieces(F, d, dw.perSample);
  const { R, pieces, uB, vB, mB } = plan; // dU, V and dM
  const tmp = [(P * vB) / 4, (P * mB) / 4, R * C, R * O, (P * uB) / 4].map((n) =>
    be.makeOutput([n], 'float32'),
  );
  const [vo, mo, xb, db, uo] = tmp.map((t) => heapOffset(be, t)) as number[] as [
    number,
    number,
    number,
    number,
    number,
  ];
  pieces.forEach((q, i) => {
    const { rows } = q;
    // the first piece of a dw starts its sums; the last writes it
    const first = i === 0 || (dw.perSample && q.ty0 === 0);
    const last = i === pieces.length - 1 || (dw.perSample && pieces[i + 1]!.b0 !== q.b0);
    const x = at.x + q.b0 * H * W * C * 4;
    const pt = pads.pt - F.m * q.ty0;
    fn.in(x, vo, at.zero, H, W, C, q.th, plan.TW, pt, pads.pl, q.n, vB);
    const dy = at.dy + (q.b0 * Ho * Wo + F.m * q.ty0 * Wo) * O * 4;
    fn.dy(dy, mo, at.zero, Ho - F.m * q.ty0, Wo, O, q.th, plan.TW, q.n, mB);
    for (let k = 0; k < P; k++) {
      const [vk, mk] = [vo + k * vB, mo + k * mB];
      dwBlockCopies(K, vk, xb, rows, C, mk, db, rows, O);
      const g = [1, rows, C, 1, rows, O, 1, 1, 1, 1, 0, 0, first ? 0 : 1];
      K.conv_dw_blk(xb, db, uo + k * uB, ...g);
    }
    if (last) fn.wg(uo, dw.at(q.b0), C, O, uB);
  });
  for (const t of tmp) be.disposeData(t.dataId);
}

/** The five transforms of form `F` in the bound module. */
function winogradKernels(K: Kernels, F: WinogradForm) {
  const all = K as unknown as Record<string, ConvFn>;
  const get = (part: string) => all[`wino${F.suffix}_${part}`]!;
  return { w: get('w'), in: get('in'), out: get('out'), dy: get('dy'), wg: get('wg') };
}

let winogradTiles: 'auto' | 2 | 4 = 'auto';

/** Whether the Winograd convs keep their matrices an odd number of cache lines apart. */
let winogradPadding = true;

/**
 * Switch the padding of {@link winogradStride} on (the default) or off; returns the previous
 * setting. For side-by-side benchmarks (`bench:winograd`) and tests: results are the same bit
 * for bit either way.
 */
export function setWinogradPadding(on: boolean): boolean {
  const was = winogradPadding;
  winogradPadding = switchValue('setWinogradPadding', on);
  return was;
}

/**
 * Which Winograd form 3x3 stride-1 convs take: F(2x2, 3x3) or F(4x4, 3x3) in every pass, or by
 * the rule of {@link winogradForm} (`'auto'`, the default); returns the previous setting. For
 * side-by-side benchmarks (`bench:winograd`) and tests.
 */
export function setWinogradTiles(tiles: 'auto' | 2 | 4): 'auto' | 2 | 4 {
  const was = winogradTiles;
  winogradTiles = tiles;
  return was;
}

/**
 * The products of F(4x4, 3x3) (36 per 4x4 tile) over those of F(2x2, 3x3) (16 per 2x2 tile)
 * at or below which a pass takes F(4x4, 3x3): 28x28 and 7x7 maps (0.56: 7x7 and 2x2
 * tiles against 14x14 and 4x4), not 14x14 (0.73: 4x4 tiles cover 16x16). With F(4x4, 3x3) in
 * all three passes a conv with both gradients took 0.77-0.79x F(2x2)'s time at 28x28 and 7x7,
 * 1.04x at 14x14 (a shared kernel) and 1.23x (per-sample kernels, whose transformed copies are
 * 2.25x larger), batch 32 (`bench:winograd`'s forms table, on the Intel Xeon of `RESULTS.md`'s
 * run 21).
 */
const WINO_F4_MAX_PRODUCTS = 0.6;

/**
 * The products of F(m x m, 3x3) over an `h x w` map, per channel pair: `(m + 2)²` per tile, the
 * last row and column of tiles whole where m does not divide the map.
 */
function tileProducts(m: number, h: number, w: number): number {
  return (m + 2) ** 2 * Math.ceil(h / m) * Math.ceil(w / m);
}

/** Which pass of a conv a Winograd conv computes. */
export type WinogradPass = 'forward' | 'inputGrad' | 'filterGrad';

/**
 * The form of a pass whose output map (forward, filter gradient) or input map (input gradient)
 * is Ho x Wo pixels, by the products it saves ({@link WINO_F4_MAX_PRODUCTS}): F(4x4, 3x3) for
 * every pass of a kernel shared by the batch (an ordinary conv) and for the filter gradient of
 * per-sample kernels where it saves products, F(2x2, 3x3) otherwise. The width-4 ResNet-8 plain
 * training step took 0.87x the time of F(2x2, 3x3) in every pass (`bench:winograd`, 5
 * interleaved rounds, 2026-11-28), where the rule before (F(4x4, 3x3) in filter gradients only)
 * took 0.94-0.99x (2026-11-27). Per-sample kernels keep
 * F(2x2, 3x3) in the forward and the input gradient: with F(4x4, 3x3) in every pass of every
 * conv, `torch-parity.test.ts`'s KW 1x step (tau 0.5) had an attention bias gradient 2.1e-3 from
 * PyTorch float64 (its bound 1e-3), and each sample's transformed kernel is 2.25x larger. That
 * is a ReLU or |z| kink crossed by the coarser rounding, not a wrong sum: on five batches KW 1x
 * went past a parity bound in 6 of 10 cases with it on 28x28 maps, in 3 of 10 without, and
 * PyTorch float32 in 5 of 10 (docs/parity.md, "Other batches"). A forced setting ({@link setWinogradTiles}) takes its form in every pass.
 */
function winogradForm(
  Ho: number,
  Wo: number,
  pass: WinogradPass,
  perSample: boolean,
): WinogradForm {
  let m = winogradTiles === 'auto' ? 2 : winogradTiles;
  if (winogradTiles === 'auto' && (pass === 'filterGrad' || !perSample))
    m = tileProducts(4, Ho, Wo) <= WINO_F4_MAX_PRODUCTS * tileProducts(2, Ho, Wo) ? 4 : 2;
  return WINOGRAD_FORMS.find((F) => F.m === m)!;
}

/**
 * The multiplies one pass of a conv on the own kernels takes per sample and (input, output)
 * channel pair, in the form that pass runs: `a²` per tile of the Winograd form of
 * {@link winogradForm} (tiles over the output map in the forward and the filter gradient, over the
 * input map in the input gradient) where the conv runs as one ({@link winogradApplies}; per-sample
 * kernels from {@link WINO_MIN_PIXELS} input pixels; C and O multiples of 4, as the own kernels
 * need), else `kh·kw` per output pixel. Not part of the package's API: for the product-ideal
 * ratios of `bench:kw-overhead`.
 */
export function convPassProducts(
  g: Pick<ConvDims, 'H' | 'W' | 'C' | 'Ho' | 'Wo' | 'O'> & {
    kh: number;
    kw: number;
    sh: number;
    sw: number;
  },
  pass: WinogradPass,
  perSample: boolean,
): number {
  const { kh, kw, sh, sw, H, W, C, Ho, Wo, O } = g;
  const direct = kh * kw * Ho * Wo;
  if (!winogradApplies(kh, kw, sh, sw) || C % 4 !== 0 || O % 4 !== 0) return direct;
  if (perSample && H * W < WINO_MIN_PIXELS) return direct;
  const [h, w] = pass === 'inputGrad' ? [H, W] : [Ho, Wo];
  return tileProducts(winogradForm(h, w, pass, perSample).m, h, w);
}

/**
 * `a @ b` for float32 `a` `[M, K]` and `b` `[K, N]` (or with leading axes of size 1) with few
 * output rows and a new `b`, such as the KW warehouse gradient (attention^T x per-sample kernel
 * gradients, e.g. [9, 288] x [288, 65536]). XNNPACK's fully connected operator first packs
 * `b` column block by column block, reading rows N floats apart (one cache line per row and
 * page), which costs more than the product. Here `gemm_rows` (the forward kernel's tiles without
 * its pixel geometry) computes it, each block of 16 columns of `b` copied row by row into a
 * scratch buffer first, writing its columns of the output in place. Returns `undefined` where
 * it does not apply (the caller takes the stock kernel).
 */
export function matMulNoPack(
  backend: unknown,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  maxRows = MM_MAX_ROWS,
): tf.TensorInfo | undefined {
  const be = backend as WasmBackend;
  if (!enabled || a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  // [M, K] x [K, N], or with leading batch axes of size 1 (the output keeps them)
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2 || [...a.shape.slice(0, -2), ...b.shape.slice(0, -2)].some((d) => d !== 1))
    return undefined;
  const [M, K] = a.shape.slice(-2) as [number, number];
  const [K2, N] = b.shape.slice(-2) as [number, number];
  if (K !== K2 || N % 4 !== 0 || M === 0 || K === 0 || M > maxRows) return undefined;
  const kernels = kernelsFor(be);
  if (!kernels) return undefined;
  const out = be.makeOutput([...new Array<number>(Math.max(ra, rb) - 2).fill(1), M, N], 'float32');
  const scratch = be.makeOutput([K * 16], 'float32');
  const [ao, bo, so, oo] = [a, b, scratch, out].map((t) => heapOffset(be, t)) as [
    number,
    number,
    number,
    number,
  ];
  // a 1x1 convolution of M "pixels" of K channels (`gemm_rows`: the same sums as `conv_fwd`'s,
  // without its pixel geometry), each block of 16 columns of b copied contiguous first
  const g = [1, M, K, 1, M, N, 1, 1, 1, 1, 0, 0];
  for (let o0 = 0; o0 < N; o0 += 16) {
    const nb = Math.min(16, N - o0);
    copyBlock(kernels, bo, so, g, o0);
    kernels.gemm_rows(ao, so, oo + o0 * 4, M, K, nb, nb * 4, N * 4);
  }
  be.disposeData(scratch.dataId);
  return out;
}

/** The attributes of tfjs's `Conv2D` kernel. */
interface Conv2DAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/**
 * tfjs's `Conv2D` (an ordinary conv: NHWC, one HWIO filter for the whole batch) on `conv_fwd`.
 * The filter is first laid out as contiguous blocks of 16 output channels (one pass over it,
 * as {@link forwardInBlocks} does per sample), then every sample runs over the blocks; a 3x3
 * stride-1 conv runs as {@link winogradConv}. The
 * stock kernel is XNNPACK's, which packs the filter again whenever it is a new tensor (every
 * training step); here there is nothing to pack. `bench:conv-forward` measures the two side by
 * side. Returns `undefined` where the kernels do not apply (the caller takes the stock kernel):
 * NCHW, dilation, channels not multiples of 4, an empty axis, non-float32 tensors, or kernels
 * off or unbound.
 */
export function conv2dForwardWasm(
  backend: unknown,
  x: tf.TensorInfo,
  filter: tf.TensorInfo,
  attrs: Conv2DAttrs,
): tf.TensorInfo | undefined {
  if (x.shape.length !== 4 || filter.shape.length !== 4) return undefined;
  if ((attrs.dataFormat ?? 'NHWC') !== 'NHWC') return undefined;
  const [B, H, W, C] = x.shape as [number, number, number, number];
  const [kh, kw, fc, O] = filter.shape as [number, number, number, number];
  if (fc !== C) return undefined;
  let info: tf.backend_util.Conv2DInfo;
  try {
    info = tf.backend_util.computeConv2DInfo(
      [B, H, W, C],
      [kh, kw, fc, O],
      attrs.strides,
      attrs.dilations ?? 1,
      attrs.pad,
      attrs.dimRoundingMode,
    );
  } catch {
    return undefined; // the stock kernel reports what is wrong
  }
  const { outHeight: Ho, outWidth: Wo, strideHeight: sh, strideWidth: sw } = info;
  const { top: pt, left: pl } = info.padInfo;
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return undefined;
  const geometry = { strides: [sh, sw] as [number, number], padTop: pt, padLeft: pl };
  if (!applies(C, O, [B, H, W, kh, kw, Ho, Wo], geometry, x, filter)) return undefined;
  const be = backend as WasmBackend;
  const K = kernelsFor(be)!;
  const y = be.makeOutput([B, Ho, Wo, O], 'float32');
  const z = zeros(be, [C]);
  if (winogradApplies(kh, kw, sh, sw)) {
    const at = { x: heapOffset(be, x), y: heapOffset(be, y), zero: heapOffset(be, z) };
    const w = { perSample: false, at: () => heapOffset(be, filter) };
    winogradConv(be, K, at, w, { B, H, W, C, Ho, Wo, O }, { pt, pl });
    be.disposeData(z.dataId);
    return y;
  }
  const rows = kh * kw * C;
  const packed = be.makeOutput([rows * O], 'float32');
  const [xo, fo, yo, zo, po] = [x, filter, y, z, packed].map((t) => heapOffset(be, t)) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const g = [H, W, C, Ho, Wo, O, kh, kw, sh, sw, pt, pl];
  // every block once (block j, 16 output channels, at rows * 16 * j floats), then every sample
  // over the blocks
  for (let o0 = 0; o0 < O; o0 += 16) copyBlock(K, fo, po + rows * o0 * 4, g, o0);
  if (
    kh === 1 &&
    kw === 1 &&
    sh === 1 &&
    sw === 1 &&
    pt === 0 &&
    pl === 0 &&
    Ho === H &&
    Wo === W
  ) {
    // a 1x1 stride-1 conv without padding is one product of the batch's B·H·W pixels (rows of
    // C floats) with the kernel: `gemm_rows`, the same sums as `conv_fwd`'s per sample
    gemmBlocks(K, xo, po, yo, B * H * W, C, O);
  } else
    for (let b = 0; b < B; b++) {
      const xb = xo + b * H * W * C * 4;
      const yb = yo + b * Ho * Wo * O * 4;
      for (let o0 = 0; o0 < O; o0 += 16) convBlock(K, xb, po + rows * o0 * 4, yb, zo, g, o0);
    }
  be.disposeData(packed.dataId);
  be.disposeData(z.dataId);
  return y;
}

/**
 * A float32 transpose made of matrix transposes (after {@link simplifyTranspose}), on the
 * 4x4-block kernel above; `undefined` otherwise (the caller takes the stock kernel). Four forms:
 * `[B, R, C]` by `[0, 2, 1]` (a batch of matrices), `[B, P, Q, R, C]` by `[0, 2, 4, 1, 3]`
 * (each `[R, C]` block lands transposed at row q·C and column p·R of a `[Q·C, P·R]` matrix)
 * and its inverse `[0, 3, 1, 4, 2]`, all three with both sides multiples of 4; and `[A, B, C]`
 * by `[2, 1, 0]` (B matrices `[A, C]`, rows B·C floats apart, each transposed to rows B·A
 * floats apart), any sides: the 4x4 blocks on the kernel, the last `A % 4` rows and `C % 4`
 * columns here. KW's per-sample kernels go from the warehouse's cell order `[N, kh, kw,
 * G_out, G_in, c_out, c_in]` to HWIO the first three ways, and back for their gradients (the
 * first form when G_out = G_in = 1); an ordinary conv's OIHW weight goes to HWIO and its
 * gradient back by the fourth (`[O, I, 9]` and `[9, I, O]`: 1.7 and 7.9 ms on the stock kernel
 * for a 256x256 3x3 conv, the gradient's direction the slow one, 23 of them in a width-4
 * ResNet-8 training step).
 */
export function transposeBlocked(
  backend: unknown,
  x: tf.TensorInfo,
  perm: readonly number[],
): tf.TensorInfo | undefined {
  const be = backend as WasmBackend;
  if (!enabled || x.dtype !== 'float32') return undefined;
  const { shape, perm: p } = simplifyTranspose(x.shape, perm);
  const key = p.join(',');
  const d = shape;
  // blocks: [count, rows, cols, src(i), dst(i), srcRowB, dstRowB]
  let plan: [number, number, number, (i: number) => number, (i: number) => number, number, number];
  if (key === '1,0' || key === '0,2,1') {
    const [B, R, C] = key === '1,0' ? [1, d[0]!, d[1]!] : [d[0]!, d[1]!, d[2]!];
    const n = R * C * 4;
    plan = [B, R, C, (i) => i * n, (i) => i * n, C * 4, R * 4];
  } else if (key === '0,2,4,1,3') {
    // [B, P, Q, R, C] -> [B, Q, C, P, R]: block (b, p, q) = [R, C] at row q·C, column p·R
    const [B, P, Q, R, C] = d as [number, number, number, number, number];
    const at = (i: number) => [Math.floor(i / (P * Q)), Math.floor(i / Q) % P, i % Q] as const;
    const src = (i: number) => i * R * C * 4;
    const dst = (i: number) => {
      const [b, pp, q] = at(i);
      return ((b * Q + q) * C * P * R + pp * R) * 4;
    };
    plan = [B * P * Q, R, C, src, dst, C * 4, P * R * 4];
  } else if (key === '0,3,1,4,2') {
    // the inverse, [B, P, Q, R, C] -> [B, R, P, C, Q]: block (b, p, r) = [Q, C] with rows R·C
    // apart, to [C, Q] at (b, r, p)
    const [B, P, Q, R, C] = d as [number, number, number, number, number];
    const at = (i: number) => [Math.floor(i / (P * R)), Math.floor(i / R) % P, i % R] as const;
    const src = (i: number) => {
      const [b, pp, r] = at(i);
      return ((b * P + pp) * Q * R * C + r * C) * 4;
    };
    const dst = (i: number) => {
      const [b, pp, r] = at(i);
      return ((b * R + r) * P + pp) * C * Q * 4;
    };
    plan = [B * P * R, Q, C, src, dst, R * C * 4, Q * 4];
  } else if (key === '2,1,0') {
    // [A, B, C] -> [C, B, A]: block b = [A, C] with rows B·C apart, to [C, A] with rows B·A apart
    const [A, B, C] = d as [number, number, number];
    plan = [B, A, C, (i) => i * C * 4, (i) => i * A * 4, B * C * 4, B * A * 4];
  } else return undefined;
  const [count, rows, cols, src, dst, srcRowB, dstRowB] = plan;
  // sides that are not multiples of 4: the fourth form only
  const whole = rows % 4 === 0 && cols % 4 === 0;
  if ((!whole && key !== '2,1,0') || count * rows * cols === 0) return undefined;
  const kernels = kernelsFor(be);
  if (!kernels) return undefined;
  const out = be.makeOutput(
    perm.map((a) => x.shape[a]!),
    'float32',
  );
  const [xo, oo] = [heapOffset(be, x), heapOffset(be, out)];
  const [r4, c4] = [rows - (rows % 4), cols - (cols % 4)];
  if (r4 > 0 && c4 > 0)
    for (let i = 0; i < count; i++)
      kernels.transpose_2d(xo + src(i), oo + dst(i), r4, c4, srcRowB, dstRowB);
  if (!whole) {
    // the last rows % 4 rows (every column) and cols % 4 columns (the other rows), element by element
    const X = be.typedArrayFromHeap(x) as Float32Array;
    const Y = be.typedArrayFromHeap(out) as Float32Array;
    const [sRow, dRow] = [srcRowB / 4, dstRowB / 4];
    for (let i = 0; i < count; i++) {
      const [s0, d0] = [src(i) / 4, dst(i) / 4];
      for (let r = 0; r < rows; r++)
        for (let c = r < r4 ? c4 : 0; c < cols; c++) Y[d0 + c * dRow + r] = X[s0 + r * sRow + c]!;
    }
  }
  return out;
}

function forwardKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { x, kernels } = inputs as { x: tf.TensorInfo; kernels: tf.TensorInfo };
  const { strides, pads } = attrs as unknown as Geometry;
  const [B, H, W, C] = x.shape as [number, number, number, number];
  const [, kh, kw, , O] = kernels.shape as [number, number, number, number, number];
  const [sh, sw] = strides;
  const [pt, pl] = pads;
  const Ho = convOutputLength(H, kh, strides[0], pads[0]);
  const Wo = convOutputLength(W, kw, strides[1], pads[1]);
  const y = be.makeOutput([B, Ho, Wo, O], 'float32');
  const z = zeros(be, [C]);
  const K = kernelsFor(be)!;
  const [xo, ko, yo, zo] = [x, kernels, y, z].map((t) => heapOffset(be, t)) as number[];
  if (winogradApplies(kh, kw, sh, sw) && H * W >= WINO_MIN_PIXELS) {
    const w = { perSample: true, at: (b: number) => ko! + b * 9 * C * O * 4 };
    winogradConv(be, K, { x: xo!, y: yo!, zero: zo! }, w, { B, H, W, C, Ho, Wo, O }, { pt, pl });
    be.disposeData(z.dataId);
    return y;
  }
  const scratch = be.makeOutput([kh * kw * C * 16], 'float32');
  const so = heapOffset(be, scratch);
  const g = [H, W, C, Ho, Wo, O, kh, kw, sh, sw, pt, pl];
  for (let b = 0; b < B; b++) {
    const xb = xo! + b * H * W * C * 4;
    forwardInBlocks(K, so, xb, ko! + b * kh * kw * C * O * 4, yo! + b * Ho * Wo * O * 4, zo!, g);
  }
  be.disposeData(scratch.dataId);
  be.disposeData(z.dataId);
  return y;
}

/**
 * Attributes of the gradient kernels: `shared` means one kernel `[kh, kw, C, O]` for the whole
 * batch (an ordinary conv layer) instead of one per sample `[N, kh, kw, C, O]`.
 */
interface GradAttrs extends Geometry {
  shared: boolean;
}

let dxByForward = true;
let dxByPhases = true;
let dwBlocked = true;

/**
 * Whether the filter gradient reads x and dy through channel-block copies (`conv_dw_blk`; on
 * by default) or in place (`conv_dw`); returns the previous setting. For side-by-side
 * benchmarks.
 */
export function setFilterGradBlocked(on: boolean): boolean {
  const was = dwBlocked;
  dwBlocked = on;
  return was;
}

/**
 * Per-sample kernels take {@link inputGradByPhases} from this many pixels up (input pixels at
 * stride 1, output pixels at larger strides): each
 * sample's kernel is flipped and transposed first, a pass over the kernel per sample that small
 * images do not repay (batch 32, 3x3, `bench:wasm-kernels`' input-gradient table: 1.08-1.69x at
 * 28x28x64 and 14x14x128 over its runs, 0.79x at 7x7x256 in a timing while this was written,
 * before the limit; a shared kernel, flipped once for the batch, 0.99-1.37x at all three; at
 * stride 2 and 7x7 output pixels a timing of its strided cases gave 0.99x on the 3x3 layer and
 * 1.08x on the 1x1).
 */
const DX_FORWARD_MIN_PIXELS = 100;

/**
 * Whether a stride-1 input gradient runs as a forward conv ({@link inputGradByPhases}; on by
 * default) or on `conv_dx1`; returns the previous setting. For side-by-side benchmarks.
 */
export function setInputGradByForward(on: boolean): boolean {
  const was = dxByForward;
  dxByForward = on;
  return was;
}

/**
 * Whether a strided input gradient runs as one forward conv per output phase
 * ({@link inputGradByPhases}; on by default) or on `conv_dxs`; returns the previous setting. For
 * side-by-side benchmarks.
 */
export function setStridedInputGradByPhases(on: boolean): boolean {
  const was = dxByPhases;
  dxByPhases = on;
  return was;
}

/** The taps of one axis that reach the input positions `p, p + s, p + 2s, ...` and the padding of their forward conv. */
function phaseTaps(p: number, s: number, k: number, pad: number): { taps: number[]; pad: number } {
  // input position p + s·i is reached from output position (p + s·i + pad - t) / s through tap
  // t, for the taps t = first, first + s, ... (first = (p + pad) mod s); reversed, they are a
  // stride-1 forward conv whose padding makes output i read input i + d0 - m for the m-th tap
  const first = (p + pad) % s;
  const taps: number[] = [];
  for (let t = first; t < k; t += s) taps.push(t);
  return { taps, pad: taps.length - 1 - (p + pad - first) / s };
}

/**
 * An input gradient as `sh·sw` stride-1 forward convs, one per output phase: the pixels
 * `(ph + sh·i, pw + sw·j)` of `dx` only receive the taps `t ≡ ph + pt (mod sh)` (and likewise
 * across), so each phase is the forward kernel on `dy` with those taps reversed and each tap's
 * `[C, O]` transposed (`transpose_2d`), written to a scratch `[Hp, Wp, C]` and copied to its
 * pixels of `dx` (`copy_rows`, rows `sw·C` floats apart). A phase that no tap reaches (a 1x1
 * kernel at stride 2) is zero. At stride 1 there is one phase, `dx = conv(dy, w')` with
 * `w'[i, j, o, c] = w[kh-1-i, kw-1-j, c, o]` and padding `kh-1-pt`, `kw-1-pl`, written straight
 * into `dx`: `conv_dx1` (dot products over the output channels with lane sums at the end) is
 * slower at most ResNet-8 shapes (`bench:wasm-kernels`' input-gradient table). A shared kernel is
 * reversed and packed once for the batch, per-sample kernels one sample at a time. `conv_dxs` (dot products over the output channels, lane sums at the end) ran the
 * width-4 ResNet-8's two 3x3 stage entries at ~24-30 GFLOP/s in `bench:tfjs-profile`, the forward
 * ~47 in `bench:conv-forward`; by phases 1.10-1.31x faster per gradient (`bench:wasm-kernels`).
 * Returns false, having written nothing, where a phase would need negative padding (padding
 * above the taps the phase has): `conv_dx1` / `conv_dxs` take those. `at.zero` points at
 * `max(O, C)` zeros.
 */
function inputGradByPhases(
  be: WasmBackend,
  K: Kernels,
  at: { dy: number; k: number; dx: number; zero: number },
  dims: ConvDims,
  taps: { kh: number; kw: number; pt: number; pl: number; sh: number; sw: number },
  shared: boolean,
): boolean {
  const { B, H, W, C, Ho, Wo, O } = dims;
  const { kh, kw, pt, pl, sh, sw } = taps;
  const phases: {
    ph: number;
    pw: number;
    rows: number[];
    cols: number[];
    g: number[];
    at: number;
  }[] = [];
  let offset = 0; // of the phase's kernel in `sub` (floats)
  for (let ph = 0; ph < sh; ph++)
    for (let pw = 0; pw < sw; pw++) {
      const Hp = Math.ceil((H - ph) / sh);
      const Wp = Math.ceil((W - pw) / sw);
      if (Hp < 1 || Wp < 1) continue;
      const r = phaseTaps(ph, sh, kh, pt);
      const c = phaseTaps(pw, sw, kw, pl);
      if (r.taps.length > 0 && c.taps.length > 0 && (r.pad < 0 || c.pad < 0)) return false;
      const g = [Ho, Wo, O, Hp, Wp, C, r.taps.length, c.taps.length, 1, 1, r.pad, c.pad];
      phases.push({ ph, pw, rows: r.taps, cols: c.taps, g, at: offset });
      offset += r.taps.length * c.taps.length * O * C;
    }
  const maxRows = Math.max(...phases.map((q) => q.rows.length * q.cols.length * O));
  const blocks = Math.ceil(C / 16);
  const sub = be.makeOutput([Math.max(offset, 1)], 'float32');
  // shared: every phase's kernel packed in 16-channel blocks once; per-sample: one block at a time
  const packed = be.makeOutput(
    [Math.max(16, shared ? (offset / C) * 16 * blocks : maxRows * 16)],
    'float32',
  );
  // stride 1: the one phase is dx itself
  const direct = sh === 1 && sw === 1;
  const maxPixels = direct ? 0 : Math.max(...phases.map((q) => q.g[3]! * q.g[4]!));
  const scratch = direct ? undefined : be.makeOutput([maxPixels * C], 'float32');
  const [so, po] = [sub, packed].map((t) => heapOffset(be, t)) as number[];
  const to = scratch ? heapOffset(be, scratch) : 0;
  // the phase's taps reversed, each tap's [C, O] transposed to [O, C]
  const build = (k: number) => {
    for (const q of phases) {
      const [mh, mw] = [q.rows.length, q.cols.length];
      for (let i = 0; i < mh; i++)
        for (let j = 0; j < mw; j++) {
          const src = k + (q.rows[mh - 1 - i]! * kw + q.cols[mw - 1 - j]!) * C * O * 4;
          const dst = so! + (q.at + (i * mw + j) * O * C) * 4;
          K.transpose_2d(src, dst, C, O, O * 4, C * 4);
        }
    }
  };
  const packedAt = (q: (typeof phases)[number]) => po! + (q.at / C) * 16 * blocks * 4;
  const q0 = phases[0]!;
  if (direct && winogradApplies(kh, kw, 1, 1) && (shared || H * W >= WINO_MIN_PIXELS)) {
    // dx = conv(dy, w') as Winograd, w' built once (shared) or for each sample when asked
    const d = { B, H: Ho, W: Wo, C: O, Ho: H, Wo: W, O: C };
    const pads = { pt: q0.g[10]!, pl: q0.g[11]! };
    const w = {
      perSample: !shared,
      at: (b: number) => {
        build(at.k + (shared ? 0 : b * kh * kw * C * O * 4));
        return so!;
      },
    };
    winogradConv(be, K, { x: at.dy, y: at.dx, zero: at.zero }, w, d, pads, 'inputGrad');
    for (const t of [sub, packed, scratch]) if (t) be.disposeData(t.dataId);
    return true;
  }
  if (shared) {
    build(at.k);
    for (const q of phases) {
      const rows = q.rows.length * q.cols.length * O;
      for (let o0 = 0; o0 < C; o0 += 16)
        copyBlock(K, so! + q.at * 4, packedAt(q) + rows * o0 * 4, q.g, o0);
    }
  }
  for (let b = 0; b < B; b++) {
    const dyb = at.dy + b * Ho * Wo * O * 4;
    const dxb = at.dx + b * H * W * C * 4;
    const y = direct ? dxb : to;
    if (!shared) build(at.k + b * kh * kw * C * O * 4);
    for (const q of phases) {
      const [Hp, Wp] = [q.g[3]!, q.g[4]!];
      const none = q.rows.length === 0 || q.cols.length === 0;
      if (!none) {
        const rows = q.rows.length * q.cols.length * O;
        if (shared) {
          for (let o0 = 0; o0 < C; o0 += 16)
            convBlock(K, dyb, packedAt(q) + rows * o0 * 4, y, at.zero, q.g, o0);
        } else forwardInBlocks(K, po!, dyb, so! + q.at * 4, y, at.zero, q.g);
      }
      if (direct) continue;
      // the phase's pixels of dx, row by row (zeros where no tap reaches)
      for (let i = 0; i < Hp; i++) {
        const dst = dxb + ((q.ph + sh * i) * W + q.pw) * C * 4;
        if (none) K.copy_rows(at.zero, dst, Wp, 0, sw * C * 4, C * 4);
        else K.copy_rows(to + i * Wp * C * 4, dst, Wp, C * 4, sw * C * 4, C * 4);
      }
    }
  }
  for (const t of [sub, packed, scratch]) if (t) be.disposeData(t.dataId);
  return true;
}

function inputGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { dy, kernels } = inputs as { dy: tf.TensorInfo; kernels: tf.TensorInfo };
  const a = attrs as unknown as GradAttrs & { inputShape: number[] };
  const [B, H, W, C] = a.inputShape as [number, number, number, number];
  const [, Ho, Wo, O] = dy.shape as [number, number, number, number];
  const [kh, kw] = kernels.shape.slice(a.shared ? 0 : 1) as [number, number];
  const dx = be.makeOutput([B, H, W, C], 'float32');
  // read for padding (>= O) and copied to the pixels no tap reaches (>= C)
  const z = zeros(be, [Math.max(O, C)]);
  const K = kernelsFor(be)!;
  const [dyo, ko, dxo, zo] = [dy, kernels, dx, z].map((t) => heapOffset(be, t)) as number[];
  const kStep = a.shared ? 0 : kh * kw * C * O * 4;
  const [sh, sw] = a.strides;
  const [pt, pl] = a.pads;
  // per-sample kernels from DX_FORWARD_MIN_PIXELS (input pixels at stride 1, output pixels above)
  const stride1 = sh === 1 && sw === 1;
  const pixels = stride1 ? H * W : Ho * Wo;
  const byForward = stride1 ? dxByForward : dxByPhases;
  if (byForward && (a.shared || pixels >= DX_FORWARD_MIN_PIXELS)) {
    const at = { dy: dyo!, k: ko!, dx: dxo!, zero: zo! };
    const dims = { B, H, W, C, Ho, Wo, O };
    if (inputGradByPhases(be, K, at, dims, { kh, kw, pt, pl, sh, sw }, a.shared)) {
      be.disposeData(z.dataId);
      return dx;
    }
  }
  for (let b = 0; b < B; b++) {
    const at = [dyo! + b * Ho * Wo * O * 4, ko! + b * kStep, dxo! + b * H * W * C * 4, zo!];
    const dxFn = sh === 1 && sw === 1 ? K.conv_dx1 : K.conv_dxs;
    dxFn(...at, H, W, C, Ho, Wo, O, kh, kw, sh, sw, pt, pl);
  }
  be.disposeData(z.dataId);
  return dx;
}

function filterGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const be = backend as WasmBackend;
  const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const a = attrs as unknown as GradAttrs & { kernelSize: [number, number] };
  const [B, H, W, C] = x.shape as [number, number, number, number];
  const [, Ho, Wo, O] = dy.shape as [number, number, number, number];
  const [kh, kw] = a.kernelSize;
  const dw = be.makeOutput(a.shared ? [kh, kw, C, O] : [B, kh, kw, C, O], 'float32');
  const K = kernelsFor(be)!;
  const [xo, dyo, dwo] = [x, dy, dw].map((t) => heapOffset(be, t)) as number[];
  const kStep = a.shared ? 0 : kh * kw * C * O * 4;
  const [sh, sw] = a.strides;
  const [pt, pl] = a.pads;
  if (winogradApplies(kh, kw, sh, sw) && (a.shared || H * W >= WINO_MIN_PIXELS)) {
    const z = zeros(be, [Math.max(C, O)]);
    const zo = heapOffset(be, z);
    const out = { perSample: !a.shared, at: (b: number) => dwo! + b * kStep };
    const d = { B, H, W, C, Ho, Wo, O };
    winogradFilterGrad(be, K, { x: xo!, dy: dyo!, zero: zo }, out, d, { pt, pl });
    be.disposeData(z.dataId);
    return dw;
  }
  // conv_dw_blk's copies of one sample's x and dy (channel blocks, one after another)
  const blocks = dwBlocked ? be.makeOutput([H * W * C + Ho * Wo * O], 'float32') : undefined;
  const xBlk = blocks ? heapOffset(be, blocks) : 0;
  const dyBlk = xBlk + H * W * C * 4;
  for (let b = 0; b < B; b++) {
    // a shared kernel's gradient is the sum over samples, added sample after sample
    const acc = a.shared && b > 0 ? 1 : 0;
    const xb = xo! + b * H * W * C * 4;
    const dyb = dyo! + b * Ho * Wo * O * 4;
    const geometry = [H, W, C, Ho, Wo, O, kh, kw, sh, sw, pt, pl, acc];
    if (!blocks) {
      K.conv_dw(xb, dyb, dwo! + b * kStep, ...geometry);
      continue;
    }
    dwBlockCopies(K, xb, xBlk, H * W, C, dyb, dyBlk, Ho * Wo, O);
    K.conv_dw_blk(xBlk, dyBlk, dwo! + b * kStep, ...geometry);
  }
  if (blocks) be.disposeData(blocks.dataId);
  return dw;
}

const MMG = 'KwWasmMatMulGrads';

/** Both gradients of `a @ b` on `mm_grads_R` / `mm_grads_1`: outputs `[da, db]`. */
function matMulGradsKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { a, b, dy } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo; dy: tf.TensorInfo };
  const [M, K] = a.shape as [number, number];
  const N = b.shape[1]!;
  const da = zeros(be, [M, K]);
  const db = zeros(be, [K, N]);
  const Kn = kernelsFor(be)!;
  const at = [a, b, dy, da, db].map((t) => heapOffset(be, t)) as number[];
  const mr = M - (M % MMG_ROWS);
  if (mr > 0) Kn.mm_grads_R(...at, 0, mr, K, N);
  if (mr < M) Kn.mm_grads_1(...at, mr, M, K, N);
  return [da, db];
}

/**
 * Largest inner dimension K for {@link matMulWasm}. `bench:wasm-kernels` measures K = 9-38 (the
 * width-4 ResNet-8's warehouses): 1.26-1.60x faster than tfjs's two products, counting the
 * forward. A one-off timing while this was written (not a repo benchmark) found no gain at
 * K = 76-256 with the fused multiply-add and a loss (0.9x) at K = 76 without it, hence the limit.
 */
const MMG_MAX_K = 64;

const MMF = 'KwWasmMatMul';
let assemblyNoPack = true;

/**
 * Smallest inner dimension K whose {@link matMulWasm} forward takes {@link matMulKernel}:
 * `bench:wasm-kernels`' assembly-forward table measured 1.37-1.39x at K = 29 and 38 and 0.91x at
 * K = 9 (`[288, 9] x [9, 65536]`; even within the training step's profile), so smaller K stays
 * on XNNPACK.
 */
const NOPACK_MIN_K = 16;

/**
 * Whether {@link matMulWasm}'s forward runs on {@link matMulNoPack} (on by default) or on tfjs's
 * `BatchMatMul` (XNNPACK); returns the previous setting. For side-by-side benchmarks.
 */
export function setAssemblyForwardNoPack(on: boolean): boolean {
  const was = assemblyNoPack;
  assemblyNoPack = on;
  return was;
}

/**
 * `a @ b` on {@link matMulNoPack} whatever the number of rows, or on the backend's
 * `BatchMatMul` where that does not apply. KW's assembly has few columns in `a` (the n cells)
 * and long rows in `b` and the output (`[576, 29] x [29, 16384]`), and its `b` (the warehouse,
 * transposed per step) is new on every call: XNNPACK first packs it, a pass over its rows
 * 64 KB apart, for a product of only K multiply-adds per output.
 */
function matMulKernel(args: KernelArgs): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const own = matMulNoPack(args.backend, a, b, Number.POSITIVE_INFINITY);
  if (own) return own;
  const stock = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
  const attrs = { transposeA: false, transposeB: false };
  return stock({ ...args, attrs } as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
}

/**
 * `a @ b` (float32 `a [M, K]`, `b [K, N]`) whose gradient computes `da` and `db` in one pass
 * over `dy` (`mm_grads`) instead of tfjs's two products (each reading all of `dy`, the one with
 * few output rows or columns at a fraction of the conv kernels' rate): KW's kernel assembly
 * `alpha [N·m, n] @ warehouse [n, c_in·c_out]`. The forward is `matMulKernel`'s. Returns
 * `undefined` where it does not apply: another backend, kernels off, other dtypes or ranks, N
 * not a multiple of 4, K above 64 (`MMG_MAX_K`), an empty axis.
 */
export function matMulWasm(a: tf.Tensor, b: tf.Tensor): tf.Tensor | undefined {
  if (a.rank !== 2 || b.rank !== 2 || a.dtype !== 'float32' || b.dtype !== 'float32') return;
  const [M, K] = a.shape as [number, number];
  const [K2, N] = b.shape as [number, number];
  if (K !== K2 || M < 1 || K < 1 || K > MMG_MAX_K || N < 4 || N % 4 !== 0) return undefined;
  if (!activeOwnKernels()) return undefined;
  ensureRegistered();
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, w, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    save([x, w]);
    return {
      value:
        assemblyNoPack && K >= NOPACK_MIN_K
          ? (tf.engine().runKernel(MMF, { a: x, b: w }, {}) as tf.Tensor)
          : tf.matMul(x, w),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(MMG, { a: saved[0]!, b: saved[1]!, dy }, {}) as tf.Tensor[],
    };
  });
  return (f as unknown as (x: tf.Tensor, w: tf.Tensor) => tf.Tensor)(a, b);
}

/** What tfjs passes a kernel function (here and in fast-wasm.ts). */
export interface KernelArgs {
  inputs: Record<string, tf.TensorInfo>;
  backend: unknown;
  attrs?: Record<string, unknown>;
}

/**
 * Register a gradient for `kernelName` (a gradient kernel of the own kernels) that refuses
 * second-order autodiff as `BACKEND_UNSUPPORTED` with `message`, instead of tfjs's "gradient
 * function not found".
 */
export function refuseSecondOrder(kernelName: string, message: string): void {
  tf.registerGradient({
    kernelName,
    gradFunc: () => {
      throw new KwError('BACKEND_UNSUPPORTED', message);
    },
  });
}

/** Register each `[name, kernel]` of `table` on the wasm backend, unless it is already there. */
export function registerOwnKernels(
  table: readonly (readonly [string, (a: KernelArgs) => tf.TensorInfo | tf.TensorInfo[]])[],
): void {
  for (const [kernelName, fn] of table) {
    if (tf.getKernel(kernelName, 'wasm')) continue;
    tf.registerKernel({
      kernelName,
      backendName: 'wasm',
      kernelFunc: fn as unknown as tf.KernelFunc,
    });
  }
}

function ensureRegistered(): void {
  registerOwnKernels([
    [FWD, forwardKernel],
    [DX, inputGradKernel],
    [DW, filterGradKernel],
    [MMG, matMulGradsKernel],
    [MMF, matMulKernel],
  ]);
}

/**
 * Turn this file's wasm kernels on or off (on by default); returns the previous setting. Off,
 * per-sample convolution on wasm takes the stock per-sample loop, conv gradients the XNNPACK
 * re-expressions of `grads.ts` (for comparisons).
 */
export function setOwnWasmKernels(on: boolean): boolean {
  const was = enabled;
  enabled = switchValue('setOwnWasmKernels', on);
  return was;
}

/** The conv geometry of a per-sample convolution (the subset of a conv node used here). */
interface PerSampleGeometry {
  groups: number;
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
}

/**
 * `perSampleConv` on the wasm kernels above, differentiable in both inputs: `x` NHWC
 * `[N, H, W, C]`, `kernels` HWIO per sample `[N, kh, kw, C, O]`. Returns `undefined` (the
 * caller takes the stock loop) where the kernels do not apply: another backend, kernels turned
 * off, groups or dilation other than 1, channels not multiples of 4, non-float32 tensors, an
 * empty output, or an engine or heap they cannot run on.
 */
export function perSampleConvWasm(
  x: tf.Tensor,
  kernels: tf.Tensor,
  g: PerSampleGeometry,
): tf.Tensor | undefined {
  if (g.groups !== 1 || g.dilation[0] !== 1 || g.dilation[1] !== 1) return undefined;
  if (x.rank !== 4 || kernels.rank !== 5) return undefined;
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const [kn, kh, kw, kc, o] = kernels.shape as [number, number, number, number, number];
  if (kn !== n || kc !== c) return undefined;
  const geometry = { strides: g.stride, padTop: g.padding[0], padLeft: g.padding[1] };
  if (!applies(c, o, [n, h, w, kh, kw], geometry, x, kernels)) return undefined;
  if (convOutputLength(h, kh, g.stride[0], g.padding[0]) < 1) return undefined;
  if (convOutputLength(w, kw, g.stride[1], g.padding[1]) < 1) return undefined;
  ensureRegistered();
  const attrs = { strides: g.stride, pads: g.padding, shared: false };
  const run = (name: string, inputs: Record<string, tf.Tensor>, a: Record<string, unknown>) =>
    tf.engine().runKernel(name, inputs, a as tf.NamedAttrMap) as tf.Tensor;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, ks, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([xs, ks]);
    return {
      value: run(FWD, { x: xs, kernels: ks }, attrs),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
        run(DX, { dy, kernels: saved[1]! }, { ...attrs, inputShape: saved[0]!.shape }),
        run(DW, { x: saved[0]!, dy }, { ...attrs, kernelSize: [kh, kw] }),
      ],
    };
  });
  return (f as unknown as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor)(x, kernels);
}

/** Pads and strides of an ordinary conv, as its gradient kernels get them (top/left pads). */
export interface SharedConvGeometry {
  strides: [number, number];
  /** Padding above and left of the image (the rest follows from the shapes). */
  padTop: number;
  padLeft: number;
}

/**
 * Whether the kernels take a conv with `c` input and `o` output channels: the wasm backend with
 * the kernels on and bound, float32 tensors, channels multiples of 4, and (so that their loops
 * run at least once) no empty axis in `dims`, strides >= 1 and padding >= 0 (the stock route
 * reports what is wrong with such a conv).
 */
function applies(
  c: number,
  o: number,
  dims: number[],
  g: SharedConvGeometry,
  ...ts: { dtype: tf.DataType }[]
): boolean {
  if (c % 4 !== 0 || o % 4 !== 0) return false;
  if (![c, o, ...dims, ...g.strides].every((d) => Number.isInteger(d) && d >= 1)) return false;
  if (![g.padTop, g.padLeft].every((p) => Number.isInteger(p) && p >= 0)) return false;
  if (ts.some((t) => t.dtype !== 'float32')) return false;
  return activeOwnKernels() !== null;
}

/**
 * The input gradient of an ordinary NHWC conv (one HWIO `filter` for the batch, dilation 1)
 * on the kernels above, or `undefined` where they do not apply (channels not multiples of
 * 4, another backend, kernels off).
 */
export function convInputGradWasm(
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  inputShape: [number, number, number, number],
  g: SharedConvGeometry,
): tf.Tensor4D | undefined {
  const dims = [...inputShape, ...dy.shape, filter.shape[0], filter.shape[1]];
  if (!applies(filter.shape[2], filter.shape[3], dims, g, dy, filter)) return undefined;
  ensureRegistered();
  const attrs = { strides: g.strides, pads: [g.padTop, g.padLeft], shared: true, inputShape };
  return tf
    .engine()
    .runKernel(DX, { dy, kernels: filter }, attrs as tf.NamedAttrMap) as tf.Tensor4D;
}

/**
 * The filter gradient `[kh, kw, C, O]` of an ordinary NHWC conv (summed over the batch) on the
 * kernels above, or `undefined` where they do not apply.
 */
export function convFilterGradWasm(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  kernelSize: [number, number],
  g: SharedConvGeometry,
): tf.Tensor4D | undefined {
  const dims = [...x.shape, ...dy.shape, ...kernelSize];
  if (!applies(x.shape[3], dy.shape[3], dims, g, x, dy)) return undefined;
  ensureRegistered();
  const attrs = { strides: g.strides, pads: [g.padTop, g.padLeft], shared: true, kernelSize };
  return tf.engine().runKernel(DW, { x, dy }, attrs as tf.NamedAttrMap) as tf.Tensor4D;
}
