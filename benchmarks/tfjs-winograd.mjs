// 3x3 stride-1 convs on tfjs wasm: @kernelwarehouse/tfjs's Winograd F(2x2, 3x3) form
// (src/conv-wasm.ts `winogradConv` / `winogradFilterGrad`, on by default) against its direct
// kernels (`setWasmWinograd(false)`), side by side in one run, interleaved round after round:
// 1. one conv at the main job's ResNet-8 width-4 stage shapes (batch 32), a kernel shared by the
//    batch (an ordinary conv) and a kernel per sample (a dynamic conv): the forward, and the
//    forward with both gradients, with the largest difference between the two forms' results;
// 2. the ResNet-8 width-4 training step (batch 32, Adam; KW at tau 0.5) for plain and KW
//    budgets with the Winograd form off and on: the step's speed-up, and each KW step's ratio
//    to the plain step of the same form.
// The own kernels use relaxed SIMD's fused multiply-add as `kw train` does (KW_BENCH_FMA=off:
// unfused). KW_BENCH_ONLY=convs|steps runs one part; KW_BENCH_BUDGETS="1x,1/2x,1/4x".
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:winograd   (KW_BENCH_ROUNDS=5)
import { perSampleConv, setWasmWinograd } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
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

console.log(`# 3x3 stride-1 convs on tfjs wasm: direct vs Winograd F(2x2, 3x3)\n`);
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
    '| map, C -> C (batch 32) | kernel | pass | direct ms | Winograd ms | speed-up | max rel diff |',
  );
  console.log('|---|---|---|---:|---:|---:|---:|');
  const geometry = { groups: 1, stride: [1, 1], padding: [1, 1], dilation: [1, 1] };
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
        const values = (wino) => {
          setWasmWinograd(wino);
          const out = tf.tidy(f);
          const v = out.map((t) => t.dataSync());
          tf.dispose(out);
          return v;
        };
        const diff = relDiff(values(true), values(false));
        const timed = (wino) => async () => {
          setWasmWinograd(wino);
          const out = tf.tidy(f);
          await Promise.all(out.map((t) => t.data()));
          tf.dispose(out);
        };
        const [d, w] = await compare(
          [
            { name: 'direct', fn: timed(false) },
            { name: 'winograd', fn: timed(true) },
          ],
          { rounds },
        );
        console.log(
          `| ${S}x${S}, ${C} -> ${C} | ${kind} | ${pass} | ${d.medianMs.toFixed(1)} | ${w.medianMs.toFixed(1)} | ${(d.medianMs / w.medianMs).toFixed(2)} | ${diff.toExponential(1)} |`,
        );
      }
    }
    tf.dispose([x, dy, shared, perSample]);
  }
  setWasmWinograd(true);
  console.log(
    '\nPer-sample kernels take the Winograd form from 100 input pixels (`WINO_MIN_PIXELS`): at 7x7 both columns are the direct kernels.\n',
  );
}

if (only !== 'convs') {
  const models = [null, ...budgets];
  const cases = [];
  for (const budget of models) {
    const step = await resnet8TrainStep({ budget });
    for (const wino of [false, true])
      cases.push({
        name: `${budget ? `KW ${budget}` : 'plain'}|${wino ? 'Winograd' : 'direct'}`,
        fn: async () => {
          setWasmWinograd(wino);
          await step();
        },
      });
  }
  const r = await compare(cases, { rounds });
  setWasmWinograd(true);
  console.log(
    'ResNet-8 width 4 training step (batch 32, Adam, KW at tau 0.5), both forms interleaved:\n',
  );
  console.log(
    '| model | direct ms | Winograd ms | speed-up | ratio to plain (direct) | ratio to plain (Winograd) | per-round ratios to plain (Winograd) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---|');
  const [pd, pw] = [r[0], r[1]];
  for (let i = 0; i < r.length; i += 2) {
    const [d, w] = [r[i], r[i + 1]];
    const perRound = w.samples.map((s, j) => (s / pw.samples[j]).toFixed(2)).join(' ');
    console.log(
      `| ${d.name.split('|')[0]} | ${d.medianMs.toFixed(0)} | ${w.medianMs.toFixed(0)} | ${(d.medianMs / w.medianMs).toFixed(2)} | ${(d.medianMs / pd.medianMs).toFixed(3)} | ${(w.medianMs / pw.medianMs).toFixed(3)} | ${perRound} |`,
    );
  }
}
