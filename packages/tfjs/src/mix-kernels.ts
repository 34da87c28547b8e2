/**
 * WebAssembly SIMD kernels of KW's tap mixing (mix-wasm.ts runs them; bound with the conv
 * kernels to tfjs-backend-wasm's heap by conv-wasm.ts). One sample per call, NHWC, byte
 * addresses; `a` is the sample's attention `[kh·kw·G_out·G_in, n]` (cell `(t·G_out + g)·G_in + q`
 * for tap `t = i·kw + j`), `cin = C / G_in` input channels per cell, a multiple of 16. The input
 * pixel of output pixel `(oy, ox)` and tap `(i, j)` is `(oy·sh - pt + i, ox·sw - pl + j)`; taps
 * outside the image are skipped (zero padding).
 *
 * - `mix_fwd(x, a, z, H, W, C, Ho, Wo, n, kh, kw, sh, sw, pt, pl, gOut, gIn)`: the row
 *   `z[p, g, k, :] = sum over taps t and input groups q of a[(t, g, q), k] · x[pixel(p, t), q·cin:]`
 *   (`z [Ho·Wo, G_out, n, cin]`, written whole).
 * - `mix_bwd(x, a, dz, dx, da, ...same)`: its two gradients, added to what `dx [H·W, C]` and
 *   `da [kh·kw·G_out·G_in, n]` hold (the caller zeroes them): `dx[pixel(p, t), q·cin:] +=
 *   a[(t, g, q), k] · dz[p, g, k, :]` and `da[(t, g, q), k] += dz[p, g, k, :] · x[pixel(p, t),
 *   q·cin:]` (four 4-lane partial sums per row, added across lanes in float32).
 */
import { Frame, indices, WasmCode, type WasmFunction } from './wasm-emit.js';

/** `q += a * b` on 4 lanes (conv-wasm.ts's, fused or not as the module is written). */
export type Madd = (k: WasmCode, q: number, a: number, b: number) => void;

const GEOMETRY = [
  'H',
  'W',
  'C',
  'Ho',
  'Wo',
  'n',
  'kh',
  'kw',
  'sh',
  'sw',
  'pt',
  'pl',
  'gOut',
  'gIn',
] as const;

/** Bytes of one unrolled step of the channel loop: 4 vectors of 4 lanes. */
const STEP = 64;

function tapMix(madd: Madd, grad: boolean): WasmFunction {
  const ptrs = grad ? (['x', 'a', 'dz', 'dx', 'da'] as const) : (['x', 'a', 'z'] as const);
  const f = new Frame(ptrs.length + GEOMETRY.length);
  const at = indices([...ptrs, ...GEOMETRY], 0) as Record<string, number>;
  const { x, a, H, W, C, Ho, Wo, n, kh, kw, sh, sw, pt, pl, gOut, gIn } = at as Record<
    (typeof GEOMETRY)[number] | 'x' | 'a',
    number
  >;
  const zIn = grad ? at.dz! : at.z!;
  const L = f.i32s([
    'p',
    'P',
    'by',
    'bx',
    'g',
    'kk',
    'zr',
    'i',
    'j',
    'iy',
    'ix',
    'xrow',
    'q',
    'ap',
    'xp',
    'zp',
    'end',
    'cinB',
    'dxp',
  ]);
  const s = f.v128();
  const v = [0, 1, 2, 3].map(() => f.v128());
  const xv = f.v128();
  const acc = [0, 1, 2, 3].map(() => f.v128());
  const k = new WasmCode();
  k.get(Ho).get(Wo).mul().set(L.P);
  k.get(L.P).eqz().if().br(1).end();
  k.get(C).get(gIn).divU().i32(4).mul().set(L.cinB);
  k.get(zIn).set(L.zr);
  k.i32(0).set(L.p).loop();
  // the first input row and column of output pixel p
  k.get(L.p).get(Wo).divU().set(L.by);
  k.get(L.p).get(L.by).get(Wo).mul().sub().get(sw).mul().get(pl).sub().set(L.bx);
  k.get(L.by).get(sh).mul().get(pt).sub().set(L.by);
  k.i32(0).set(L.g).loop();
  k.i32(0).set(L.kk).loop();
  if (!grad) {
    // this row of z starts at zero
    k.get(L.zr).set(L.zp).get(L.zr).get(L.cinB).add().set(L.end);
    k.loop();
    for (let h = 0; h < 4; h++)
      k.get(L.zp)
        .vZero()
        .vStore(16 * h);
    k.get(L.zp).i32(STEP).add().tee(L.zp).get(L.end).ltU().brIf(0).end();
  }
  k.i32(0).set(L.i).loop();
  k.get(L.by).get(L.i).add().tee(L.iy).get(H).ltU().if();
  k.i32(0).set(L.j).loop();
  k.get(L.bx).get(L.j).add().tee(L.ix).get(W).ltU().if();
  k.get(x).get(L.iy).get(W).mul().get(L.ix).add().get(C).mul().i32(4).mul().add().set(L.xrow);
  // the attention of cell (t, g, 0) and column kk
  k.get(L.i).get(kw).mul().get(L.j).add().get(gOut).mul().get(L.g).add().get(gIn).mul();
  k.get(n).mul().get(L.kk).add().i32(4).mul().set(L.ap);
  k.i32(0).set(L.q).loop();
  k.get(a).get(L.ap).add().vLoadSplat32().set(s);
  k.get(L.xrow).get(L.q).get(L.cinB).mul().add().set(L.xp);
  k.get(L.zr).set(L.zp).get(L.zr).get(L.cinB).add().set(L.end);
  if (grad) {
    // dx has x's layout
    k.get(L.xp).get(x).sub().get(at.dx!).add().set(L.dxp);
    for (const q of acc) k.vZero().set(q);
  }
  k.loop();
  for (let h = 0; h < 4; h++) {
    if (!grad) {
      k.get(L.zp)
        .vLoad(16 * h)
        .set(v[h]!);
      k.get(L.xp)
        .vLoad(16 * h)
        .set(xv);
      madd(k, v[h]!, s, xv);
      k.get(L.zp)
        .get(v[h]!)
        .vStore(16 * h);
    } else {
      // v = dz row; dx row += s · v; acc += v · x row
      k.get(L.zp)
        .vLoad(16 * h)
        .set(v[h]!);
      k.get(L.dxp)
        .vLoad(16 * h)
        .set(xv);
      madd(k, xv, s, v[h]!);
      k.get(L.dxp)
        .get(xv)
        .vStore(16 * h);
      k.get(L.xp)
        .vLoad(16 * h)
        .set(xv);
      madd(k, acc[h]!, v[h]!, xv);
    }
  }
  k.get(L.xp).i32(STEP).add().set(L.xp);
  if (grad) k.get(L.dxp).i32(STEP).add().set(L.dxp);
  k.get(L.zp).i32(STEP).add().tee(L.zp).get(L.end).ltU().brIf(0).end();
  if (grad) {
    // da[ap] += the four partial sums, across lanes
    k.get(at.da!).get(L.ap).add();
    k.get(at.da!).get(L.ap).add().f32Load();
    k.get(acc[0]!).get(acc[1]!).f32x4Add().get(acc[2]!).get(acc[3]!).f32x4Add().f32x4Add();
    k.set(xv);
    for (let lane = 0; lane < 4; lane++) k.get(xv).f32x4ExtractLane(lane).f32Add();
    k.f32Store();
  }
  k.get(L.ap).get(n).i32(4).mul().add().set(L.ap);
  k.get(L.q).i32(1).add().tee(L.q).get(gIn).ltU().brIf(0).end();
  k.end(); // column inside the image
  k.get(L.j).i32(1).add().tee(L.j).get(kw).ltU().brIf(0).end();
  k.end(); // row inside the image
  k.get(L.i).i32(1).add().tee(L.i).get(kh).ltU().brIf(0).end();
  k.get(L.zr).get(L.cinB).add().set(L.zr);
  k.get(L.kk).i32(1).add().tee(L.kk).get(n).ltU().brIf(0).end();
  k.get(L.g).i32(1).add().tee(L.g).get(gOut).ltU().brIf(0).end();
  k.get(L.p).i32(1).add().tee(L.p).get(L.P).ltU().brIf(0).end();
  return f.fn(grad ? 'mix_bwd' : 'mix_fwd', k);
}

/** `mix_fwd` and `mix_bwd` (see the file's comment). */
export function tapMixFunctions(madd: Madd): WasmFunction[] {
  return [tapMix(madd, false), tapMix(madd, true)];
}
