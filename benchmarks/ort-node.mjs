// Exported KW ResNet18 (1x, 1/2x, 1/4x) against plain ResNet18 on onnxruntime-node (native CPU
// onnxruntime: the engine of a Node server or of `docs/scaling-out.md`'s worker pool), 224x224,
// batch 1 and 8, 1 thread and the machine's cores. Each KW model runs in the dynamic-batch
// export's three forms: per-sample convs as a `Scan` whose body assembles the sample's kernel and
// convolves it (the default), the same with every sample's kernel assembled before the Scan
// (`scanAssembly: false`), and im2col + one batched MatMul (`scanBatch: false`); all cases
// interleaved round after round in
// one process, ratios to the plain model at the same batch and thread count, with the per-round
// spread and core's MAC-ideal ratio. Run: pnpm --filter @kernelwarehouse/benchmarks bench:ort-node
// Knobs: KW_BENCH_SIZE (224), KW_BENCH_ROUNDS (5), KW_BENCH_BATCHES (1,8), KW_BENCH_THREADS (1
// and the machine's cores).
import { availableParallelism, loadavg } from 'node:os';
import { initWeights, planModel, Rng } from '@kernelwarehouse/core';
import { toOnnx } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import * as ort from 'onnxruntime-node';
import { benchThreads, compare, machine, RESNET18_MODELS } from './harness.mjs';

const SIZE = Number(process.env.KW_BENCH_SIZE ?? 224);
const ROUNDS = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const BATCHES = (process.env.KW_BENCH_BATCHES ?? '1,8').split(',').map(Number);
const THREADS = benchThreads();
const MODELS = RESNET18_MODELS;
const FORMS = [
  ['', {}],
  [' (kernels before the Scan: scanAssembly false)', { scanAssembly: false }],
  [' (im2col: scanBatch false)', { scanBatch: false }],
];

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');
const files = [];
for (const [label, budget] of MODELS) {
  const spec = createModel('resnet18', { budget, inputShape: [3, SIZE, SIZE] });
  const weights = initWeights(spec, { seed: 0 });
  const macs = planModel(spec).macs.total;
  for (const [form, opts] of budget === null ? [FORMS[0]] : FORMS)
    files.push({ name: `${label}${form}`, bytes: toOnnx(spec, weights, opts), macs });
}
const rows = [];
const loads = [];
for (const threads of THREADS) {
  const before = load();
  const sessions = [];
  for (const f of files) {
    sessions.push(
      await ort.InferenceSession.create(f.bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
      }),
    );
  }
  for (const n of BATCHES) {
    const data = new Rng(1).normalArray(n * 3 * SIZE * SIZE);
    const x = new ort.Tensor('float32', data, [n, 3, SIZE, SIZE]);
    const res = await compare(
      files.map((f, i) => ({
        name: f.name,
        fn: () => sessions[i].run({ input: x }),
        ideal: f.macs / files[0].macs,
      })),
      { rounds: ROUNDS, warmup: 1 },
    );
    for (const r of res) {
      const per = r.samples.map((t, k) => t / res[0].samples[k]);
      rows.push({ threads, batch: n, ...r, lo: Math.min(...per), hi: Math.max(...per) });
    }
  }
  for (const s of sessions) await s.release();
  loads.push(`${threads} thread(s): load average ${before} before, ${load()} after`);
}
console.log(
  `machine: ${await machine()}; onnxruntime-node 1.30.0 (CPU EP); ResNet18 ${SIZE}x${SIZE}; ${ROUNDS} rounds (median)`,
);
console.log(`load (uptime, ${availableParallelism()} cores): ${loads.join('; ')}`);
console.log(
  '\n| threads | batch | model | median ms | measured ratio (per-round min-max) | MAC-ideal ratio | measured / ideal | default / kernels-before-the-Scan time | default / im2col time |',
);
console.log('|---:|---:|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  // on a KW model's default row: its time over each other form's (the rows of the same model)
  const over = (form) => {
    const twin = rows.find(
      (o) =>
        o.threads === r.threads &&
        o.batch === r.batch &&
        o.name === `${r.name}${form}` &&
        r.name !== 'plain',
    );
    return twin ? (r.medianMs / twin.medianMs).toFixed(2) : '';
  };
  console.log(
    `| ${r.threads} | ${r.batch} | ${r.name} | ${r.medianMs.toFixed(1)} | ${r.ratio.toFixed(2)} (${r.lo.toFixed(2)}-${r.hi.toFixed(2)}) | ${r.ideal.toFixed(2)} | ${(r.ratio / r.ideal).toFixed(2)} | ${over(FORMS[1][0])} | ${over(FORMS[2][0])} |`,
  );
}
