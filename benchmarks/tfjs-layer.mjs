// @kernelwarehouse/tfjs: a 2-layer KW stage (budgets 1/2x, 1x, 4x) vs the same two plain convs,
// forward and one training step (forward + gradients + Adam update), same backend, side by side
// in one run, next to the MAC-ideal ratio from planModel. Backend: KW_BENCH_BACKEND (wasm default).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:tfjs
import { initWeights, planModel, Rng } from '@kernelwarehouse/core';
import { buildModel, chooseBackend } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { compare, machine, printTable } from './harness.mjs';
import { stageSpec } from './stage-spec.mjs';

const C = Number(process.env.KW_BENCH_C ?? 32);
const S = Number(process.env.KW_BENCH_SIZE ?? 16);
const N = Number(process.env.KW_BENCH_BATCH ?? 8);
const backend = process.env.KW_BENCH_BACKEND ?? 'wasm';
const choice = await chooseBackend({ force: backend, report: null });

const stage = (budget) => stageSpec(budget, C, S);

const x = tf.tensor4d(new Rng(0).normalArray(N * S * S * C), [N, S, S, C]);
const target = tf.randomNormal([N, S, S, C]);
const plainSpec = stage(null);
const plainMacs = planModel(plainSpec).macs.total;
const specs = [
  ['2 plain convs', plainSpec, undefined],
  ...[0.5, 1, 4].map((b) => [`2 KW convs, b = ${b}`, stage(b), undefined]),
];
const fwd = [];
const train = [];
for (const [name, spec] of specs) {
  const model = buildModel(spec, initWeights(spec));
  const opt = tf.train.adam(1e-3);
  const ideal = spec === plainSpec ? undefined : planModel(spec).macs.total / plainMacs;
  fwd.push({
    name: `${name} forward`,
    ideal,
    fn: async () => {
      const y = model.predict(x);
      await y.data();
      y.dispose();
    },
  });
  train.push({
    name: `${name} train step`,
    ideal,
    fn: async () => {
      const loss = opt.minimize(
        () => tf.mean(tf.square(tf.sub(model.apply(x, { training: true }), target))),
        true,
      );
      await loss.data();
      loss.dispose();
    },
  });
}
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const f = await compare(fwd, { rounds });
const t = await compare(train, { rounds });
console.log(`machine: ${await machine()}; tfjs backend: ${choice.backend}`);
const title = `${C}->${C} 3x3 @${S}x${S}, batch ${N}`;
printTable(
  `tfjs (${choice.backend}) forward: a 2-layer KW stage vs the same plain convs, ${title}`,
  f,
);
printTable(
  `tfjs (${choice.backend}) train step: a 2-layer KW stage vs the same plain convs, ${title}`,
  t,
);
