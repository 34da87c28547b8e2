// Adam on tfjs wasm (issue 16): tfjs's `AdamOptimizer` (eleven ops per variable, each a pass over
// it and a kernel call) against @kernelwarehouse/tfjs's `FusedAdamOptimizer` (one pass of the own
// wasm kernel per variable, bit-identical), side by side in one run, interleaved:
// 1. the update alone, on the trainable variables of the main job's ResNet-8 (width 4; plain and
//    KW 1x) with fixed random gradients;
// 2. the Trainer's whole step (width 4, batch 32, plain and KW 1x) with the fused update off and
//    on, in one thread and with 2 shard workers (where the update runs in this thread between
//    the workers' steps, while they wait).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:adam   (KW_BENCH_ROUNDS=5; KW_BENCH_STEPS=6)
import { initWeights } from '@kernelwarehouse/core';
import { buildModel, FusedAdamOptimizer } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
// not part of the package's public API: the switch of the fused update
import { setWasmFusedAdam } from '../packages/tfjs/dist/adam-wasm.js';
import {
  compare,
  machine,
  median,
  resnet8Spec,
  trainerStepTimes,
  wasmAsKwTrain,
} from './harness.mjs';

const kernelsLine = await wasmAsKwTrain();
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const steps = Number(process.env.KW_BENCH_STEPS ?? 6);
console.log(`# Adam on tfjs wasm: tf.train.adam vs FusedAdamOptimizer\n`);
console.log(`${await machine()}; ${kernelsLine}; ${rounds} interleaved rounds (median ms)\n`);
console.log(
  '| case | variables (floats) | tfjs AdamOptimizer ms | FusedAdamOptimizer ms | speed-up |',
);
console.log('|---|---:|---:|---:|---:|');
for (const budget of [null, '1x']) {
  const spec = await resnet8Spec({ budget });
  const model = buildModel(spec, initWeights(spec, { seed: 0 }));
  const vars = [...new Set(model.trainableWeights.map((w) => w.read()))];
  const twins = vars.map((v) => tf.variable(v.clone(), true));
  const grads = vars.map((v) => tf.randomNormal(v.shape, 0, 1e-2));
  const floats = vars.reduce((a, v) => a + v.size, 0);
  const map = (vs) => Object.fromEntries(vs.map((v, i) => [v.name, grads[i]]));
  const stock = tf.train.adam(1e-3);
  const fused = new FusedAdamOptimizer(1e-3);
  const [s, f] = await compare(
    [
      {
        name: 'stock',
        fn: () => {
          stock.applyGradients(map(vars));
          vars[0].dataSync();
        },
      },
      {
        name: 'fused',
        fn: () => {
          fused.applyGradients(map(twins));
          twins[0].dataSync();
        },
      },
    ],
    { rounds: rounds * 3, warmup: 2 },
  );
  console.log(
    `| the update, ResNet-8 w4 ${budget ? `KW ${budget}` : 'plain'} | ${vars.length} (${floats}) | ${s.medianMs.toFixed(2)} | ${f.medianMs.toFixed(2)} | ${(s.medianMs / f.medianMs).toFixed(1)}x |`,
  );
  tf.dispose([...twins, ...grads]);
  stock.dispose();
  fused.dispose();
  model.dispose();
}

console.log('\n| Trainer step (ResNet-8 w4, batch 32) | fused off ms | fused on ms | speed-up |');
console.log('|---|---:|---:|---:|');
for (const budget of [null, '1x']) {
  const spec = await resnet8Spec({ budget });
  for (const shards of [1, 2]) {
    const samples = [[], []];
    for (let r = 0; r < rounds; r++)
      for (const fusedOn of [false, true]) {
        setWasmFusedAdam(fusedOn);
        samples[fusedOn ? 1 : 0].push(
          ...(await trainerStepTimes(spec, { batch: 32, shards, steps })),
        );
      }
    setWasmFusedAdam(true);
    const [off, on] = samples.map(median);
    console.log(
      `| ${budget ? `KW ${budget}` : 'plain'}, ${shards === 1 ? 'one thread' : '2 shard workers'} | ${off.toFixed(0)} | ${on.toFixed(0)} | ${(off / on).toFixed(3)}x |`,
    );
  }
}
