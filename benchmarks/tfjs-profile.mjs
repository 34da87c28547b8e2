// Where a tfjs wasm training step's time goes: tf.profile of one step (forward, gradients, Adam)
// of the ResNet-8 of the speed targets (width 4, 28x28x1, batch 32; KW_BENCH_WIDTH,
// KW_BENCH_BATCH), plain and KW (KW_BENCH_BUDGETS="plain,1x,1/2x"), after 3 warm-up steps. Prints
// kernel time per kernel name (the backend's own timing of each kernel; a kernel that calls
// others, such as the conv gradients, includes them, and `unnamed scope` is a custom gradient's
// scope, which includes the kernels it ran) and the step's wall time. KW_PROFILE_TOP (12): kernels listed.
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:tfjs-profile
import * as tf from '@tensorflow/tfjs';
import { machine, resnet8TrainStep, wasmAsKwTrain } from './harness.mjs';

const kernels = await wasmAsKwTrain();
const width = Number(process.env.KW_BENCH_WIDTH ?? 4);
const batch = Number(process.env.KW_BENCH_BATCH ?? 32);
const budgets = (process.env.KW_BENCH_BUDGETS ?? 'plain,1x,1/2x').split(',');
console.log(
  `# tfjs wasm training step profile\n\n${await machine()}; ${kernels}; ResNet-8 width ${width}, batch ${batch}\n`,
);
for (const b of budgets) {
  const step = await resnet8TrainStep({ width, batch, budget: b === 'plain' ? undefined : b });
  for (let i = 0; i < 3; i++) await step();
  const t0 = performance.now();
  await step();
  const wall = performance.now() - t0;
  const p = await tf.profile(step);
  const by = new Map();
  for (const k of p.kernels) {
    const e = by.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += k.kernelTimeMs;
    e.calls += 1;
    by.set(k.name, e);
  }
  console.log(
    `\n### ${b} (step wall time ${wall.toFixed(0)} ms, unprofiled; ${p.kernels.length} kernel calls)\n`,
  );
  console.log('| kernel | ms | calls |');
  console.log('|---|---:|---:|');
  for (const [name, e] of [...by]
    .sort((x, y) => y[1].ms - x[1].ms)
    .slice(0, Number(process.env.KW_PROFILE_TOP ?? 12)))
    console.log(`| ${name} | ${e.ms.toFixed(1)} | ${e.calls} |`);
}
