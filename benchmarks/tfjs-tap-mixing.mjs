// KW convs in the mixed form (taps mixed by the attention, then the warehouse as one 1x1 conv
// shared by the batch; core's `Ops.mixTaps`, tfjs wasm's `mix-wasm.ts`) against the assembled
// form (per-sample kernels `alpha @ warehouse`, then a per-sample conv), on tfjs wasm with the
// own kernels, interleaved round after round (median ms):
// 1. one KW 3x3 conv (its own warehouse; forward and gradients of every input and weight, batch
//    KW_BENCH_BATCH = 32) at channel counts, map sizes and budgets around the main job's, with the
//    choice of the cost rule (`tapMixingPays`, whose weights were fitted to this table) beside the
//    measured ratio;
// 2. whole training steps of the main job's ResNet-8 (width 4, batch 32, Adam): plain, and KW 1x,
//    1/2x and 1/4x with the mixed form off and on (where the rule takes it: the 7x7 layer3.0.conv2),
//    each as a ratio to the plain step of its round.
// KW_BENCH_ONLY=layers|steps runs one part; KW_BENCH_SHAPES="C,S,stride;..." sets part 1's convs. Run: pnpm --filter @kernelwarehouse/benchmarks bench:tap-mixing
import { initWeights, planModel, SpecBuilder } from '@kernelwarehouse/core';
import { buildModel, setTemperature } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { perSampleWinograd } from '../packages/tfjs/dist/conv-wasm.js';
import { setWasmTapMixing, tapMixingPays } from '../packages/tfjs/dist/mix-wasm.js';
import { compare, machine, median, resnet8TrainStep, wasmAsKwTrain } from './harness.mjs';

const kernelsLine = await wasmAsKwTrain();
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const batch = Number(process.env.KW_BENCH_BATCH ?? 32);
const only = process.env.KW_BENCH_ONLY;
console.log(
  `# KW tap mixing vs kernel assembly (tfjs wasm)\n\n${await machine()}; ${kernelsLine}; ${rounds} rounds (median ms)`,
);

/** One KW 3x3 conv C -> C on S x S maps at `budget` (halved cells below 1, as the official configs). */
function oneConv(budget, C, S, stride) {
  const b = new SpecBuilder('one-kw-conv', [C, S, S]);
  const ratio = budget < 1 ? 0.5 : 1;
  b.warehouse({ id: 'w', budget, cellInRatio: ratio, cellOutRatio: ratio });
  const geo = { outChannels: C, kernelSize: 3, padding: 1, stride };
  b.output(b.dynamicConv2d('conv', b.input, geo, { kind: 'kw', warehouse: 'w' }));
  return b.build();
}

const budgetText = (b) => (b >= 1 ? `${b}x` : `1/${1 / b}x`);

/** `f` with the mixed form set to `setting` first. */
const withMixing = (setting, f) => () => {
  setWasmTapMixing(setting);
  return f();
};

if (only !== 'steps') {
  console.log(
    `\n## One KW conv, forward + gradients (batch ${batch}, tau 0.5)\n\n| C, map, stride | budget | G_out, G_in | n | c_out | assembled ms | mixed ms | mixed / assembled | rule |\n|---|---|---|---:|---:|---:|---:|---:|---|`,
  );
  const shapes = process.env.KW_BENCH_SHAPES?.split(';').map((t) => t.split(',').map(Number)) ?? [
    [256, 7, 1],
    [128, 7, 1],
    [128, 14, 2],
    [256, 14, 1],
    [128, 14, 1],
    [64, 14, 1],
    [64, 28, 1],
    // the main job's width-1 layer3.0.conv2
    [64, 7, 1],
  ];
  for (const [C, S, stride] of shapes) {
    for (const budget of [1, 0.5, 0.25, 2]) {
      const spec = oneConv(budget, C, S, stride);
      const plan = planModel(spec);
      const layer = [...plan.kw.layers.values()][0];
      const wh = plan.kw.warehouses[0];
      const model = buildModel(spec, initWeights(spec, { seed: 0 }));
      setTemperature(model, 0.5);
      const x = tf.randomNormal([batch, S, S, C]);
      const step = () =>
        tf.tidy(() => {
          const { value } = tf.variableGrads(() =>
            tf.sum(tf.square(model.apply(x, { training: true }))),
          );
          value.dataSync();
        });
      const [assembled, mixed] = await compare(
        [
          { name: 'assembled', fn: withMixing(false, step) },
          { name: 'mixed', fn: withMixing('always', step) },
        ],
        { rounds },
      );
      setWasmTapMixing(true);
      const pixels = Math.ceil(S / stride) ** 2;
      const wino = perSampleWinograd(3, 3, stride, stride, S, S);
      const pays = tapMixingPays(wh.n, 9, layer.gIn, wh.cellOut, pixels, wino);
      console.log(
        `| ${C}, ${S}x${S}, ${stride} | ${budgetText(budget)} | ${layer.gOut}, ${layer.gIn} | ${wh.n} | ${wh.cellOut} | ${assembled.medianMs.toFixed(1)} | ${mixed.medianMs.toFixed(1)} | ${mixed.ratio.toFixed(2)} | ${pays ? 'mixed' : 'assembled'} |`,
      );
      x.dispose();
      model.dispose();
    }
  }
}

if (only !== 'layers') {
  const width = Number(process.env.KW_BENCH_WIDTH ?? 4);
  console.log(
    `\n## ResNet-8 width ${width} training step (batch ${batch}, Adam, KW at tau 0.5)\n\n| model | mixed form | median ms | ratio to plain (median) | per-round ratios |\n|---|---|---:|---:|---|`,
  );
  const plain = await resnet8TrainStep({ width, batch });
  const kw1 = await resnet8TrainStep({ width, batch, budget: '1x' });
  const kw2 = await resnet8TrainStep({ width, batch, budget: '1/2x' });
  const kw4 = await resnet8TrainStep({ width, batch, budget: '1/4x' });
  const rows = await compare(
    [
      { name: 'plain|', fn: plain },
      { name: 'KW 1x|off', fn: withMixing(false, kw1) },
      { name: 'KW 1x|on', fn: withMixing(true, kw1) },
      { name: 'KW 1/2x|off', fn: withMixing(false, kw2) },
      { name: 'KW 1/2x|on', fn: withMixing(true, kw2) },
      { name: 'KW 1/4x|off', fn: withMixing(false, kw4) },
      { name: 'KW 1/4x|on', fn: withMixing(true, kw4) },
    ],
    { rounds, warmup: 2 },
  );
  setWasmTapMixing(true);
  for (const r of rows) {
    const [model, mixing] = r.name.split('|');
    const per = r.samples.map((s, i) => s / rows[0].samples[i]);
    console.log(
      `| ${model} | ${mixing} | ${r.medianMs.toFixed(0)} | ${median(per).toFixed(3)} | ${per.map((v) => v.toFixed(2)).join(' ')} |`,
    );
  }
}
