// The core reference executor: one KW conv layer (budgets 1/2x, 1x, 4x) vs the plain conv of the
// same shape, side by side. The reference is slow on purpose (clarity, float64 sums); this
// benchmark shows what the KW machinery costs on top of the convolution itself, next to the
// MAC-ideal ratio from planModel. Run: pnpm --filter @kernelwarehouse/benchmarks bench:reference
import { initWeights, planModel, Rng, runReference, tensor } from '@kernelwarehouse/core';
import { compare, machine, printTable } from './harness.mjs';
import { stageSpec } from './stage-spec.mjs';

const C = Number(process.env.KW_BENCH_C ?? 32);
const S = Number(process.env.KW_BENCH_SIZE ?? 16);
const N = Number(process.env.KW_BENCH_BATCH ?? 4);

const stage = (budget) => stageSpec(budget, C, S);

const rng = new Rng(0);
const x = tensor([N, C, S, S], rng.normalArray(N * C * S * S));
const plainSpec = stage(null);
const plainW = initWeights(plainSpec);
const plainMacs = planModel(plainSpec).macs.total;
const cases = [
  {
    name: `2 plain convs ${C}->${C} 3x3 @${S}x${S}, batch ${N}`,
    fn: () => runReference(plainSpec, plainW, x, { trustedWeights: true }),
  },
];
for (const budget of [0.5, 1, 4]) {
  const spec = stage(budget);
  const w = initWeights(spec);
  cases.push({
    name: `2 KW convs, b = ${budget} (GAP + attention + assembly + conv)`,
    fn: () => runReference(spec, w, x, { trustedWeights: true }),
    ideal: planModel(spec).macs.total / plainMacs,
  });
}
const rows = await compare(cases, { rounds: Number(process.env.KW_BENCH_ROUNDS ?? 5) });
console.log(`machine: ${await machine()}`);
printTable('reference executor: a 2-layer KW stage vs the same plain convs', rows);
