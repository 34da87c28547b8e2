// Where a KW training step's time above the plain step goes, layer by layer: for each KW conv of
// the ResNet-8 of the speed targets (width 4, 28x28x1, batch 32, KW 1x; KW_BENCH_WIDTH,
// KW_BENCH_BATCH, KW_BENCH_BUDGET), the three conv kernels of a training step with ONE kernel
// for the batch (what the plain layer runs: forward, input gradient, filter gradient) against the
// same three with a kernel per sample (the KW layer's), and the KW layer's kernel assembly
// (`alpha [N·m, n] @ warehouse`: its forward and its one-pass gradient). All on
// @kernelwarehouse/tfjs's wasm kernels, interleaved round after round (median ms). Layer shapes,
// m and n come from core's plan of the model, not from this file. The last columns compare the
// measured KW/plain ratio of the layer (per-sample convs + assembly over the shared convs) with
// its MAC-ideal ratio (conv + assembly MACs over conv MACs) and its product-ideal ratio: the
// multiplies of the forms the kernels run (conv-wasm.ts `convPassProducts`: Winograd F(4x4, 3x3)
// or F(2x2, 3x3) where a pass takes one, else direct; each pass of the shared conv against each
// pass of the per-sample conv plus the assembly's three products), for the assembled form timed
// here and, where a training step takes the mixed form instead (`mixedFormTaken`, mix-wasm.ts), for that form
// (its shared 1x1 product and the tap mixing, forward and both gradients, no Winograd form). The
// last lines give the same ratios for the whole set of KW layers and for the whole network's
// convs (the stem conv, the same in both, included).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:kw-overhead   (KW_BENCH_ROUNDS=3)
import { planModel } from '@kernelwarehouse/core';
import { matMulWasm, perSampleConv } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
// not part of @kernelwarehouse/tfjs's public API: the forms' multiplies, the form a step takes
import { convPassProducts } from '../packages/tfjs/dist/conv-wasm.js';
import { mixedFormTaken } from '../packages/tfjs/dist/mix-wasm.js';
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
  '| layer | in -> out, k, s | m, n | shared fwd / dx / dw | per-sample fwd / dx / dw | assembly fwd / grads | KW / plain | MAC-ideal | product-ideal, assembled | form in a step | product-ideal of that form |',
);
console.log('|---|---|---|---|---|---|---:|---:|---:|---|---:|');
const sum = {
  shared: 0,
  perSample: 0,
  assembly: 0,
  convMacs: 0,
  asmMacs: 0,
  plainProducts: 0,
  kwProducts: 0,
  perSampleProducts: 0,
};
const passes = ['forward', 'inputGrad', 'filterGrad'];
/** Multiplies per sample of a conv's three passes on the own kernels. */
const products = (geo, perSample, pairs) =>
  pairs * passes.reduce((t, pass) => t + convPassProducts(geo, pass, perSample), 0);
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
  const ownAssembly = tf.tidy(() => matMulWasm(alpha, cells) !== undefined);
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
    // as the KW layer runs it (tfjs's ops.ts matMul): the own kernels where they take the
    // shapes (n <= 64 cells), else tfjs's MatMul and its gradient's two products
    ...(ownAssembly
      ? [
          ['assembly fwd', () => tf.tidy(() => void matMulWasm(alpha, cells))],
          ['assembly grads', run('KwWasmMatMulGrads', { a: alpha, b: cells, dy: dcells }, {})],
        ]
      : [
          ['assembly fwd', () => tf.tidy(() => void tf.matMul(alpha, cells))],
          [
            'assembly grads',
            () =>
              tf.tidy(() => {
                tf.matMul(dcells, cells, false, true);
                tf.matMul(alpha, dcells, true, false);
              }),
          ],
        ]),
  ].map(([name, fn]) => ({ name, fn }));
  const r = await compare(cases, { rounds, warmup: 1 });
  const ms = r.map((q) => q.medianMs);
  const shared = ms[0] + ms[1] + ms[2];
  const perSample = ms[3] + ms[4] + ms[5];
  const assembly = ms[6] + ms[7];
  const f = (xs) => xs.map((v) => v.toFixed(1)).join(' / ');
  const ideal = (p.macs.conv + p.macs.assembly) / p.macs.conv;
  // the forms' multiplies per sample: shared conv; per-sample conv and the assembly's forward and
  // two gradient products (n per kernel float each); the mixed form's shared 1x1 product (n /
  // (taps·G_in) of the direct conv's) and mixing (n / c_out of it), each in three passes
  const geo = { kh: k, kw: k, sh: s, sw: s, H: h, W: w, C: ci, Ho: ho, Wo: wo, O: co };
  const plainProducts = products(geo, false, ci * co);
  const perSampleProducts = products(geo, true, ci * co);
  const assembled = perSampleProducts + 3 * n * p.kernelFloats;
  const lp = plan.kw.layers.get(node.id);
  const taps = k * k;
  const mixed = 3 * taps * ho * wo * ci * co * (n / (taps * lp.gIn) + n / wh.cellOut);
  const takesMixed = mixedFormTaken({ ...geo, gIn: lp.gIn, n, cout: wh.cellOut });
  const kwProducts = takesMixed ? mixed : assembled;
  console.log(
    `| ${node.id} | ${h}x${w}x${ci} -> ${ho}x${wo}x${co}, ${k}x${k}, ${s} | ${m}, ${n} | ${f(ms.slice(0, 3))} | ${f(ms.slice(3, 6))} | ${f(ms.slice(6))} | ${((perSample + assembly) / shared).toFixed(2)}x | ${ideal.toFixed(2)}x | ${(assembled / plainProducts).toFixed(2)}x | ${takesMixed ? 'mixed' : 'assembled'} | ${(kwProducts / plainProducts).toFixed(2)}x |`,
  );
  sum.plainProducts += plainProducts;
  sum.perSampleProducts += perSampleProducts;
  sum.kwProducts += kwProducts;
  sum.shared += shared;
  sum.perSample += perSample;
  sum.assembly += assembly;
  sum.convMacs += p.macs.conv;
  sum.asmMacs += p.macs.assembly;
  tf.dispose([x, filter, dy, kernels, alpha, cells, dcells]);
}
console.log(
  `| all KW layers | | | ${sum.shared.toFixed(1)} | ${sum.perSample.toFixed(1)} | ${sum.assembly.toFixed(1)} | ${((sum.perSample + sum.assembly) / sum.shared).toFixed(2)}x | ${((sum.convMacs + sum.asmMacs) / sum.convMacs).toFixed(2)}x | | | ${(sum.kwProducts / sum.plainProducts).toFixed(2)}x |`,
);
// the network's other convs (the stem): the same multiplies in the plain and the KW model
let otherProducts = 0;
for (const node of spec.nodes.filter((q) => q.op === 'conv2d')) {
  const [ci, h, w] = planOf.get(node.inputs[0])?.outShape ?? spec.inputShape;
  const [co, ho, wo] = planOf.get(node.id).outShape;
  const [k] = node.kernelSize;
  const [s] = node.stride;
  const geo = { kh: k, kw: k, sh: s, sw: s, H: h, W: w, C: ci, Ho: ho, Wo: wo, O: co };
  otherProducts += products(geo, false, (ci * co) / (node.groups ?? 1));
}
console.log(
  `\nProduct-ideal of the whole network's convs (with ${(otherProducts / 1e6).toFixed(1)} M multiplies per sample of other convs, the same in both): ${((sum.kwProducts + otherProducts) / (sum.plainProducts + otherProducts)).toFixed(2)}x (plain ${((sum.plainProducts + otherProducts) / 1e6).toFixed(0)} M, KW ${((sum.kwProducts + otherProducts) / 1e6).toFixed(0)} M per sample). With the direct kernels (Winograd off) the same count is the MAC-ideal.`,
);
console.log(
  `\nPer-sample convs cost ${(sum.perSample / sum.shared).toFixed(2)}x the shared ones (the same MACs, ${(sum.perSampleProducts / sum.plainProducts).toFixed(2)}x their multiplies in the forms each runs); the assembly adds ${((100 * sum.assembly) / sum.shared).toFixed(0)} % of the shared convs' time for ${((100 * sum.asmMacs) / sum.convMacs).toFixed(0)} % of their MACs.`,
);
