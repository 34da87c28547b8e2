/**
 * WebAssembly SIMD transforms of a Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016), written with {@link wasmModule}'s emitter
 * and bound with the conv kernels to tfjs-backend-wasm's heap (conv-wasm.ts runs them). A 3x3
 * stride-1 conv gives each 2x2 block of output pixels (a tile) from the 4x4 block of input
 * pixels under it in 16 products per input and output channel instead of 36:
 *
 *   `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`
 *
 * with `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`,
 * `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]` and `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
 * Summed over the input channels, the 16 elementwise products become 16 matrix products
 * `M[k] = V[k] @ U[k]` (`V[k]` `[tiles, C]`, `U[k]` `[C, O]`), which the forward conv kernel
 * runs as 1x1 convs; these three functions are the transforms around them, 4 channels per lane
 * group (channels are innermost in NHWC and HWIO). Adds, subtracts and halvings only: exact up to
 * float32 rounding, which differs from the direct conv's (tests bound the difference).
 *
 * - `wino_w(g, u, C, O)`: `U[k][c, o] = (G g[:, :, c, o] Gᵀ)[k]` for an HWIO `g [3, 3, C, O]`,
 *   each `U[k]` (`C·O` floats apart) written as the forward kernel reads a kernel: blocks of 16
 *   output channels (fewer in the last), block `o0` at `C·o0` floats with rows `min(16, O - o0)`
 *   floats long; O % 4 == 0.
 * - `wino_in(x, v, zero, H, W, C, TH, TW, pt, pl, nS, vkB)`: for `nS` samples `x [H, W, C]`
 *   one after another, tile `(ty, tx)` of a `TH x TW` grid reads input rows `2·ty - pt ..
 *   2·ty - pt + 3` and columns likewise (zeros outside: `zero` points at >= C zeros) and writes
 *   row `(s·TH + ty)·TW + tx` of each `V[k]` (`[rows, C]`, the 16 matrices `vkB` bytes apart).
 * - `wino_out(m, y, Ho, Wo, O, TH, TW, nS, mkB)`: the inverse for the outputs: row r of the 16
 *   `M[k]` (`[rows, O]`, `mkB` bytes apart) to the tile's 2x2 pixels of `y [Ho, Wo, O]` per
 *   sample (the pixels past Ho or Wo of the last tile row or column are not written).
 */
import { Frame, indices, WasmCode, type WasmFunction } from './wasm-emit.js';

const range = (n: number): number[] => [...Array(n).keys()];

/** `wino_w`: the kernel transform. */
function kernelTransform(): WasmFunction {
  const f = new Frame(4);
  const { g, u, C, O } = indices(['g', 'u', 'C', 'O'], 0);
  const { c, co, OB, tapB, kB, base, a, o0B } = f.i32s([
    'c',
    'co',
    'OB',
    'tapB',
    'kB',
    'base',
    'a',
    'o0B',
  ]);
  const gv = range(9).map(() => f.v128());
  const r = range(12).map(() => f.v128()); // (G g)[i][j], i < 4, j < 3
  const half = f.v128();
  const k = new WasmCode();
  k.get(C).eqz().get(O).eqz().add().if().br(1).end();
  k.vSplatConst(0.5).set(half);
  k.get(O).i32(4).mul().set(OB);
  k.get(C).get(OB).mul().tee(tapB).set(kB); // one tap of g, and one matrix of u, is C·O floats
  k.i32(0).set(c).loop();
  k.get(g).get(c).get(OB).mul().add().set(base);
  k.i32(0).set(co).loop();
  // the nine taps of 4 output channels
  k.get(base).get(co).add().set(a);
  for (let t = 0; t < 9; t++) {
    k.get(a).vLoad().set(gv[t]!);
    if (t < 8) k.get(a).get(tapB).add().set(a);
  }
  // G g: along the kernel rows, for each kernel column j
  const sum3 = (p: number, q: number, s: number, minus: boolean) => {
    k.get(p).get(q);
    if (minus) k.f32x4Sub();
    else k.f32x4Add();
    k.get(s).f32x4Add().get(half).f32x4Mul();
  };
  for (let j = 0; j < 3; j++) {
    const [g0, g1, g2] = [gv[j]!, gv[3 + j]!, gv[6 + j]!];
    k.get(g0).set(r[j]!);
    sum3(g0, g1, g2, false);
    k.set(r[3 + j]!);
    sum3(g0, g1, g2, true);
    k.set(r[6 + j]!);
    k.get(g2).set(r[9 + j]!);
  }
  // (G g) Gᵀ: along the kernel columns, into u[4i + j] at u + (4i + j)·kB, in blocks of 16
  // output channels: the block from o0 at C·o0 floats, its rows nb = min(16, O - o0) floats long
  k.get(co).i32(-64).and().set(o0B); // 4·o0
  k.get(u).get(C).get(o0B).mul().add();
  k.get(c).i32(64).get(OB).get(o0B).sub().tee(a).i32(64).get(a).ltU().select().mul().add();
  k.get(co).get(o0B).sub().add().set(a);
  for (let i = 0; i < 4; i++) {
    const [q0, q1, q2] = [r[3 * i]!, r[3 * i + 1]!, r[3 * i + 2]!];
    const store = (last: boolean) => {
      k.vStore();
      if (!last) k.get(a).get(kB).add().set(a);
    };
    k.get(a).get(q0);
    store(false);
    k.get(a);
    sum3(q0, q1, q2, false);
    store(false);
    k.get(a);
    sum3(q0, q1, q2, true);
    store(false);
    k.get(a).get(q2);
    store(i === 3);
  }
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(c).i32(1).add().tee(c).get(C).ltU().brIf(0).end();
  return f.fn('wino_w', k);
}

/** `wino_in`: the input transform. */
function inputTransform(): WasmFunction {
  const f = new Frame(12);
  const { x, v, zero, H, W, C, TH, TW, pt, pl, nS, vkB } = indices(
    ['x', 'v', 'zero', 'H', 'W', 'C', 'TH', 'TW', 'pt', 'pl', 'nS', 'vkB'],
    0,
  );
  const { s, ty, tx, co, CB, iy, ix, vr, a } = f.i32s([
    's',
    'ty',
    'tx',
    'co',
    'CB',
    'iy',
    'ix',
    'vr',
    'a',
  ]);
  const p = range(16).map(() => f.i32()); // the 16 input pixels of the tile (or `zero`)
  const d = range(16).map(() => f.v128());
  const t = range(16).map(() => f.v128());
  const k = new WasmCode();
  k.get(nS).eqz().get(C).eqz().add().get(TH).eqz().add().get(TW).eqz().add().if().br(1).end();
  k.get(C).i32(4).mul().set(CB);
  k.get(v).set(vr);
  k.i32(0).set(s).loop();
  k.i32(0).set(ty).loop();
  k.i32(0).set(tx).loop();
  for (let i = 0; i < 4; i++) {
    k.get(ty).i32(2).mul().get(pt).sub().i32(i).add().set(iy);
    for (let j = 0; j < 4; j++) {
      k.get(tx).i32(2).mul().get(pl).sub().i32(j).add().set(ix);
      k.get(x).get(iy).get(W).mul().get(ix).add().get(CB).mul().add();
      k.get(zero);
      k.get(iy).get(H).ltU().get(ix).get(W).ltU().and();
      k.select().set(p[4 * i + j]!);
    }
  }
  k.i32(0).set(co).loop();
  for (let q = 0; q < 16; q++) k.get(p[q]!).get(co).add().vLoad().set(d[q]!);
  // Bᵀ d: t[0] = d0 - d2, t[1] = d1 + d2, t[2] = d2 - d1, t[3] = d1 - d3 (rows), per column
  const bt = (src: number[], dst: number[], at: (i: number, j: number) => number) => {
    for (let j = 0; j < 4; j++) {
      const e = (i: number) => src[at(i, j)]!;
      k.get(e(0)).get(e(2)).f32x4Sub().set(dst[at(0, j)]!);
      k.get(e(1)).get(e(2)).f32x4Add().set(dst[at(1, j)]!);
      k.get(e(2)).get(e(1)).f32x4Sub().set(dst[at(2, j)]!);
      k.get(e(1)).get(e(3)).f32x4Sub().set(dst[at(3, j)]!);
    }
  };
  bt(d, t, (i, j) => 4 * i + j);
  // (Bᵀ d) B: the same along the columns, into d
  bt(t, d, (i, j) => 4 * j + i);
  k.get(vr).get(co).add().set(a);
  for (let q = 0; q < 16; q++) {
    k.get(a).get(d[q]!).vStore();
    if (q < 15) k.get(a).get(vkB).add().set(a);
  }
  k.get(co).i32(16).add().tee(co).get(CB).ltU().brIf(0).end();
  k.get(vr).get(CB).add().set(vr);
  k.get(tx).i32(1).add().tee(tx).get(TW).ltU().brIf(0).end();
  k.get(ty).i32(1).add().tee(ty).get(TH).ltU().brIf(0).end();
  k.get(x).get(H).get(W).mul().get(CB).mul().add().set(x);
  k.get(s).i32(1).add().tee(s).get(nS).ltU().brIf(0).end();
  return f.fn('wino_in', k);
}

/** `wino_out`: the output transform. */
function outputTransform(): WasmFunction {
  const f = new Frame(9);
  const { m, y, Ho, Wo, O, TH, TW, nS, mkB } = indices(
    ['m', 'y', 'Ho', 'Wo', 'O', 'TH', 'TW', 'nS', 'mkB'],
    0,
  );
  const { s, ty, tx, co, OB, mr, ya, a, right, down } = f.i32s([
    's',
    'ty',
    'tx',
    'co',
    'OB',
    'mr',
    'ya',
    'a',
    'right',
    'down',
  ]);
  const mv = range(16).map(() => f.v128());
  const sv = range(8).map(() => f.v128()); // (Aᵀ M)[i][j], i < 2, j < 4
  const yv = range(4).map(() => f.v128());
  const k = new WasmCode();
  k.get(nS).eqz().get(O).eqz().add().get(TH).eqz().add().get(TW).eqz().add().if().br(1).end();
  k.get(O).i32(4).mul().set(OB);
  k.get(m).set(mr);
  k.i32(0).set(s).loop();
  k.i32(0).set(ty).loop();
  k.i32(0).set(tx).loop();
  // the tile's first pixel; whether its right column and lower row are inside the output
  k.get(y).get(ty).i32(2).mul().get(Wo).mul().get(tx).i32(2).mul().add().get(OB).mul().add();
  k.set(ya);
  k.get(tx).i32(2).mul().i32(1).add().get(Wo).ltS().set(right);
  k.get(ty).i32(2).mul().i32(1).add().get(Ho).ltS().set(down);
  k.i32(0).set(co).loop();
  k.get(mr).get(co).add().set(a);
  for (let q = 0; q < 16; q++) {
    k.get(a).vLoad().set(mv[q]!);
    if (q < 15) k.get(a).get(mkB).add().set(a);
  }
  // Aᵀ M: row 0 = m0 + m1 + m2, row 1 = m1 - m2 - m3, per column
  for (let j = 0; j < 4; j++) {
    const e = (i: number) => mv[4 * i + j]!;
    k.get(e(0)).get(e(1)).f32x4Add().get(e(2)).f32x4Add().set(sv[j]!);
    k.get(e(1))
      .get(e(2))
      .f32x4Sub()
      .get(e(3))
      .f32x4Sub()
      .set(sv[4 + j]!);
  }
  // (Aᵀ M) A: the same along the columns
  for (let i = 0; i < 2; i++) {
    const e = (j: number) => sv[4 * i + j]!;
    k.get(e(0))
      .get(e(1))
      .f32x4Add()
      .get(e(2))
      .f32x4Add()
      .set(yv[2 * i]!);
    k.get(e(1))
      .get(e(2))
      .f32x4Sub()
      .get(e(3))
      .f32x4Sub()
      .set(yv[2 * i + 1]!);
  }
  k.get(ya).get(co).add().set(a);
  k.get(a).get(yv[0]!).vStore();
  k.get(right).if().get(a).get(OB).add().get(yv[1]!).vStore().end();
  k.get(down).if();
  k.get(a).get(Wo).get(OB).mul().add().set(a);
  k.get(a).get(yv[2]!).vStore();
  k.get(right).if().get(a).get(OB).add().get(yv[3]!).vStore().end();
  k.end();
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(mr).get(OB).add().set(mr);
  k.get(tx).i32(1).add().tee(tx).get(TW).ltU().brIf(0).end();
  k.get(ty).i32(1).add().tee(ty).get(TH).ltU().brIf(0).end();
  k.get(y).get(Ho).get(Wo).mul().get(OB).mul().add().set(y);
  k.get(s).i32(1).add().tee(s).get(nS).ltU().brIf(0).end();
  return f.fn('wino_out', k);
}

/** `wino_dy`: the output gradient's transform (the transpose of {@link outputTransform}). */
function outputGradTransform(): WasmFunction {
  const f = new Frame(10);
  const { dy, mg, zero, Ho, Wo, O, TH, TW, nS, mkB } = indices(
    ['dy', 'mg', 'zero', 'Ho', 'Wo', 'O', 'TH', 'TW', 'nS', 'mkB'],
    0,
  );
  const { s, ty, tx, co, OB, mr, a, oy, ox } = f.i32s([
    's',
    'ty',
    'tx',
    'co',
    'OB',
    'mr',
    'a',
    'oy',
    'ox',
  ]);
  const p = range(4).map(() => f.i32()); // the tile's 2x2 pixels of dy (or `zero`)
  const dv = range(4).map(() => f.v128());
  const r = range(8).map(() => f.v128()); // (A dy)[i][j], i < 4, j < 2
  const mv = range(4).map(() => f.v128()); // one row of A dy Aᵀ
  const k = new WasmCode();
  k.get(nS).eqz().get(O).eqz().add().get(TH).eqz().add().get(TW).eqz().add().if().br(1).end();
  k.get(O).i32(4).mul().set(OB);
  k.get(mg).set(mr);
  k.i32(0).set(s).loop();
  k.i32(0).set(ty).loop();
  k.i32(0).set(tx).loop();
  for (let i = 0; i < 2; i++) {
    k.get(ty).i32(2).mul().i32(i).add().set(oy);
    for (let j = 0; j < 2; j++) {
      k.get(tx).i32(2).mul().i32(j).add().set(ox);
      k.get(dy).get(oy).get(Wo).mul().get(ox).add().get(OB).mul().add();
      k.get(zero);
      k.get(oy).get(Ho).ltU().get(ox).get(Wo).ltU().and();
      k.select().set(p[2 * i + j]!);
    }
  }
  k.i32(0).set(co).loop();
  for (let q = 0; q < 4; q++) k.get(p[q]!).get(co).add().vLoad().set(dv[q]!);
  // A·(a, b) = (a, a + b, a - b, -b) with A = [[1, 0], [1, 1], [1, -1], [0, -1]]
  const a4 = (x0: number, x1: number, out: (t: number) => void) => {
    k.get(x0);
    out(0);
    k.get(x0).get(x1).f32x4Add();
    out(1);
    k.get(x0).get(x1).f32x4Sub();
    out(2);
    k.get(x1).f32x4Neg();
    out(3);
  };
  for (let j = 0; j < 2; j++) a4(dv[j]!, dv[2 + j]!, (i) => k.set(r[2 * i + j]!));
  k.get(mr).get(co).add().set(a);
  for (let i = 0; i < 4; i++) {
    a4(r[2 * i]!, r[2 * i + 1]!, (j) => k.set(mv[j]!));
    for (let j = 0; j < 4; j++) {
      k.get(a).get(mv[j]!).vStore();
      if (4 * i + j < 15) k.get(a).get(mkB).add().set(a);
    }
  }
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(mr).get(OB).add().set(mr);
  k.get(tx).i32(1).add().tee(tx).get(TW).ltU().brIf(0).end();
  k.get(ty).i32(1).add().tee(ty).get(TH).ltU().brIf(0).end();
  k.get(dy).get(Ho).get(Wo).mul().get(OB).mul().add().set(dy);
  k.get(s).i32(1).add().tee(s).get(nS).ltU().brIf(0).end();
  return f.fn('wino_dy', k);
}

/** `wino_wg`: the kernel gradient from the transformed one (the transpose of {@link kernelTransform}). */
function kernelGradTransform(): WasmFunction {
  const f = new Frame(4);
  const { ug, dw, C, O } = indices(['ug', 'dw', 'C', 'O'], 0);
  const { c, co, OB, kB, a } = f.i32s(['c', 'co', 'OB', 'kB', 'a']);
  const uv = range(16).map(() => f.v128());
  const sv = range(12).map(() => f.v128()); // (Gᵀ u)[i][j], i < 3, j < 4
  const out = range(3).map(() => f.v128());
  const half = f.v128();
  const k = new WasmCode();
  k.get(C).eqz().get(O).eqz().add().if().br(1).end();
  k.vSplatConst(0.5).set(half);
  k.get(O).i32(4).mul().set(OB);
  k.get(C).get(OB).mul().set(kB);
  // Gᵀ·(a, b, c, d) = (a + (b + c)/2, (b - c)/2, (b + c)/2 + d)
  const gt = (x: number[], set: (t: number) => void) => {
    k.get(x[1]!).get(x[2]!).f32x4Add().get(half).f32x4Mul().set(out[0]!);
    k.get(x[0]!).get(out[0]!).f32x4Add();
    set(0);
    k.get(x[1]!).get(x[2]!).f32x4Sub().get(half).f32x4Mul();
    set(1);
    k.get(out[0]!).get(x[3]!).f32x4Add();
    set(2);
  };
  k.i32(0).set(c).loop();
  k.i32(0).set(co).loop();
  k.get(ug).get(c).get(OB).mul().add().get(co).add().set(a);
  for (let q = 0; q < 16; q++) {
    k.get(a).vLoad().set(uv[q]!);
    if (q < 15) k.get(a).get(kB).add().set(a);
  }
  for (let j = 0; j < 4; j++)
    gt(
      [0, 1, 2, 3].map((i) => uv[4 * i + j]!),
      (i) => k.set(sv[4 * i + j]!),
    );
  // dw[3i + j] at dw + (3i + j)·kB + c·OB + co
  k.get(dw).get(c).get(OB).mul().add().get(co).add().set(a);
  for (let i = 0; i < 3; i++)
    gt(
      [0, 1, 2, 3].map((j) => sv[4 * i + j]!),
      (j) => {
        k.set(out[1]!).get(a).get(out[1]!).vStore();
        if (3 * i + j < 8) k.get(a).get(kB).add().set(a);
      },
    );
  k.get(co).i32(16).add().tee(co).get(OB).ltU().brIf(0).end();
  k.get(c).i32(1).add().tee(c).get(C).ltU().brIf(0).end();
  return f.fn('wino_wg', k);
}

/** The five transforms, for the conv kernels' module. */
export function winogradFunctions(): WasmFunction[] {
  return [
    kernelTransform(),
    inputTransform(),
    outputTransform(),
    outputGradTransform(),
    kernelGradTransform(),
  ];
}
