// Fuzz settings shared by the property tests. CI runs each with its fixed seed and base run
// count; for a longer local hunt set KW_FUZZ_SCALE (run-count multiplier) and KW_FUZZ_SEED
// (replaces every fixed seed), e.g. KW_FUZZ_SCALE=50 KW_FUZZ_SEED=$RANDOM pnpm --filter
// @kernelwarehouse/core test. fast-check prints the seed and the shrunk counterexample of a
// failure, so any find can be replayed with the same KW_FUZZ_SEED.
const scale = Number(process.env.KW_FUZZ_SCALE ?? 1);
const seed = process.env.KW_FUZZ_SEED;

/** fast-check parameters: the CI seed and run count unless the environment overrides them. */
export function fuzz(ciSeed: number, ciRuns: number): { seed: number; numRuns: number } {
  if (!(Number.isFinite(scale) && scale > 0))
    throw new Error(`KW_FUZZ_SCALE must be > 0, found ${process.env.KW_FUZZ_SCALE}`);
  return {
    seed: seed === undefined ? ciSeed : Number(seed),
    numRuns: Math.max(1, Math.round(ciRuns * scale)),
  };
}
