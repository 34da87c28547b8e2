// 3x3 stride-1 convs on tfjs wasm: @kernelwarehouse/tfjs's Winograd forms (src/conv-wasm.ts
// `winogradConv` / `winogradFilterGrad`, on by default: F(4x4, 3x3) where it saves products (every pass
// of a kernel shared by the batch; the filter gradient of per-sample kernels), else F(2x2, 3x3)) against its direct
// kernels (`setWasmWinograd(false)`), side by side in one run, interleaved round after round:
// 1. one conv at the main job's ResNet-8 width-4 stage shapes (batch 32), a kernel shared by the
//    batch (an ordinary conv) and a kernel per sample (a dynamic conv): the forward, and the
//    forward with both gradients, direct, each form forced and the default rule, with the
//    largest difference between the default's results and the direct kernels';
// 2. the ResNet-8 width-4 training step (batch 32, Adam; KW at tau 0.5) for plain and KW
//    budgets, direct, F(2x2, 3x3) in every pass and the default forms: the step's speed-up, and
//    each KW step's ratio to the plain step of the same setting.
// Both parts also time the default forms with the transformed matrices packed back to back
// (`setWinogradPadding(false)`, as before 2026-11-28) against the default, which keeps them an
// odd number of cache lines apart (winograd-kernels.ts `winogradStride`).
// The own kernels use relaxed SIMD's fused multiply-add as `kw train` does (KW_BENCH_FMA=off:
// unfused). KW_BENCH_ONLY=convs|steps runs one part; KW_BENCH_BUDGETS="1x,1/2x,1/4x".
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:winograd   (KW_BENCH_ROUNDS=5)
import { perSampleConv, setWasmWinograd } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
// not part of @kernelwarehouse/tfjs's public API: the tile-size switch (default: by map size)
import { setWinogradPadding, setWinogradTiles } from '../packages/tfjs/dist/conv-wasm.js';
import { compare, machine, resnet8TrainStep, wasmAsKwTrain } from './harness.mjs';

const kernelsLine = await wasmAsKwTrain();
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const only = process.env.KW_BENCH_ONLY ?? '';
const budgets = (process.env.KW_BENCH_BUDGETS ?? '1x,1/2x,1/4x').split(',');
const shapes = [
  [32, 28, 64],
  [32, 14, 128],
  [32, 7, 256],
];

console.log(`# 3x3 stride-1 convs on tfjs wasm: direct vs Winograd F(2x2, 3x3) and F(4x4, 3x3)\n`);
console.log(`${await machine()}; ${kernelsLine}; ${rounds} interleaved rounds, medians\n`);

/** Largest |a - b| over the largest |b|, over the tensors of two runs. */
function relDiff(a, b) {
  let d = 0;
  let m = 1e-6;
  for (let t = 0; t < a.length; t++)
    for (let i = 0; i < a[t].length; i++) {
      d = Math.max(d, Math.abs(a[t][i] - b[t][i]));
      m = Math.max(m, Math.abs(b[t][i]));
    }
  return d / m;
}

if (only !== 'steps') {
  console.log(
    '| map, C -> C (batch 32) | kernel | pass | direct ms | F(2x2, 3x3) ms | F(4x4, 3x3) ms | forms taken (y; dx, dw) | speed-up (taken / direct) | max rel diff (taken vs direct) | default unpadded ms | padding speed-up |',
  );
  console.log('|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|');
  const geometry = { groups: 1, stride: [1, 1], padding: [1, 1], dilation: [1, 1] };
  // the forms: direct (Winograd off), each tile size forced, the default rule, and the default
  // rule with the matrices unpadded
  const forms = [
    ['direct', false, 'auto'],
    ['F2', true, 2],
    ['F4', true, 4],
    ['auto', true, 'auto'],
    ['auto unpadded', true, 'auto', false],
  ];
  const use = ([, on, tiles, padded = true]) => {
    setWasmWinograd(on);
    setWinogradTiles(tiles);
    setWinogradPadding(padded);
  };
  for (const [N, S, C] of shapes) {
    const x = tf.randomNormal([N, S, S, C]);
    const dy = tf.randomNormal([N, S, S, C]);
    const shared = tf.mul(tf.randomNormal([3, 3, C, C]), 0.05);
    const perSample = tf.mul(tf.randomNormal([N, 3, 3, C, C]), 0.05);
    // the filter is a new tensor each call, as in training (the weights change every step)
    const kinds = [
      ['shared', (a, b) => tf.conv2d(a, b, 1, 'same'), () => tf.mul(shared, 1)],
      ['per sample', (a, b) => perSampleConv(a, b, geometry), () => tf.mul(perSample, 1)],
    ];
    for (const [kind, conv, filter] of kinds) {
      const passes = [
        ['forward', () => [conv(x, filter())]],
        [
          'forward + both gradients',
          () => tf.grads((a, b) => tf.sum(tf.mul(conv(a, b), dy)))([x, filter()]),
        ],
      ];
      for (const [pass, f] of passes) {
        const values = (form) => {
          use(form);
          const out = tf.tidy(f);
          const v = out.map((t) => t.dataSync());
          tf.dispose(out);
          return v;
        };
        const byForm = forms.map(values);
        const diff = relDiff(byForm[3], byForm[0]);
        // the padding moves addresses only
        if (relDiff(byForm[4], byForm[3]) !== 0)
          throw new Error('the unpadded matrices gave other results');
        // which form the rule took for each output: its results are that form's, bit for bit
        const same = (a, b) => a.every((v, j) => v === b[j]);
        const taken = byForm[3]
          .map((t, i) =>
            same(t, byForm[0][i]) ? 'direct' : same(t, byForm[2][i]) ? 'F(4x4)' : 'F(2x2)',
          )
          .join(', ');
        const timed = (form) => async () => {
          use(form);
          const out = tf.tidy(f);
          await Promise.all(out.map((t) => t.data()));
          tf.dispose(out);
        };
        const r = await compare(
          forms.map((form) => ({ name: form[0], fn: timed(form) })),
          { rounds },
        );
        const ms = r.map((c) => c.medianMs);
        console.log(
          `| ${S}x${S}, ${C} -> ${C} | ${kind} | ${pass} | ${ms[0].toFixed(1)} | ${ms[1].toFixed(1)} | ${ms[2].toFixed(1)} | ${taken} | ${(ms[0] / ms[3]).toFixed(2)} | ${diff.toExponential(1)} | ${ms[4].toFixed(1)} | ${(ms[4] / ms[3]).toFixed(2)} |`,
        );
      }
    }
    tf.dispose([x, dy, shared, perSample]);
  }
  use(forms[3]);
  console.log(
    '\nThe F(2x2, 3x3) and F(4x4, 3x3) columns take that form in every pass; the default (`forms taken`) takes F(4x4, 3x3) where it saves products (28x28 and 7x7 maps) in every pass of a shared kernel and in the filter gradient of per-sample kernels, F(2x2, 3x3) otherwise. Per-sample kernels take a Winograd form from 100 input pixels (`WINO_MIN_PIXELS`): at 7x7 every column is the direct kernels. "speed-up" is the direct time over the default\'s (timed as its own case).\n',
  );
}

if (only !== 'convs') {
  const models = [null, ...budgets];
  // per model: the direct kernels, F(2x2, 3x3) in every pass, the default forms, and those
  // unpadded
  const modes = [
    ['direct', false, 'auto'],
    ['F(2x2)', true, 2],
    ['default', true, 'auto'],
    ['unpadded', true, 'auto', false],
  ];
  const cases = [];
  for (const budget of models) {
    const step = await resnet8TrainStep({ budget });
    for (const [mode, on, tiles, padded = true] of modes)
      cases.push({
        name: `${budget ? `KW ${budget}` : 'plain'}|${mode}`,
        fn: async () => {
          setWasmWinograd(on);
          setWinogradTiles(tiles);
          setWinogradPadding(padded);
          await step();
        },
      });
  }
  const r = await compare(cases, { rounds });
  setWasmWinograd(true);
  setWinogradTiles('auto');
  setWinogradPadding(true);
  console.log(
    'ResNet-8 width 4 training step (batch 32, Adam, KW at tau 0.5), every case interleaved:\n',
  );
  console.log(
    '| model | direct ms | F(2x2) in every pass ms | default ms | speed-up (default / direct) | ratio to plain (direct) | ratio to plain (default) | per-round ratios to plain (default) | default unpadded ms | padding speed-up (per round) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---|---:|---|');
  const n = modes.length;
  const [pd, , pw] = r.slice(0, n);
  for (let i = 0; i < r.length; i += n) {
    const [d, f2, w, u] = r.slice(i, i + n);
    const padding = w.samples.map((s, j) => (u.samples[j] / s).toFixed(2)).join(' ');
    const perRound = w.samples.map((s, j) => (s / pw.samples[j]).toFixed(2)).join(' ');
    console.log(
      `| ${d.name.split('|')[0]} | ${d.medianMs.toFixed(0)} | ${f2.medianMs.toFixed(0)} | ${w.medianMs.toFixed(0)} | ${(d.medianMs / w.medianMs).toFixed(2)} | ${(d.medianMs / pd.medianMs).toFixed(3)} | ${(w.medianMs / pw.medianMs).toFixed(3)} | ${perRound} | ${u.medianMs.toFixed(0)} | ${(u.medianMs / w.medianMs).toFixed(2)} (${padding}) |`,
    );
  }
}
