/**
 * The WebAssembly SIMD kernel of the fused Adam update (adam-wasm.ts runs it; bound with the conv
 * kernels to tfjs-backend-wasm's heap by conv-wasm.ts). Byte addresses.
 *
 * `adam(p, m, v, g, pOut, mOut, vOut, n4, s)`: for `n4` groups of 4 floats, the update tfjs's
 * `AdamOptimizer.applyGradients` makes with its float32 ops, in their order, each rounded to
 * float32 (no fused multiply-add):
 * `m' = m·b1 + g·c1`, `v' = v·b2 + (g·g)·c2`, `p' = ((m' / o1) / (sqrt(v' / o2) + eps))·nlr + p`,
 * with the 8 float32 scalars at `s`: `b1, c1, b2, c2, o1, o2, eps, nlr` (`c = 1 - b`,
 * `o = 1 - b^t`, `nlr = -lr`). The outputs may not overlap the inputs.
 */
import { Frame, indices, WasmCode, type WasmFunction } from './wasm-emit.js';

/** The scalars' order at `s`. */
export const ADAM_SCALARS = ['b1', 'c1', 'b2', 'c2', 'o1', 'o2', 'eps', 'nlr'] as const;

export function adamFunction(): WasmFunction {
  const f = new Frame(9);
  const { p, m, v, g, pOut, mOut, vOut, n4, s } = indices(
    ['p', 'm', 'v', 'g', 'pOut', 'mOut', 'vOut', 'n4', 's'],
    0,
  );
  const { o, end } = f.i32s(['o', 'end']);
  const c = Object.fromEntries(ADAM_SCALARS.map((name) => [name, f.v128()])) as Record<
    (typeof ADAM_SCALARS)[number],
    number
  >;
  const { b1, c1, b2, c2, o1, o2, eps, nlr } = c;
  const gv = f.v128();
  const mv = f.v128();
  const vv = f.v128();
  const k = new WasmCode();
  k.get(n4).eqz().if().br(1).end();
  ADAM_SCALARS.forEach((name, i) => {
    k.get(s)
      .vLoadSplat32(4 * i)
      .set(c[name]);
  });
  k.get(n4).i32(16).mul().set(end);
  k.i32(0).set(o).loop();
  k.get(g).get(o).add().vLoad().set(gv);
  // m' = m·b1 + g·c1
  k.get(m).get(o).add().vLoad().get(b1).f32x4Mul();
  k.get(gv).get(c1).f32x4Mul().f32x4Add().set(mv);
  // v' = v·b2 + (g·g)·c2
  k.get(v).get(o).add().vLoad().get(b2).f32x4Mul();
  k.get(gv).get(gv).f32x4Mul().get(c2).f32x4Mul().f32x4Add().set(vv);
  k.get(mOut).get(o).add().get(mv).vStore();
  k.get(vOut).get(o).add().get(vv).vStore();
  // p' = ((m' / o1) / (sqrt(v' / o2) + eps))·nlr + p
  k.get(pOut).get(o).add();
  k.get(mv).get(o1).f32x4Div();
  k.get(vv).get(o2).f32x4Div().f32x4Sqrt().get(eps).f32x4Add();
  k.f32x4Div().get(nlr).f32x4Mul();
  k.get(p).get(o).add().vLoad().f32x4Add();
  k.vStore();
  k.get(o).i32(16).add().tee(o).get(end).ltU().brIf(0).end();
  return f.fn('adam', k);
}
