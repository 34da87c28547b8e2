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
