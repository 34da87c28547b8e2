import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs';
import type { CheckpointFs } from '../src/checkpoint.js';
import { registerFastWasmKernels } from '../src/fast-wasm.js';

/** Switch backend (wasm is initialised on first use). */
export async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  await tf.setBackend(name);
  await tf.ready();
  // as chooseBackend does: every wasm test runs on the faster data-movement / matMul kernels
  if (name === 'wasm') registerFastWasmKernels();
}

/** `size` uniform values in [-1, 1) (Math.random: fresh inputs on every run). */
export function randomValues(size: number): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < a.length; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** The geometry of {@link convReference}: NHWC, HWIO kernels, padding at the top and left. */
export interface ConvRefGeometry {
  n: number;
  h: number;
  w: number;
  c: number;
  o: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  pt: number;
  pl: number;
  ho: number;
  wo: number;
  /** One kernel per sample (`[n, kh, kw, c, o]`) instead of one for the batch. */
  perSample: boolean;
}

/**
 * Float64 `y`, `dL/dx` and `dL/dk` of `L = sum(conv(x, k) * dy)`, straight from the definition
 * `y[b,oy,ox,o] = sum_{i,j,c} x[b, oy*sh+i-pt, ox*sw+j-pl, c] * k[(b,)i,j,c,o]` (taps outside the
 * image read zeros): dx and dk are the same sum with the roles of the factors exchanged.
 */
export function convReference(
  g: ConvRefGeometry,
  x: Float32Array,
  k: Float32Array,
  dy: Float32Array,
) {
  const { n, h, w, c, o, kh, kw, ho, wo } = g;
  const y = new Float64Array(n * ho * wo * o);
  const dx = new Float64Array(n * h * w * c);
  const dk = new Float64Array(k.length);
  for (let b = 0; b < n; b++) {
    const kb = g.perSample ? b * kh * kw * c * o : 0;
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const iy = oy * g.sh + i - g.pt;
            const ix = ox * g.sw + j - g.pl;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (let ci = 0; ci < c; ci++)
              for (let oo = 0; oo < o; oo++) {
                const xi = ((b * h + iy) * w + ix) * c + ci;
                const yi = ((b * ho + oy) * wo + ox) * o + oo;
                const ki = kb + ((i * kw + j) * c + ci) * o + oo;
                y[yi]! += x[xi]! * k[ki]!;
                dx[xi]! += dy[yi]! * k[ki]!;
                dk[ki]! += dy[yi]! * x[xi]!;
              }
          }
  }
  return { y, dx, dk };
}

/**
 * `conv(x, k)` and the gradients in `x` and `k` of `sum(conv(x, k) * dy)` (`dy` in the output's
 * shape) as float32 arrays, with the names of the kernels that ran (`tf.profile`). Disposes what
 * it made; `x` and `k` stay the caller's.
 */
export async function convWithGrads(
  conv: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
  x: tf.Tensor,
  k: tf.Tensor,
  dy: Float32Array,
): Promise<{ y: Float32Array; dx: Float32Array; dk: Float32Array; kernels: string[] }> {
  let out!: { y: Float32Array; dx: Float32Array; dk: Float32Array };
  const profile = await tf.profile(() => {
    const yt = conv(x, k);
    const dyt = tf.tensor(dy, yt.shape);
    const [gx, gk] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a, b), dyt)))([
      x,
      k,
    ]);
    out = {
      y: yt.dataSync() as Float32Array,
      dx: gx!.dataSync() as Float32Array,
      dk: gk!.dataSync() as Float32Array,
    };
    tf.dispose([yt, dyt, gx!, gk!]);
  });
  return { ...out, kernels: profile.kernelNames };
}

/** max |a-b| / max(|b|_inf, floor) */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  let s = 1e-6;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return d / s;
}

/**
 * Deterministic pseudo-images `[n, hw, hw, 1]` and labels that depend on them (learnable): an
 * LCG from `seed` plus 0.5 on the pixels whose index is the label modulo `classes`.
 */
export function patternImages(n: number, hw: number, classes: number, seed = 12345) {
  const px = new Float32Array(n * hw * hw);
  const labels = new Int32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    labels[i] = i % classes;
    for (let j = 0; j < hw * hw; j++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      px[i * hw * hw + j] = (s / 2 ** 32) * 0.5 + (j % classes === labels[i] ? 0.5 : 0);
    }
  }
  return { x: tf.tensor4d(px, [n, hw, hw, 1]), labels };
}

/** An in-memory file system that records every path it reads. */
export function memFs(): CheckpointFs & { files: Map<string, Uint8Array>; reads: string[] } {
  const files = new Map<string, Uint8Array>();
  const reads: string[] = [];
  return {
    files,
    reads,
    readFile: (p) => {
      reads.push(p);
      const f = files.get(p);
      if (!f) throw new Error(`ENOENT: ${p}`);
      return f;
    },
    writeFileAtomic: (p, d) => {
      files.set(p, Uint8Array.from(d));
    },
    exists: (p) => files.has(p) || [...files.keys()].some((k) => k.startsWith(`${p}/`)),
    list: (d) =>
      [...files.keys()].filter((k) => k.startsWith(`${d}/`)).map((k) => k.slice(d.length + 1)),
    remove: (p) => {
      files.delete(p);
    },
    makeDir: () => {},
  };
}
