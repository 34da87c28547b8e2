/**
 * WebAssembly SIMD transforms of Winograd convolutions F(m x m, 3x3) (Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016), written with {@link wasmModule}'s emitter
 * and bound with the conv kernels to tfjs-backend-wasm's heap (conv-wasm.ts runs them). A 3x3
 * stride-1 conv gives each m x m block of output pixels (a tile) from the `a x a` block of input
 * pixels under it (`a = m + 2`) in `a²` products per input and output channel instead of `9·m²`:
 *
 *   `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`
 *
 * Summed over the input channels, the `a²` elementwise products become `a²` matrix products
 * `M[k] = V[k] @ U[k]` (`V[k]` `[tiles, C]`, `U[k]` `[C, O]`), which the forward conv kernel runs
 * as 1x1 convs; these functions are the transforms around them (and around the filter
 * gradient's products), 4 channels per lane group (channels are innermost in NHWC and HWIO).
 * Two forms ({@link WINOGRAD_FORMS}): F(2x2, 3x3), 16 products per 4 outputs (adds, subtracts
 * and halvings only), and F(4x4, 3x3), 36 per 16 (its constants, up to 8 and 16/15, round more:
 * the tests bound both against float64). Each function's code is written from the form's three
 * matrices (`transform2d`): a coefficient of 0 is skipped, ±1 is an add or subtract, others a
 * multiply by a constant (factored out where a combination's coefficients share one magnitude).
 *
 * Per form, with suffix `s` (`""` for F(2x2, 3x3), `"4"` for F(4x4, 3x3)):
 * - `wino{s}_w(g, u, C, O, uB)`: `U[k][c, o] = (G g[:, :, c, o] Gᵀ)[k]` for an HWIO
 *   `g [3, 3, C, O]`, each `U[k]` (`uB` bytes apart, `uB >= 4·C·O`) written as the forward kernel
 *   reads a kernel: blocks of 16 output channels (fewer in the last), block `o0` at `C·o0` floats
 *   with rows `min(16, O - o0)` floats long; O % 4 == 0.
 * - `wino{s}_in(x, v, zero, H, W, C, TH, TW, pt, pl, nS, vkB)`: for `nS` samples `x [H, W, C]`
 *   one after another, tile `(ty, tx)` of a `TH x TW` grid reads input rows `m·ty - pt ..
 *   m·ty - pt + a - 1` and columns likewise (zeros outside: `zero` points at >= C zeros) and
 *   writes row `(s·TH + ty)·TW + tx` of each `V[k]` (`[rows, C]`, the `a²` matrices `vkB` bytes
 *   apart).
 * - `wino{s}_out(m, y, Ho, Wo, O, TH, TW, nS, mkB)`: the inverse for the outputs: row r of the
 *   `M[k]` (`[rows, O]`, `mkB` bytes apart) to the tile's m x m pixels of `y [Ho, Wo, O]` per
 *   sample (the pixels past Ho or Wo of the last tile row or column are not written).
 * - `wino{s}_dy(dy, mg, zero, Ho, Wo, O, TH, TW, nS, mkB)`: the output gradient's tiles spread
 *   to `a x a` (`A dy Aᵀ`, the transpose of `_out`; pixels past Ho or Wo read as zeros).
 * - `wino{s}_wg(ug, dw, C, O, uB)`: the kernel gradient `dw [3, 3, C, O]` from the transformed
 *   one (`Gᵀ dU G`; `dU[k]` plain `[C, O]`, `uB` bytes apart).
 *
 * The callers keep the `a²` matrices of U, V and M an odd number of cache lines apart
 * ({@link winogradStride}): each transform reads or writes all `a²` of them at each step of its
 * loop, and at a power-of-two distance (U's `C·O` floats with C = O = 64, 128 or 256) those 16
 * or 36 lines share one set of the caches and evict each other before the next step uses them.
 * The kernel transforms, which step 4 channels at a time through each line, lost the most.
 */
import { Frame, indices, WasmCode, type WasmFunction } from './wasm-emit.js';

const range = (n: number): number[] => [...Array(n).keys()];

/** One Winograd form F(m x m, 3x3): its output tile size, input tile size and matrices. */
export interface WinogradForm {
  /** Export name suffix. */
  suffix: string;
  /** Output pixels per tile side. */
  m: number;
  /** Input pixels per tile side, m + 2; `a²` products per tile. */
  a: number;
  /** `Bᵀ` (a x a): the input transform. */
  BT: number[][];
  /** `G` (a x 3): the kernel transform. */
  G: number[][];
  /** `Aᵀ` (m x a): the output transform. */
  AT: number[][];
}

/**
 * F(2x2, 3x3) with the interpolation points 0, 1, -1 (and infinity) of Lavin and Gray; F(4x4,
 * 3x3) with the points 0, 1, -1, 1/2, -2 (and infinity), not Lavin and Gray's 0, ±1, ±2. With
 * theirs (constants up to 8 and 1/24) the forward and input gradient of the ordinary convs put
 * several early-layer gradients of `torch-parity.test.ts`'s plain step 3e-3..1.0e-2 from PyTorch
 * float64 (`conv1.weight`, `bn1.*`, `layer1.0.bn*.bias`; its bound 1e-3); with these, 1.4e-6 ..
 * 4.0e-6, the order of F(2x2, 3x3)'s 7.8e-7 .. 1.3e-6 for the same tensors. One conv's output against
 * float64 (64 channels, random data, relative L2): 1.2e-6 with these points, 1.9e-6 with
 * Lavin and Gray's, 2.8e-7 for F(2x2, 3x3) (one-off checks, 2026-11-28). Each matrix follows from
 * the points: `Aᵀ` rows are their powers, `G` rows the Lagrange weights, `Bᵀ` what makes
 * `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` the correlation.
 */
export const WINOGRAD_FORMS: readonly WinogradForm[] = [
  {
    suffix: '',
    m: 2,
    a: 4,
    BT: [
      [1, 0, -1, 0],
      [0, 1, 1, 0],
      [0, -1, 1, 0],
      [0, 1, 0, -1],
    ],
    G: [
      [1, 0, 0],
      [0.5, 0.5, 0.5],
      [0.5, -0.5, 0.5],
      [0, 0, 1],
    ],
    AT: [
      [1, 1, 1, 0],
      [0, 1, -1, -1],
    ],
  },
  {
    suffix: '4',
    m: 4,
    a: 6,
    BT: [
      [1, -3 / 2, -2, 3 / 2, 1, 0],
      [0, -1, 1 / 2, 5 / 2, 1, 0],
      [0, 1, -5 / 2, 1 / 2, 1, 0],
      [0, -2, -1, 2, 1, 0],
      [0, 1 / 2, -1, -1 / 2, 1, 0],
      [0, 1, -3 / 2, -2, 3 / 2, 1],
    ],
    G: [
      [1, 0, 0],
      [1 / 3, 1 / 3, 1 / 3],
      [-1 / 3, 1 / 3, -1 / 3],
      [-16 / 15, -8 / 15, -4 / 15],
      [1 / 15, -2 / 15, 4 / 15],
      [0, 0, 1],
    ],
    AT: [
      [1, 1, 1, 1, 1, 0],
      [0, 1, -1, 1 / 2, -2, 0],
      [0, 1, 1, 1 / 4, 4, 0],
      [0, 1, -1, 1 / 8, -8, 1],
    ],
  },
];

const transpose = (M: number[][]): number[][] => M[0]!.map((_, j) => M.map((r) => r[j]!));

/** v128 locals holding the constants (magnitudes other than 0 and 1) of some matrices. */
class Constants {
  private readonly at = new Map<number, number>();
  constructor(f: Frame, matrices: number[][][]) {
    for (const M of matrices)
      for (const row of M)
        for (const c of row) {
          const v = Math.abs(c);
          if (v !== 0 && v !== 1 && !this.at.has(v)) this.at.set(v, f.v128());
        }
  }
  /** Set every constant's local (once, before the loops). */
  init(k: WasmCode): void {
    for (const [v, l] of this.at) k.vSplatConst(v).set(l);
  }
  local(v: number): number {
    return this.at.get(Math.abs(v))!;
  }
}

/**
 * Push `Σ coefs[i]·srcs[i]` (v128 locals) on the stack: zero coefficients skipped, ±1 as adds and
 * subtracts, others as a multiply by the constant; where every coefficient has the same
 * magnitude, one multiply of the signed sum.
 */
function combination(k: WasmCode, coefs: number[], srcs: number[], consts: Constants): void {
  const terms = coefs.map((c, i) => [c, srcs[i]!] as const).filter(([c]) => c !== 0);
  if (terms.length === 0) {
    k.vZero();
    return;
  }
  // a positive term first where there is one (no negation needed)
  terms.sort((p, q) => (q[0] > 0 ? 1 : 0) - (p[0] > 0 ? 1 : 0));
  const mags = new Set(terms.map(([c]) => Math.abs(c)));
  const shared = mags.size === 1 ? [...mags][0]! : undefined;
  terms.forEach(([c, x], i) => {
    k.get(x);
    if (shared === undefined && Math.abs(c) !== 1) k.get(consts.local(c)).f32x4Mul();
    if (i === 0) {
      if (c < 0) k.f32x4Neg();
    } else if (c > 0) k.f32x4Add();
    else k.f32x4Sub();
  });
  if (shared !== undefined && shared !== 1) k.get(consts.local(shared)).f32x4Mul();
}

/**
 * `Y = L X Lᵀ` on v128 locals: `X` (n x n, row-major), `T` (rows(L) x n) scratch, then each
 * `Y[p][q]` pushed and handed to `out(p, q)` (which stores or sets it).
 */
function transform2d(
  k: WasmCode,
  L: number[][],
  X: number[],
  T: number[],
  consts: Constants,
  out: (p: number, q: number) => void,
): void {
  const n = L[0]!.length;
  for (let p = 0; p < L.length; p++)
    for (let j = 0; j < n; j++) {
      combination(
        k,
        L[p]!,
        range(n).map((i) => X[i * n + j]!),
        consts,
      );
      k.set(T[p * n + j]!);
    }
  for (let p = 0; p < L.length; p++)
    for (let q = 0; q < L.length; q++) {
      combination(
        k,
        L[q]!,
        range(n).map((j) => T[p * n + j]!),
        consts,
      );
      out(p, q);
    }
}

/** `wino{s}_w`: the kernel transform. */
function kernelTransform(F: WinogradForm): WasmFunction {
  const f = new Frame(5);
  const { g, u, C, O, uB } = indices(['g', 'u', 'C', 'O', 'uB'], 0);
  const { c, co, OB, tapB, base, a, o0B } = f.i32s(['c', 'co', 'OB', 'tapB', 'base', 'a', 'o0B']);
  const gv = range(9).map(() => f.v128());
  const t = range(3 * F.a).map(() => f.v128());
  const consts = new Constants(f, [F.G]);
  const k = new WasmCode();
  k.get(C).eqz().get(O).eqz().add().if().br(1).end();
  consts.init(k);
  k.get(O).i32(4).mul().set(OB);
  k.get(C).get(OB).mul().set(tapB); // one tap of g is C·O floats
  k.i32(0).set(c).loop();
  k.get(g).get(c).get(OB).mul().add().set(base);
  k.i32(0).set(co).loop();
  // the nine taps of 4 output channels
  k.get(base).get(co).add().set(a);
  for (let q = 0; q < 9; q++) {
    k.get(a).vLoad().set(gv[q]!);
    if (q < 8) k.get(a).get(tapB).add().set(a);
  }
  // U[k] at u + k·uB, in blocks of 16 output channels: the block from o0 at C·o0 floats, its
  // rows nb = min(16, O - o0) floats long
  k.get(co).i32(-64).and().set(o0B); // 4·o0
  k.get(u).get(C).get(o0B).mul().add();
  k.get(c).i32(64).get(OB).get(o0B).sub().tee(a).i32(64).get(a).ltU().select().mul().add();
  k.get(co).get(o0B).sub().add().set(a);
  // G g Gᵀ: the transposed-kernel trick does not apply (G is a x 3), so rows then columns
  const n = F.a;
  for (let p = 0; p < n; p++)
    for (let j = 0; j < 3; j++) {
      combination(
        k,
        F.G[p]!,
        range(3).map((i) => gv[i * 3 + j]!),
        consts,
      );
      k.set(t[p * 3 + j]!);
    }
  for (let p = 0; p < n; p++)
    for (let q = 0; q < n; q++) {
      k.get(a);
      combination(
        k,
        F.G[q]!,
        range(3).map((j) => t[p * 3 + j]!),
        consts,
      );
      k.vStore();
      if (p * n + q < n * n - 1) k.get(a).get(uB).add().set(a);
    }
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(c).i32(1).add().tee(c).get(C).ltU().brIf(0).end();
  return f.fn(`wino${F.suffix}_w`, k);
}

/** The locals of {@link tileLoops}. */
interface TileLoop {
  /** Loop counters: sample, tile row, tile column, channel group (bytes). */
  s: number;
  ty: number;
  tx: number;
  co: number;
  /** Bounds: samples, tile rows, tile columns. */
  nS: number;
  TH: number;
  TW: number;
  /** Bytes of one pixel's channels (and of one row of the transformed matrices). */
  chB: number;
  /** The tile's row of the transformed matrices: advanced by `chB` per tile. */
  row: number;
  /** The sample's image (`H x W` pixels): advanced by one image per sample. */
  img: number;
  H: number;
  W: number;
}

/**
 * The loop locals of a tile transform (i32 locals: allocate before the v128 ones), over `nS`
 * samples of `H x W` images at `img` with `ch` channels, whose tiles are the rows of the
 * transformed matrices at `mats`; `a` is a free address local.
 */
function tileLoop(
  f: Frame,
  p: {
    nS: number;
    TH: number;
    TW: number;
    ch: number;
    mats: number;
    img: number;
    H: number;
    W: number;
  },
): TileLoop & { ch: number; mats: number; a: number } {
  const { s, ty, tx, co, chB, row, a } = f.i32s(['s', 'ty', 'tx', 'co', 'chB', 'row', 'a']);
  return { ...p, s, ty, tx, co, chB, row, a };
}

/**
 * The start of a tile transform: return at once when a count is 0, `chB` = 4·ch, `row` at the
 * transformed matrices, the constants' locals set.
 */
function tilePrologue(k: WasmCode, l: ReturnType<typeof tileLoop>, consts: Constants): void {
  k.get(l.nS).eqz().get(l.ch).eqz().add().get(l.TH).eqz().add().get(l.TW).eqz().add();
  k.if().br(1).end();
  consts.init(k);
  k.get(l.ch).i32(4).mul().set(l.chB);
  k.get(l.mats).set(l.row);
}

/**
 * The loops of every tile transform: samples, tile rows, tile columns (`perTile` once per tile),
 * and in each tile the groups of 4 channels (`perGroup`, with `co` their byte offset).
 */
function tileLoops(k: WasmCode, l: TileLoop, perTile: () => void, perGroup: () => void): void {
  k.i32(0).set(l.s).loop();
  k.i32(0).set(l.ty).loop();
  k.i32(0).set(l.tx).loop();
  perTile();
  k.i32(0).set(l.co).loop();
  perGroup();
  k.get(l.co).i32(16).add().tee(l.co).get(l.chB).ltU().brIf(0).end();
  k.get(l.row).get(l.chB).add().set(l.row);
  k.get(l.tx).i32(1).add().tee(l.tx).get(l.TW).ltU().brIf(0).end();
  k.get(l.ty).i32(1).add().tee(l.ty).get(l.TH).ltU().brIf(0).end();
  k.get(l.img).get(l.H).get(l.W).mul().get(l.chB).mul().add().set(l.img);
  k.get(l.s).i32(1).add().tee(l.s).get(l.nS).ltU().brIf(0).end();
}

/**
 * Set `p[size·i + j]` to the address of the tile's pixel `(m·ty - pt + i, m·tx - pl + j)` of
 * the image, or to `zero` where that is outside it (`pt`, `pl`: parameters, or none).
 */
function tilePixels(
  k: WasmCode,
  l: TileLoop,
  at: { m: number; size: number; pt?: number; pl?: number; zero: number; iy: number; ix: number },
  p: number[],
): void {
  for (let i = 0; i < at.size; i++) {
    k.get(l.ty).i32(at.m).mul();
    if (at.pt !== undefined) k.get(at.pt).sub();
    k.i32(i).add().set(at.iy);
    for (let j = 0; j < at.size; j++) {
      k.get(l.tx).i32(at.m).mul();
      if (at.pl !== undefined) k.get(at.pl).sub();
      k.i32(j).add().set(at.ix);
      k.get(l.img).get(at.iy).get(l.W).mul().get(at.ix).add().get(l.chB).mul().add();
      k.get(at.zero);
      k.get(at.iy).get(l.H).ltU().get(at.ix).get(l.W).ltU().and();
      k.select().set(p[at.size * i + j]!);
    }
  }
}

/** `wino{s}_in`: the input transform. */
function inputTransform(F: WinogradForm): WasmFunction {
  const f = new Frame(12);
  const { x, v, zero, H, W, C, TH, TW, pt, pl, nS, vkB } = indices(
    ['x', 'v', 'zero', 'H', 'W', 'C', 'TH', 'TW', 'pt', 'pl', 'nS', 'vkB'],
    0,
  );
  const l = tileLoop(f, { nS, TH, TW, ch: C, mats: v, img: x, H, W });
  const { iy, ix } = f.i32s(['iy', 'ix']);
  const { co, row, a } = l;
  const n = F.a;
  const p = range(n * n).map(() => f.i32()); // the tile's input pixels (or `zero`)
  const d = range(n * n).map(() => f.v128());
  const t = range(n * n).map(() => f.v128());
  const consts = new Constants(f, [F.BT]);
  const k = new WasmCode();
  tilePrologue(k, l, consts);
  const perTile = () => tilePixels(k, l, { m: F.m, size: n, pt, pl, zero, iy, ix }, p);
  tileLoops(k, l, perTile, () => {
    for (let q = 0; q < n * n; q++) k.get(p[q]!).get(co).add().vLoad().set(d[q]!);
    // Bᵀ d B, each V[k] stored as it comes: V[k] at row + co + k·vkB
    k.get(row).get(co).add().set(a);
    transform2d(k, F.BT, d, t, consts, (i, j) => {
      k.set(d[i * n + j]!); // d is free once t holds Bᵀ d
      k.get(a)
        .get(d[i * n + j]!)
        .vStore();
      if (i * n + j < n * n - 1) k.get(a).get(vkB).add().set(a);
    });
  });
  return f.fn(`wino${F.suffix}_in`, k);
}

/** `wino{s}_out`: the output transform. */
function outputTransform(F: WinogradForm): WasmFunction {
  const f = new Frame(9);
  const { m, y, Ho, Wo, O, TH, TW, nS, mkB } = indices(
    ['m', 'y', 'Ho', 'Wo', 'O', 'TH', 'TW', 'nS', 'mkB'],
    0,
  );
  const l = tileLoop(f, { nS, TH, TW, ch: O, mats: m, img: y, H: Ho, W: Wo });
  const { ya, rows, cols } = f.i32s(['ya', 'rows', 'cols']);
  const { ty, tx, co, chB: OB, row, a } = l;
  const n = F.a;
  const mv = range(n * n).map(() => f.v128());
  const t = range(F.m * n).map(() => f.v128());
  const yv = range(F.m * F.m).map(() => f.v128());
  const consts = new Constants(f, [F.AT]);
  const k = new WasmCode();
  tilePrologue(k, l, consts);
  const perTile = () => {
    // the tile's first pixel; how many of its rows and columns are inside the output
    k.get(y).get(ty).i32(F.m).mul().get(Wo).mul().get(tx).i32(F.m).mul().add().get(OB).mul().add();
    k.set(ya);
    k.get(Ho).get(ty).i32(F.m).mul().sub().set(rows);
    k.get(Wo).get(tx).i32(F.m).mul().sub().set(cols);
  };
  tileLoops(k, l, perTile, () => {
    k.get(row).get(co).add().set(a);
    for (let q = 0; q < n * n; q++) {
      k.get(a).vLoad().set(mv[q]!);
      if (q < n * n - 1) k.get(a).get(mkB).add().set(a);
    }
    transform2d(k, F.AT, mv, t, consts, (i, j) => k.set(yv[i * F.m + j]!));
    // row i, column j of the tile when i < rows and j < cols (the first always is)
    for (let i = 0; i < F.m; i++) {
      if (i > 0) k.get(rows).i32(i).gtS().if();
      k.get(ya).get(co).add();
      if (i > 0) k.get(Wo).get(OB).mul().i32(i).mul().add();
      k.set(a);
      for (let j = 0; j < F.m; j++) {
        if (j > 0) k.get(cols).i32(j).gtS().if();
        k.get(a);
        if (j > 0) k.get(OB).i32(j).mul().add();
        k.get(yv[i * F.m + j]!).vStore();
        if (j > 0) k.end();
      }
      if (i > 0) k.end();
    }
  });
  return f.fn(`wino${F.suffix}_out`, k);
}

/** `wino{s}_dy`: the output gradient's transform (the transpose of {@link outputTransform}). */
function outputGradTransform(F: WinogradForm): WasmFunction {
  const f = new Frame(10);
  const { dy, mg, zero, Ho, Wo, O, TH, TW, nS, mkB } = indices(
    ['dy', 'mg', 'zero', 'Ho', 'Wo', 'O', 'TH', 'TW', 'nS', 'mkB'],
    0,
  );
  const l = tileLoop(f, { nS, TH, TW, ch: O, mats: mg, img: dy, H: Ho, W: Wo });
  const { oy, ox } = f.i32s(['oy', 'ox']);
  const { co, row, a } = l;
  const n = F.a;
  const p = range(F.m * F.m).map(() => f.i32()); // the tile's pixels of dy (or `zero`)
  const dv = range(F.m * F.m).map(() => f.v128());
  const t = range(n * F.m).map(() => f.v128());
  const out = f.v128();
  const A = transpose(F.AT); // a x m
  const consts = new Constants(f, [A]);
  const k = new WasmCode();
  tilePrologue(k, l, consts);
  const perTile = () => tilePixels(k, l, { m: F.m, size: F.m, zero, iy: oy, ix: ox }, p);
  tileLoops(k, l, perTile, () => {
    for (let q = 0; q < F.m * F.m; q++) k.get(p[q]!).get(co).add().vLoad().set(dv[q]!);
    // A dy Aᵀ, each dM[k] stored as it comes: at row + co + k·mkB
    k.get(row).get(co).add().set(a);
    transform2d(k, A, dv, t, consts, (i, j) => {
      k.set(out).get(a).get(out).vStore();
      if (i * n + j < n * n - 1) k.get(a).get(mkB).add().set(a);
    });
  });
  return f.fn(`wino${F.suffix}_dy`, k);
}

/** `wino{s}_wg`: the kernel gradient from the transformed one (the transpose of {@link kernelTransform}). */
function kernelGradTransform(F: WinogradForm): WasmFunction {
  const f = new Frame(5);
  const { ug, dw, C, O, uB } = indices(['ug', 'dw', 'C', 'O', 'uB'], 0);
  const { c, co, OB, kB, a } = f.i32s(['c', 'co', 'OB', 'kB', 'a']);
  const n = F.a;
  const uv = range(n * n).map(() => f.v128());
  const t = range(3 * n).map(() => f.v128());
  const out = f.v128();
  const GT = transpose(F.G); // 3 x a
  const consts = new Constants(f, [GT]);
  const k = new WasmCode();
  k.get(C).eqz().get(O).eqz().add().if().br(1).end();
  consts.init(k);
  k.get(O).i32(4).mul().set(OB);
  k.get(C).get(OB).mul().set(kB);
  k.i32(0).set(c).loop();
  k.i32(0).set(co).loop();
  k.get(ug).get(c).get(OB).mul().add().get(co).add().set(a);
  for (let q = 0; q < n * n; q++) {
    k.get(a).vLoad().set(uv[q]!);
    if (q < n * n - 1) k.get(a).get(uB).add().set(a);
  }
  // Gᵀ dU G into dw[3i + j] at dw + (3i + j)·kB + c·OB + co
  k.get(dw).get(c).get(OB).mul().add().get(co).add().set(a);
  transform2d(k, GT, uv, t, consts, (i, j) => {
    k.set(out).get(a).get(out).vStore();
    if (3 * i + j < 8) k.get(a).get(kB).add().set(a);
  });
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(c).i32(1).add().tee(c).get(C).ltU().brIf(0).end();
  return f.fn(`wino${F.suffix}_wg`, k);
}

/**
 * Bytes from one of a form's `a²` matrices of `floats` floats to the next: a whole and odd number
 * of 64-byte cache lines (so that up to 64 matrices start in 64 different sets), or `4·floats`
 * where `padded` is false. With the padding, the kernel transform of a per-sample forward at
 * batch 32 took 0.3-0.7x its time at 28x28x64 and 14x14x128 in a one-off instrumented timing, and
 * the whole forward ran 1.08-1.25x faster (`bench:winograd`).
 */
export function winogradStride(floats: number, padded = true): number {
  if (!padded) return floats * 4;
  const lines = Math.ceil(floats / 16);
  return (lines % 2 === 0 ? lines + 1 : lines) * 64;
}

/** The transforms of both forms, for the conv kernels' module. */
export function winogradFunctions(): WasmFunction[] {
  return WINOGRAD_FORMS.flatMap((F) => [
    kernelTransform(F),
    inputTransform(F),
    outputTransform(F),
    outputGradTransform(F),
    kernelGradTransform(F),
  ]);
}
