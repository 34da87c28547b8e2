/**
 * WebAssembly SIMD kernels of a training BatchNorm over the last axis (`x [rows, C]`, channels
 * innermost, C % 4 == 0), written with {@link wasmModule}'s emitter and bound with the conv
 * kernels to tfjs-backend-wasm's heap (conv-wasm.ts); `bn-wasm.ts` runs them. Four passes over
 * a feature map per training step (one to two reads each) where tfjs's autodiff of
 * `tf.moments` and the normalisation ran ~20 elementwise kernels and reductions. Per-channel
 * sums are kept in float64 (promoted from float32 lanes), as the package's `Sum` / `Mean`
 * kernels do (fast-wasm.ts); the elementwise passes are an unfused multiply and add, so the
 * results do not depend on relaxed SIMD.
 *
 * `coef` points at float32 per-channel coefficients, `C` apart: `s` (the shift or the mean),
 * then `a`, `b`, `d`; `acc` at two float64 rows of C sums (the caller zeroes them).
 */
import { Frame, f32Lanes, indices, WasmCode, type WasmFunction } from './wasm-emit.js';

/**
 * `bn_moments(x, p, rows, C, coef, acc)`: with `u = x - s` (float32 lanes, promoted),
 * `acc[0][c] += u`, `acc[1][c] += u²` over the rows (`p` unused): the batch mean and variance
 * about the shift `s`.
 * `bn_gsums(x, p, rows, C, coef, acc)`: with `u = x - s` and `g = p` (dy),
 * `acc[0][c] += g`, `acc[1][c] += g·u`: the bias and (times 1/σ) weight gradients.
 */
function columnSums(grad: boolean): WasmFunction {
  const f = new Frame(6);
  const { x, p, rows, C, coef, acc } = indices(['x', 'p', 'rows', 'C', 'coef', 'acc'], 0);
  const { r, cb, rowB, a1, a2 } = f.i32s(['r', 'cb', 'rowB', 'a1', 'a2']);
  const [u, g, gLo, gHi, uLo, uHi] = [0, 1, 2, 3, 4, 5].map(() => f.v128()) as number[];
  const k = new WasmCode();
  k.get(rows).eqz().get(C).eqz().add().if().br(1).end();
  k.get(C).i32(4).mul().set(rowB);
  k.i32(0).set(r).loop();
  k.i32(0).set(cb).loop();
  k.get(x).get(cb).add().vLoad().get(coef).get(cb).add().vLoad().f32x4Sub().set(u!);
  if (grad) k.get(p).get(cb).add().vLoad().set(g!);
  const src = grad ? g! : u!;
  k.get(src).f64x2PromoteLow().set(gLo!);
  k.get(src)
    .get(src)
    .shuffle(f32Lanes([2, 3, 2, 3]))
    .f64x2PromoteLow()
    .set(gHi!);
  if (grad) {
    k.get(u!).f64x2PromoteLow().set(uLo!);
    k.get(u!)
      .get(u!)
      .shuffle(f32Lanes([2, 3, 2, 3]))
      .f64x2PromoteLow()
      .set(uHi!);
  }
  const [lo2, hi2] = grad ? [uLo!, uHi!] : [gLo!, gHi!];
  // channel c's sums are float64 at acc + 8c (first row) and acc + 8C + 8c (second)
  k.get(acc).get(cb).i32(2).mul().add().tee(a1).get(rowB).i32(2).mul().add().set(a2);
  k.get(a1).get(a1).vLoad().get(gLo!).f64x2Add().vStore();
  k.get(a1).get(a1).vLoad(16).get(gHi!).f64x2Add().vStore(16);
  k.get(a2).get(a2).vLoad().get(gLo!).get(lo2).f64x2Mul().f64x2Add().vStore();
  k.get(a2).get(a2).vLoad(16).get(gHi!).get(hi2).f64x2Mul().f64x2Add().vStore(16);
  k.get(cb).i32(16).add().tee(cb).get(rowB).ltU().brIf(0).end();
  k.get(x).get(rowB).add().set(x);
  if (grad) k.get(p).get(rowB).add().set(p);
  k.get(r).i32(1).add().tee(r).get(rows).ltU().brIf(0).end();
  return f.fn(grad ? 'bn_gsums' : 'bn_moments', k);
}

/**
 * `bn_norm(x, p, y, rows, C, coef)`: `y = (x - s)·a + b` (`p` unused), the forward.
 * `bn_dx(x, p, y, rows, C, coef)`: `y = (x - s)·a + b + p·d` (`p` = dy), the input gradient.
 */
function affine(grad: boolean): WasmFunction {
  const f = new Frame(6);
  const { x, p, y, rows, C, coef } = indices(['x', 'p', 'y', 'rows', 'C', 'coef'], 0);
  const { r, cb, rowB, c } = f.i32s(['r', 'cb', 'rowB', 'c']);
  const v = f.v128();
  const k = new WasmCode();
  k.get(rows).eqz().get(C).eqz().add().if().br(1).end();
  k.get(C).i32(4).mul().set(rowB);
  k.i32(0).set(r).loop();
  k.i32(0).set(cb).loop();
  k.get(coef).get(cb).add().set(c);
  // (x - s) · a + b
  k.get(x).get(cb).add().vLoad().get(c).vLoad().f32x4Sub();
  k.get(c).get(rowB).add().vLoad().f32x4Mul();
  k.get(c).get(rowB).i32(2).mul().add().vLoad().f32x4Add().set(v);
  if (grad) {
    k.get(v).get(p).get(cb).add().vLoad().get(c).get(rowB).i32(3).mul().add().vLoad();
    k.f32x4Mul().f32x4Add().set(v);
  }
  k.get(y).get(cb).add().get(v).vStore();
  k.get(cb).i32(16).add().tee(cb).get(rowB).ltU().brIf(0).end();
  k.get(x).get(rowB).add().set(x);
  k.get(y).get(rowB).add().set(y);
  if (grad) k.get(p).get(rowB).add().set(p);
  k.get(r).i32(1).add().tee(r).get(rows).ltU().brIf(0).end();
  return f.fn(grad ? 'bn_dx' : 'bn_norm', k);
}

/** The BatchNorm kernels, for the module of conv-wasm.ts. */
export function batchNormFunctions(): WasmFunction[] {
  return [columnSums(false), columnSums(true), affine(false), affine(true)];
}
