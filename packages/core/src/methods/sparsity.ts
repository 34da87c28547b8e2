/**
 * SLaK's dynamic sparsity as pure functions (peers.md §7.3): layer-wise densities (ERK,
 * SNIP ratio), random masks from a seeded {@link Rng}, magnitude pruning, random regrowth,
 * the cosine-decayed prune rate and the update interval. Masks are `Uint8Array` (1 = kept).
 */
import { KwError } from '../errors.js';
import type { Rng } from '../rng.js';

function checkDensity(density: number): void {
  if (!(density > 0 && density <= 1))
    throw new KwError('ARGUMENT_INVALID', `density must be in (0, 1], found ${density}`);
}

/**
 * ERK densities (peers.md §7.3): density_l = ε·(Σ shape_l / Π shape_l), ε chosen so the total
 * kept count is `density · Σ numel`; layers whose density would exceed 1 are made dense and ε
 * is re-solved over the rest.
 */
export function erkDensities(shapes: readonly (readonly number[])[], density: number): number[] {
  checkDensity(density);
  const n = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const raw = shapes.map((s, i) => s.reduce((a, b) => a + b, 0) / n[i]!);
  const dense = new Set<number>();
  for (;;) {
    let budget = density * n.reduce((a, b) => a + b, 0);
    let divisor = 0;
    for (let i = 0; i < n.length; i++) {
      if (dense.has(i)) budget -= n[i]!;
      else divisor += raw[i]! * n[i]!;
    }
    const eps = divisor > 0 ? budget / divisor : 0;
    let changed = false;
    for (let i = 0; i < n.length; i++) {
      if (!dense.has(i) && eps * raw[i]! > 1) {
        dense.add(i);
        changed = true;
      }
    }
    if (!changed) return n.map((_, i) => (dense.has(i) ? 1 : eps * raw[i]!));
  }
}

/**
 * SNIP ratios (peers.md §7.3): from per-layer scores `|w ⊙ ∂L/∂w|`, the global threshold is
 * the `k`-th largest score, `k = ⌊density · total⌋`; each layer's density is the fraction of
 * its scores strictly above it (sparsity = fraction `≤` threshold). The masks themselves are
 * then drawn at random ({@link randomMask}).
 */
export function snipDensities(scores: readonly Float32Array[], density: number): number[] {
  checkDensity(density);
  const all = new Float32Array(scores.reduce((a, s) => a + s.length, 0));
  let o = 0;
  for (const s of scores) {
    all.set(s, o);
    o += s.length;
  }
  const k = Math.floor(density * all.length);
  if (k === 0) return scores.map(() => 0);
  const sorted = Float32Array.from(all).sort((a, b) => b - a);
  const thr = sorted[k - 1]!;
  return scores.map((s) => {
    let above = 0;
    for (const v of s) if (v > thr) above++;
    return above / s.length;
  });
}

/** Random mask: each position kept with probability `density` (`rand < density`, §7.3). */
export function randomMask(size: number, density: number, rng: Rng): Uint8Array {
  const m = new Uint8Array(size);
  for (let i = 0; i < size; i++) m[i] = rng.uniform() < density ? 1 : 0;
  return m;
}

/** `w ⊙ mask` (a new array). */
export function applyMask(weights: Float32Array, mask: Uint8Array): Float32Array {
  const out = new Float32Array(weights.length);
  for (let i = 0; i < weights.length; i++) out[i] = mask[i] ? weights[i]! : 0;
  return out;
}

/**
 * Magnitude pruning (peers.md §7.3): with `z` zeros in the mask, the `z + ⌈rate·nonzeros⌉`
 * smallest `|w ⊙ mask|` are off in the new mask (ties by index). Returns the mask and the
 * number of weights removed (`⌈rate·nonzeros⌉`, capped at nonzeros).
 */
export function pruneByMagnitude(
  weights: Float32Array,
  mask: Uint8Array,
  rate: number,
): { mask: Uint8Array; removed: number } {
  if (!(rate >= 0 && rate <= 1))
    throw new KwError('ARGUMENT_INVALID', `prune rate must be in [0, 1], found ${rate}`);
  let nonzeros = 0;
  for (const v of mask) nonzeros += v;
  const removed = Math.min(nonzeros, Math.ceil(rate * nonzeros));
  const k = mask.length - nonzeros + removed;
  const mag = (i: number) => (mask[i] ? Math.abs(weights[i]!) : 0);
  const order = Array.from({ length: mask.length }, (_, i) => i).sort(
    (a, b) => mag(a) - mag(b) || mask[a]! - mask[b]! || a - b,
  );
  const out = new Uint8Array(mask.length).fill(1);
  for (let i = 0; i < k; i++) out[order[i]!] = 0;
  return { mask: out, removed };
}

/**
 * Random regrowth (peers.md §7.3): each currently-off position turns on with probability
 * `removed / zeros` (an expected, not exact, count).
 */
export function regrowRandom(mask: Uint8Array, removed: number, rng: Rng): Uint8Array {
  let zeros = 0;
  for (const v of mask) zeros += 1 - v;
  const p = zeros > 0 ? removed / zeros : 0;
  const out = Uint8Array.from(mask);
  for (let i = 0; i < mask.length; i++) if (!mask[i] && rng.uniform() < p) out[i] = 1;
  return out;
}

/**
 * Cosine-decayed prune rate (peers.md §7.3, `CosineDecay`): from `init` at step 0 to `end`
 * (default 0.005) at `totalSteps`: `end + (init − end)(1 + cos(π·t/T))/2`.
 */
export function cosinePruneRate(
  step: number,
  totalSteps: number,
  init: number,
  end = 0.005,
): number {
  if (!(totalSteps > 0))
    throw new KwError('ARGUMENT_INVALID', `totalSteps must be > 0, found ${totalSteps}`);
  const t = Math.min(Math.max(step, 0), totalSteps);
  return end + ((init - end) * (1 + Math.cos((Math.PI * t) / totalSteps))) / 2;
}

/** Whether optimiser step `step` (1-based count of `mask.step()` calls) prunes and regrows: every `interval` steps. */
export function isUpdateStep(step: number, interval: number): boolean {
  if (!Number.isInteger(interval) || interval < 1)
    throw new KwError(
      'ARGUMENT_INVALID',
      `update interval must be an integer >= 1, found ${interval}`,
    );
  return step > 0 && step % interval === 0;
}
