/**
 * WebAssembly SIMD kernels of KW's tap mixing (mix-wasm.ts runs them; bound with the conv
 * kernels to tfjs-backend-wasm's heap by conv-wasm.ts). One sample per call, NHWC, byte
 * addresses; `a` is the sample's attention `[kh·kw·G_out·G_in, n]` (cell `(t·G_out + g)·G_in + q`
 * for tap `t = i·kw + j`), `cin = C / G_in` input channels per cell, a multiple of 16. The input
 * pixel of output pixel `(oy, ox)` and tap `(i, j)` is `(oy·sh - pt + i, ox·sw - pl + j)`; taps
 * outside the image are skipped (zero padding). `tab` points at scratch for `2·kh·kw·G_in` i32:
 * per output pixel, the kernels first list its input rows inside the image (each tap's row, per
 * input group) with their attention offsets, then run over that list.
 *
 * - `mix_fwd(x, a, z, tab, H, W, C, Ho, Wo, n, kh, kw, sh, sw, pt, pl, gOut, gIn)`: the row
 *   `z[p, g, k, :] = sum over the listed rows (t, q) of a[(t, g, q), k] · x[pixel(p, t), q·cin:]`
 *   (`z [Ho·Wo, G_out, n, cin]`, written whole), 16 or 32 channels at a time in registers.
 * - `mix_bwd(x, a, dz, dx, da, tab, ...same)`: its two gradients, added to what `dx [H·W, C]` and
 *   `da [kh·kw·G_out·G_in, n]` hold (the caller zeroes them): `dx[pixel(p, t), q·cin:] +=
 *   sum over (g, k) of a[(t, g, q), k] · dz[p, g, k, :]` (32 or 16 channels at a time in registers) and
 *   `da[(t, g, q), k] += dz[p, g, k, :] · x[pixel(p, t), q·cin:]` (four 4-lane partial sums,
 *   added across lanes in float32).
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

type Params = Record<(typeof GEOMETRY)[number] | 'x' | 'a' | 'tab', number>;

/** Bytes of one table entry: the input row's address, then its cell's attention offset. */
const ENTRY = 8;

const LOCALS = [
  'p',
  'P',
  'by',
  'bx',
  'g',
  'kk',
  'gk',
  'zr',
  'i',
  'j',
  'iy',
  'xrow',
  'q',
  'ab',
  'e',
  'eEnd',
  'c',
  'cinB',
  'zp',
] as const;

/** Emits a loop around the code `body` emits, with the kernel's parameters `at` and locals `L`. */
type Loop = (
  k: WasmCode,
  at: Params,
  L: Record<(typeof LOCALS)[number], number>,
  body: () => void,
) => void;

/**
 * The code both kernels start with: `cinB`, and a loop over output pixels whose body first lists
 * the pixel's input rows in `tab` (`eEnd` past the last entry), then runs `body`.
 */
const perPixel: Loop = (k, at, L, body) => {
  const { x, H, W, C, Ho, Wo, n, kh, kw, sh, sw, pt, pl, gOut, gIn, tab } = at;
  k.get(Ho).get(Wo).mul().set(L.P);
  k.get(L.P).eqz().if().br(1).end();
  k.get(C).get(gIn).divU().i32(4).mul().set(L.cinB);
  k.i32(0).set(L.p).loop();
  k.get(L.p).get(Wo).divU().set(L.by);
  k.get(L.p).get(L.by).get(Wo).mul().sub().get(sw).mul().get(pl).sub().set(L.bx);
  k.get(L.by).get(sh).mul().get(pt).sub().set(L.by);
  // the table: (row address, attention offset of cell (t, 0, q)) per tap inside and input group
  k.get(tab).set(L.eEnd);
  k.i32(0).set(L.i).loop();
  k.get(L.by).get(L.i).add().tee(L.iy).get(H).ltU().if();
  k.i32(0).set(L.j).loop();
  k.get(L.bx).get(L.j).add().tee(L.xrow).get(W).ltU().if();
  k.get(x).get(L.iy).get(W).mul().get(L.xrow).add().get(C).mul().i32(4).mul().add().set(L.xrow);
  k.get(L.i).get(kw).mul().get(L.j).add().get(gOut).mul().get(gIn).mul().get(n).mul();
  k.i32(4).mul().set(L.ab);
  k.i32(0).set(L.q).loop();
  k.get(L.eEnd).get(L.xrow).get(L.q).get(L.cinB).mul().add().i32Store();
  k.get(L.eEnd).get(L.ab).get(L.q).get(n).mul().i32(4).mul().add().i32Store(4);
  k.get(L.eEnd).i32(ENTRY).add().set(L.eEnd);
  k.get(L.q).i32(1).add().tee(L.q).get(gIn).ltU().brIf(0).end();
  k.end();
  k.get(L.j).i32(1).add().tee(L.j).get(kw).ltU().brIf(0).end();
  k.end();
  k.get(L.i).i32(1).add().tee(L.i).get(kh).ltU().brIf(0).end();
  body();
  k.get(L.p).i32(1).add().tee(L.p).get(L.P).ltU().brIf(0).end();
};

/** A loop over (g, k), `gk` = the attention offset of column k in group g (bytes). */
const perColumn: Loop = (k, at, L, body) => {
  k.i32(0).set(L.g).loop();
  k.get(L.g).get(at.gIn).mul().get(at.n).mul().i32(4).mul().set(L.gk);
  k.i32(0).set(L.kk).loop();
  body();
  k.get(L.gk).i32(4).add().set(L.gk);
  k.get(L.kk).i32(1).add().tee(L.kk).get(at.n).ltU().brIf(0).end();
  k.get(L.g).i32(1).add().tee(L.g).get(at.gOut).ltU().brIf(0).end();
};

/** A loop over the table's entries (none: skipped); `e` points at the entry. */
const perEntry: Loop = (k, at, L, body) => {
  k.get(at.tab).set(L.e).block().loop();
  k.get(L.e).get(L.eEnd).ltU().eqz().brIf(1);
  body();
  k.get(L.e).i32(ENTRY).add().set(L.e).br(0).end().end();
};

/**
 * A row of `cin` channels (`cinB` bytes, a multiple of 64) in chunks: `chunk(8)` per 32 channels
 * at `c`, then `chunk(4)` for the last 16 if any.
 */
function inChunks(
  k: WasmCode,
  L: Record<(typeof LOCALS)[number], number>,
  chunk: (lanes: number) => void,
): void {
  k.i32(0).set(L.c).block().loop();
  k.get(L.cinB).get(L.c).i32(128).add().ltU().brIf(1);
  chunk(8);
  k.get(L.c).i32(128).add().set(L.c).br(0).end().end();
  k.get(L.c).get(L.cinB).ltU().if();
  chunk(4);
  k.end();
}

function mixForward(madd: Madd): WasmFunction {
  const f = new Frame(4 + GEOMETRY.length);
  const at = indices(['x', 'a', 'z', 'tab', ...GEOMETRY], 0);
  const L = f.i32s(LOCALS);
  const s = f.v128();
  const xv = f.v128();
  const acc = [0, 1, 2, 3, 4, 5, 6, 7].map(() => f.v128());
  const k = new WasmCode();
  k.get(at.z).set(L.zr);
  // `lanes` vectors of z's row at c, summed over the entries in registers
  const chunk = (lanes: number) => {
    for (let h = 0; h < lanes; h++) k.vZero().set(acc[h]!);
    perEntry(k, at, L, () => {
      k.get(at.a).get(L.e).i32Load(4).add().get(L.gk).add().vLoadSplat32().set(s);
      k.get(L.e).i32Load().get(L.c).add().set(L.zp);
      for (let h = 0; h < lanes; h++) {
        k.get(L.zp)
          .vLoad(16 * h)
          .set(xv);
        madd(k, acc[h]!, s, xv);
      }
    });
    for (let h = 0; h < lanes; h++)
      k.get(L.zr)
        .get(L.c)
        .add()
        .get(acc[h]!)
        .vStore(16 * h);
  };
  perPixel(k, at, L, () => {
    perColumn(k, at, L, () => {
      inChunks(k, L, chunk);
      k.get(L.zr).get(L.cinB).add().set(L.zr);
    });
  });
  return f.fn('mix_fwd', k);
}

function mixBackward(madd: Madd): WasmFunction {
  const f = new Frame(6 + GEOMETRY.length);
  const at = indices(['x', 'a', 'dz', 'dx', 'da', 'tab', ...GEOMETRY], 0);
  const L = f.i32s(LOCALS);
  const { dxp, dzr } = f.i32s(['dxp', 'dzr']);
  const s = f.v128();
  const v = f.v128();
  const acc = [0, 1, 2, 3, 4, 5, 6, 7].map(() => f.v128());
  const k = new WasmCode();
  k.get(at.dz).set(L.zr);
  perPixel(k, at, L, () => {
    // dx: each listed row, 32 or 16 channels at a time, gathers sum_(g,k) a · dz in registers
    const chunk = (lanes: number) => {
      for (let h = 0; h < lanes; h++)
        k.get(dxp)
          .get(L.c)
          .add()
          .vLoad(16 * h)
          .set(acc[h]!);
      k.get(L.zr).get(L.c).add().set(dzr);
      k.get(at.a).get(L.e).i32Load(4).add().set(L.ab);
      perColumn(k, at, L, () => {
        k.get(L.ab).get(L.gk).add().vLoadSplat32().set(s);
        for (let h = 0; h < lanes; h++) {
          k.get(dzr)
            .vLoad(16 * h)
            .set(v);
          madd(k, acc[h]!, s, v);
        }
        k.get(dzr).get(L.cinB).add().set(dzr);
      });
      for (let h = 0; h < lanes; h++)
        k.get(dxp)
          .get(L.c)
          .add()
          .get(acc[h]!)
          .vStore(16 * h);
    };
    perEntry(k, at, L, () => {
      k.get(L.e).i32Load().get(at.x).sub().get(at.dx).add().set(dxp);
      inChunks(k, L, chunk);
    });
    // da: one dot product of a dz row with a listed row per (g, k) and entry
    k.get(L.zr).set(dzr);
    perColumn(k, at, L, () => {
      perEntry(k, at, L, () => {
        for (let h = 0; h < 4; h++) k.vZero().set(acc[h]!);
        k.get(L.e).i32Load().set(L.zp);
        k.i32(0).set(L.c).loop();
        for (let h = 0; h < 4; h++) {
          k.get(dzr)
            .get(L.c)
            .add()
            .vLoad(16 * h)
            .set(v);
          k.get(L.zp)
            .get(L.c)
            .add()
            .vLoad(16 * h)
            .set(s);
          madd(k, acc[h]!, v, s);
        }
        k.get(L.c).i32(64).add().tee(L.c).get(L.cinB).ltU().brIf(0).end();
        // da[entry's offset + gk] += the four partial sums, across lanes
        k.get(at.da).get(L.e).i32Load(4).add().get(L.gk).add().tee(L.zp);
        k.get(L.zp).f32Load();
        k.get(acc[0]!).get(acc[1]!).f32x4Add().get(acc[2]!).get(acc[3]!).f32x4Add().f32x4Add();
        k.set(v);
        for (let lane = 0; lane < 4; lane++) k.get(v).f32x4ExtractLane(lane).f32Add();
        k.f32Store();
      });
      k.get(dzr).get(L.cinB).add().set(dzr);
    });
    // past this pixel's G_out·n rows of dz: the next pixel's
    k.get(dzr).set(L.zr);
  });
  return f.fn('mix_bwd', k);
}

/** `mix_fwd` and `mix_bwd` (see the file's comment). */
export function tapMixFunctions(madd: Madd): WasmFunction[] {
  return [mixForward(madd), mixBackward(madd)];
}
