// Where a KW training step's time above the plain step goes, layer by layer: for each KW conv of
// the ResNet-8 of the speed targets (width 4, 28x28x1, batch 32, KW 1x; KW_BENCH_WIDTH,
// KW_BENCH_BATCH, KW_BENCH_BUDGET), the three conv kernels of a training step with ONE kernel
// for the batch (what the plain layer runs: forward, input gradient, filter gradient) against the
// same three with a kernel per sample (the KW layer's), and the KW layer's kernel assembly
// (`alpha [N·m, n] @ warehouse`: its forward and its one-pass gradient). All on
// @kernelwarehouse/tfjs's wasm kernels, interleaved round after round (median ms). Layer shapes,
// m and n come from core's plan of the model, not from this file. The last columns compare the
// measured KW/plain ratio of the layer (per-sample convs + assembly over the shared convs) with
// its MAC-ideal ratio (conv + assembly MACs over conv MACs).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:kw-overhead   (KW_BENCH_ROUNDS=3)
import { planModel } from '@kernelwarehouse/core';
import { matMulWasm, perSampleConv } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { compare, machine, resnet8Spec, wasmAsKwTrain } from './harness.mjs';

const kernelsLine = await wasmAsKwTrain();
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 3);
const batch = Number(process.env.KW_BENCH_BATCH ?? 32);
const width = Number(process.env.KW_BENCH_WIDTH ?? 4);
const budget = process.env.KW_BENCH_BUDGET ?? '1x';
const spec = await resnet8Spec({ width, budget });
const plan = planModel(spec);
const planOf = new Map(plan.nodes.map((n) => [n.id, n]));
const warehouses = new Map(plan.kw.warehouses.map((w) => [w.id, w]));
// the per-sample kernels register on first use
tf.tidy(() => perSampleConv(tf.zeros([1, 1, 1, 4]), tf.zeros([1, 1, 1, 4, 4]), geometryOf(1, 0)));
tf.tidy(() => matMulWasm(tf.zeros([1, 4]), tf.zeros([4, 4])));

function geometryOf(stride, pad) {
  return { groups: 1, dilation: [1, 1], stride: [stride, stride], padding: [pad, pad] };
}

console.log(
  `# KW training overhead by layer (tfjs wasm)\n\n${await machine()}; ${kernelsLine}; ResNet-8 width ${width}, KW ${budget}, batch ${batch}, ${rounds} rounds (median ms)\n`,
);
console.log(
  '| layer | in -> out, k, s | m, n | shared fwd / dx / dw | per-sample fwd / dx / dw | assembly fwd / grads | KW / plain | MAC-ideal |',
);
console.log('|---|---|---|---|---|---|---:|---:|');
const sum = { shared: 0, perSample: 0, assembly: 0, convMacs: 0, asmMacs: 0 };
for (const node of spec.nodes.filter((n) => n.op === 'dynamicConv2d')) {
  const [ci, h, w] = planOf.get(node.inputs[0]).outShape;
  const p = planOf.get(node.id);
  const [co, ho, wo] = p.outShape;
  const [k] = node.kernelSize;
  const [s] = node.stride;
  const [pad] = node.padding;
  const wh = warehouses.get(node.method.warehouse);
  const S = wh.cellIn * wh.cellOut;
  const m = p.kernelFloats / S;
  const n = p.macs.assembly / p.kernelFloats;
  const x = tf.randomNormal([batch, h, w, ci]);
  const filter = tf.randomNormal([k, k, ci, co]);
  const dy = tf.randomNormal([batch, ho, wo, co]);
  const kernels = tf.randomNormal([batch, k, k, ci, co]);
  const alpha = tf.randomNormal([batch * m, n]);
  const cells = tf.randomNormal([n, S]);
  const dcells = tf.randomNormal([batch * m, S]);
  const conv = {
    strides: [s, s],
    pad: [
      [0, 0],
      [pad, pad],
      [pad, pad],
      [0, 0],
    ],
    dataFormat: 'NHWC',
  };
  const own = { strides: [s, s], pads: [pad, pad] };
  // wasm kernels run synchronously: the output exists when runKernel returns
  const run = (name, inputs, attrs) => () =>
    tf.tidy(() => void tf.engine().runKernel(name, inputs, attrs));
  const cases = [
    ['shared fwd', run('Conv2D', { x, filter }, { ...conv, dilations: [1, 1] })],
    ['shared dx', run('Conv2DBackpropInput', { dy, filter }, { ...conv, inputShape: x.shape })],
    ['shared dw', run('Conv2DBackpropFilter', { x, dy }, { ...conv, filterShape: filter.shape })],
    ['per-sample fwd', run('KwWasmConv2D', { x, kernels }, { ...own, shared: false })],
    [
      'per-sample dx',
      run(
        'KwWasmConv2DBackpropInput',
        { dy, kernels },
        { ...own, shared: false, inputShape: x.shape },
      ),
    ],
    [
      'per-sample dw',
      run('KwWasmConv2DBackpropFilter', { x, dy }, { ...own, shared: false, kernelSize: [k, k] }),
    ],
    ['assembly fwd', () => tf.tidy(() => void matMulWasm(alpha, cells))],
    ['assembly grads', run('KwWasmMatMulGrads', { a: alpha, b: cells, dy: dcells }, {})],
  ].map(([name, fn]) => ({ name, fn }));
  const r = await compare(cases, { rounds, warmup: 1 });
  const ms = r.map((q) => q.medianMs);
  const shared = ms[0] + ms[1] + ms[2];
  const perSample = ms[3] + ms[4] + ms[5];
  const assembly = ms[6] + ms[7];
  const f = (xs) => xs.map((v) => v.toFixed(1)).join(' / ');
  const ideal = (p.macs.conv + p.macs.assembly) / p.macs.conv;
  console.log(
    `| ${node.id} | ${h}x${w}x${ci} -> ${ho}x${wo}x${co}, ${k}x${k}, ${s} | ${m}, ${n} | ${f(ms.slice(0, 3))} | ${f(ms.slice(3, 6))} | ${f(ms.slice(6))} | ${((perSample + assembly) / shared).toFixed(2)}x | ${ideal.toFixed(2)}x |`,
  );
  sum.shared += shared;
  sum.perSample += perSample;
  sum.assembly += assembly;
  sum.convMacs += p.macs.conv;
  sum.asmMacs += p.macs.assembly;
  tf.dispose([x, filter, dy, kernels, alpha, cells, dcells]);
}
console.log(
  `| all KW layers | | | ${sum.shared.toFixed(1)} | ${sum.perSample.toFixed(1)} | ${sum.assembly.toFixed(1)} | ${((sum.perSample + sum.assembly) / sum.shared).toFixed(2)}x | ${((sum.convMacs + sum.asmMacs) / sum.convMacs).toFixed(2)}x |`,
);
console.log(
  `\nPer-sample convs cost ${(sum.perSample / sum.shared).toFixed(2)}x the shared ones (same MACs); the assembly adds ${((100 * sum.assembly) / sum.shared).toFixed(0)} % of the shared convs' time for ${((100 * sum.asmMacs) / sum.convMacs).toFixed(0)} % of their MACs.`,
);
