// How fast can onnxruntime-web (wasm) run KW's kernel assembly at batch 1? The exported graph
// assembles a layer's kernel as ONE MatMul `warehouse [c_out·c_in, n] x attention [n, kh·kw]`
// (written straight in the conv's [O, I, kh, kw] order, no Transpose). At batch 1 that product is
// a matrix times a 9-column matrix: each warehouse value is used 9 times, where a conv's GEMM uses
// each weight H·W times. This benchmark times, for each distinct G = 1 3x3 KW layer shape of KW
// ResNet18 at 224x224 (from core's plan), in one process and interleaved round after round:
//   exported     the exported form, [M, n] x [n, 9] (M = c_out·c_in);
//   tap-major    [9, n] x [n, M] with the warehouse as a constant right operand (onnxruntime
//                packs it once at session creation): the best-shaped product, whose output
//                [9, M] is NOT the conv's layout (a lower bound for any layout);
//   + Transpose  the same followed by the Transpose to the conv's [M, 9] layout;
//   conv         the layer's own convolution at batch 1 (Conv, constant weights, as in the
//                plain model), whose rate the MAC-ideal ratio assumes for the assembly too.
// Prints ms and G multiply-adds per second. Then, for every 3x3 KW layer shape of the model
// (any G_out, G_in, stride), the whole layer at batch 1 (attention, assembly, conv) as one-layer
// models exported by `toOnnx` both ways: the assembled OIHW kernel and a Conv (`tapMajor: false`)
// and tap by tap (`tapMajor: true`), with the ratio `tapMajorPays` decides on (the export's
// default takes the tap-major form where it is >= TAP_MAJOR_MIN_RATIO).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:ort-assembly. Knobs: KW_BENCH_ROUNDS (7),
// KW_BENCH_THREADS (1), KW_BENCH_BUDGET (1), KW_BENCH_LAYER_BATCH (1: the whole layers at a fixed
// batch of 1; N > 1: exported with a dynamic batch, run at N).
import { analyzeSpec, initWeights, planKw, Rng, SpecBuilder } from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import * as ort from 'onnxruntime-web';
// the ONNX graph builder of @kernelwarehouse/ort-web (not part of its public API)
import { GraphBuilder } from '../packages/ort-web/dist/onnx.js';
import { TAP_MAJOR_MIN_RATIO, tapMajorPays, tapMajorRatio } from '../packages/ort-web/dist/ops.js';
import { compare, machine } from './harness.mjs';

const ROUNDS = Number(process.env.KW_BENCH_ROUNDS ?? 7);
const THREADS = Number(process.env.KW_BENCH_THREADS ?? 1);
const BUDGET = Number(process.env.KW_BENCH_BUDGET ?? 1);
// the whole-layer table's batch: 1 exports a fixed batch of 1, more a dynamic batch run at it
const LAYER_BATCH = Number(process.env.KW_BENCH_LAYER_BATCH ?? 1);
ort.env.wasm.numThreads = THREADS;

const spec = createModel('resnet18', { budget: BUDGET, inputShape: [3, 224, 224] });
const analyzed = analyzeSpec(spec);
const plan = planKw(analyzed);
const shapes = new Map();
for (const node of analyzed.spec.nodes) {
  const l = plan.layers.get(node.id);
  if (l?.kind !== 'conv2d' || l.gOut !== 1 || l.gIn !== 1) continue;
  if (l.weightShape[2] !== 3 || l.weightShape[3] !== 3 || node.stride[0] !== 1) continue;
  const wh = plan.warehouses.find((w) => w.layers.includes(node.id));
  const [, h, w] = analyzed.shapes.get(node.inputs[0]);
  const key = `${l.weightShape[0]}x${l.weightShape[1]}, n ${wh.n}, ${h}x${w}`;
  if (!shapes.has(key))
    shapes.set(key, { o: l.weightShape[0], i: l.weightShape[1], n: wh.n, h, w });
}

const rng = new Rng(7);
const rand = (len) => Float32Array.from({ length: len }, () => rng.normal() * 0.1);

async function session(build) {
  const g = new GraphBuilder();
  build(g);
  return ort.InferenceSession.create(g.model('bench', ''), {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
}

console.log(
  `# ORT wasm: KW kernel assembly vs conv at batch 1\n\n${await machine()}; onnxruntime-web ${ort.env.versions?.web ?? ''}; ${THREADS} thread(s); KW ${BUDGET}x ResNet18 224x224; ${ROUNDS} rounds\n`,
);
if (shapes.size === 0) console.log('(no G_out = G_in = 1 stride-1 3x3 layer in this model)\n');
else
  console.log(
    '| layer (O x I, warehouse n, input) | exported [M,n]x[n,9] ms (GMAC/s) | tap-major, prepacked ms (GMAC/s) | tap-major + Transpose ms (GMAC/s) | conv ms (GMAC/s) | exported rate / conv rate |',
  );
if (shapes.size > 0) console.log('|---|---:|---:|---:|---:|---:|');
for (const [key, { o, i, n, h, w }] of shapes) {
  const m = o * i;
  const warehouse = rand(m * n);
  const warehouseT = new Float32Array(m * n);
  for (let r = 0; r < m; r++)
    for (let k = 0; k < n; k++) warehouseT[k * m + r] = warehouse[r * n + k];
  const att = new ort.Tensor('float32', rand(n * 9), [n, 9]);
  const attT = new ort.Tensor('float32', rand(9 * n), [9, n]);
  const exported = await session((g) => {
    const a = g.input('a', [n, 9]);
    g.output('y', g.op('MatMul', [g.float('w', [m, n], warehouse), a]), [m, 9]);
  });
  const tapMajor = await session((g) => {
    const a = g.input('a', [9, n]);
    g.output('y', g.op('MatMul', [a, g.float('w', [n, m], warehouseT)]), [9, m]);
  });
  const transposed = await session((g) => {
    const a = g.input('a', [9, n]);
    const y = g.op('MatMul', [a, g.float('w', [n, m], warehouseT)]);
    g.output('y', g.op('Transpose', [y], { perm: [1, 0] }), [m, 9]);
  });
  const conv = await session((g) => {
    const x = g.input('x', [1, i, h, w]);
    const y = g.op('Conv', [x, g.float('w', [o, i, 3, 3], rand(o * i * 9))], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
    });
    g.output('y', y, [1, o, h, w]);
  });
  const xin = new ort.Tensor('float32', rand(i * h * w), [1, i, h, w]);
  const rows = await compare(
    [
      { name: 'exported', fn: () => exported.run({ a: att }) },
      { name: 'tap-major', fn: () => tapMajor.run({ a: attT }) },
      { name: 'transposed', fn: () => transposed.run({ a: attT }) },
      { name: 'conv', fn: () => conv.run({ x: xin }) },
    ],
    { rounds: ROUNDS, warmup: 2 },
  );
  const asmMacs = m * 9 * n;
  const convMacs = m * 9 * h * w;
  const rate = (r, macs) => macs / r.medianMs / 1e6;
  const cell = (r, macs) => `${r.medianMs.toFixed(2)} (${rate(r, macs).toFixed(1)})`;
  const [e, t, tt, c] = rows;
  console.log(
    `| ${key} | ${cell(e, asmMacs)} | ${cell(t, asmMacs)} | ${cell(tt, asmMacs)} | ${cell(c, convMacs)} | ${(rate(e, asmMacs) / rate(c, convMacs)).toFixed(2)} |`,
  );
  for (const s of [exported, tapMajor, transposed, conv]) await s.release();
}

// ---- whole layers: assembled kernel + Conv against tap by tap ----
const layers = new Map();
for (const node of analyzed.spec.nodes) {
  const l = plan.layers.get(node.id);
  if (l?.kind !== 'conv2d' || l.weightShape[2] !== 3 || l.weightShape[3] !== 3) continue;
  const wh = plan.warehouses.find((w) => w.layers.includes(node.id));
  const [i, h, w] = analyzed.shapes.get(node.inputs[0]);
  const [o, ho, wo] = analyzed.shapes.get(node.id);
  const key = `${o}x${i} s${node.stride[0]}, G ${l.gOut}x${l.gIn}, n ${wh.n}, ${ho}x${wo} out`;
  if (!layers.has(key))
    layers.set(key, {
      o,
      i,
      h,
      w,
      ho,
      wo,
      stride: node.stride[0],
      gOut: l.gOut,
      gIn: l.gIn,
      n: wh.n,
      m: l.m,
    });
}
console.log(
  `\n## The whole layer at batch ${LAYER_BATCH}: assembled kernel + conv vs tap by tap (toOnnx tapMajor false / true)\n\n${LAYER_BATCH === 1 ? 'Exported at a fixed batch of 1' : `Exported with a dynamic batch, run at ${LAYER_BATCH}`}; one-layer models with the layer's shape and cells, the warehouse n of its stage or the nearest whole number of the layer's m cells; ${THREADS} thread(s); ${ROUNDS} rounds, interleaved. ratio: tapMajorPays's (default: tap by tap where >= ${TAP_MAJOR_MIN_RATIO}).\n`,
);
console.log('| layer | ratio | assembled + Conv ms | tap by tap ms | tap / assembled | default |');
console.log('|---|---:|---:|---:|---:|---|');
for (const [key, L] of layers) {
  const b = new SpecBuilder('layer', [L.i, L.h, L.w]);
  b.warehouse({
    id: 'w',
    // a warehouse of one layer holds a whole number of its kernels: the nearest such n
    budget: Math.max(1, Math.round(L.n / L.m)),
    cellOutRatio: 1 / L.gOut,
    cellInRatio: 1 / L.gIn,
  });
  const y = b.dynamicConv2d(
    'conv',
    b.input,
    { outChannels: L.o, kernelSize: 3, stride: L.stride, padding: 1 },
    { kind: 'kw', warehouse: 'w' },
  );
  b.output(y);
  const spec = b.build();
  const got = planKw(analyzeSpec(spec));
  const gl = got.layers.get('conv');
  if (gl.gOut !== L.gOut || gl.gIn !== L.gIn)
    throw new Error(`${key}: the one-layer model has G ${gl.gOut}x${gl.gIn}`);
  const n = got.warehouses[0].n;
  const weights = initWeights(spec, { seed: 0 });
  const fixed = LAYER_BATCH === 1 ? 1 : undefined;
  const assembled = await createSession(toOnnx(spec, weights, { batch: fixed, tapMajor: false }), {
    numThreads: THREADS,
  });
  const tap = await createSession(toOnnx(spec, weights, { batch: fixed, tapMajor: true }), {
    numThreads: THREADS,
  });
  const x = {
    shape: [LAYER_BATCH, L.i, L.h, L.w],
    data: rand(LAYER_BATCH * L.i * L.h * L.w),
  };
  const [a, t] = await compare(
    [
      { name: 'assembled', fn: () => runSession(assembled, x) },
      { name: 'tap', fn: () => runSession(tap, x) },
    ],
    { rounds: ROUNDS, warmup: 2 },
  );
  const layer = [L.o, L.i, L.gIn, n, 9, L.ho * L.wo];
  const ratio = tapMajorRatio(...layer);
  const pays = tapMajorPays(...layer);
  console.log(
    `| ${key}${n === L.n ? '' : ` (one layer: n ${n})`} | ${ratio.toFixed(1)} | ${a.medianMs.toFixed(2)} | ${t.medianMs.toFixed(2)} | ${(t.medianMs / a.medianMs).toFixed(2)} | ${pays ? 'tap by tap' : 'assembled'} |`,
  );
  await assembled.release();
  await tap.release();
}
