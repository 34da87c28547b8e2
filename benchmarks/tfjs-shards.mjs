// Training on both cores (issue 16): @kernelwarehouse/tfjs's Trainer with one shard (the plain
// step, one thread), two shards in this process (same thread), and two shards in worker threads
// (`shardWorkers`: one wasm backend per worker), on the main job's model (ResNet-8 width 1, 28x28
// MNIST-sized inputs, batch 64) and the wider one of the speed targets (width 4, batch 32), plain
// and KW 1x. Per case: images per second from the median time between steps (the first two
// steps, which include starting the workers, are left out); cases run in interleaved rounds.
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:shards  (KW_BENCH_ROUNDS=2, KW_BENCH_STEPS=8,
// KW_BENCH_MODELS="1:64;4:32" as width:batch)
import { machine, median, resnet8Spec, trainerStepTimes, wasmAsKwTrain } from './harness.mjs';

const ROUNDS = Number(process.env.KW_BENCH_ROUNDS ?? 2);
const STEPS = Number(process.env.KW_BENCH_STEPS ?? 8);
const MODELS = (process.env.KW_BENCH_MODELS ?? '1:64;4:32')
  .split(';')
  .map((s) => s.split(':').map(Number));
const kernels = await wasmAsKwTrain();

console.log(`# tfjs training on both cores: shard workers (wasm)\n`);
console.log(
  `${await machine()}; ${kernels}; ${STEPS} timed steps per case, ${ROUNDS} interleaved rounds\n`,
);
console.log('| model | batch | case | ms per step | images/s | speed-up vs 1 shard |');
console.log('|---|---:|---|---:|---:|---:|');
for (const [width, batch] of MODELS) {
  for (const budget of [null, '1x']) {
    const spec = await resnet8Spec({ width, budget });
    const cases = [
      ['1 shard (one thread)', 1, false],
      ['2 shards, this thread', 2, false],
      ['2 shards, 2 worker threads', 2, true],
    ];
    const samples = cases.map(() => []);
    for (let r = 0; r < ROUNDS; r++)
      for (let i = 0; i < cases.length; i++) {
        const [, shards, workers] = cases[i];
        samples[i].push(
          ...(await trainerStepTimes(spec, { batch, shards, shardWorkers: workers, steps: STEPS })),
        );
      }
    const base = median(samples[0]);
    cases.forEach(([name], i) => {
      const ms = median(samples[i]);
      console.log(
        `| ResNet-8 w${width} ${budget ? `KW ${budget}` : 'plain'} | ${batch} | ${name} | ${ms.toFixed(0)} | ${((1000 * batch) / ms).toFixed(0)} | ${(base / ms).toFixed(2)}x |`,
      );
    });
  }
}
