// The stock tfjs wasm kernels against @kernelwarehouse/tfjs's faster Slice / Unpack / SplitV /
// Reverse / BatchMatMul (src/fast-wasm.ts), side by side in one run (cases interleaved round
// after round): the data-movement ops a per-sample conv uses, the assembly matMul's gradient
// orientations, and whole training steps of a KW ResNet-8 (width 4, 28x28x1, batch 32 as the preset; KW_BENCH_BATCH) and of
// the plain ResNet-8, the `kw train --preset paper-direction` model. Prints median ms and
// stock / fast speed-ups. A second table turns @kernelwarehouse/tfjs's own WebAssembly SIMD
// kernels (src/conv-wasm.ts: per-sample and ordinary conv gradients, the ordinary conv forward,
// few-row gradient products, KW's assembly gradients in one pass, the training BatchNorm of
// src/bn-wasm.ts, the attention's global average pool of src/gap-wasm.ts; `setOwnWasmKernels`) off and on around the same training steps; before it,
// tables of the filter gradient in place against on channel-block copies, of the stride-1
// input gradient on `conv_dx1` against it as a forward conv and of the strided one on `conv_dxs`
// against one forward conv per output phase, of KW's assembly forward on XNNPACK against the
// no-pack kernel, and whole steps with those forms off and on. The own kernels use relaxed SIMD's multiply-add as `kw train`
// does (KW_BENCH_FMA=off: unfused).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:wasm-kernels   (KW_BENCH_ROUNDS=3;
// KW_BENCH_ONLY=gap: only the global average pool tables)
import {
  matMulWasm,
  registerFastWasmKernels,
  setOwnWasmKernels,
  TfOps,
  unregisterFastWasmKernels,
} from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
// not part of @kernelwarehouse/tfjs's public API: its layers' BatchNorm and the switches of the
// gradient kernels' forms
import {
  setAssemblyForwardNoPack,
  setFilterGradBlocked,
  setInputGradByForward,
  setStridedInputGradByPhases,
} from '../packages/tfjs/dist/conv-wasm.js';
import { setWasmGlobalAvgPool } from '../packages/tfjs/dist/gap-wasm.js';
import { batchNormLast } from '../packages/tfjs/dist/layers.js';
import { compare, machine, resnet8TrainStep, wasmAsKwTrain } from './harness.mjs';

const kernelsLine = await wasmAsKwTrain();
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 3);
const batch = Number(process.env.KW_BENCH_BATCH ?? 32);

/** A case run once with the stock kernels and once with the fast ones. */
const pair = (name, fn) => [
  {
    name: `${name} (stock)`,
    fn: () => {
      unregisterFastWasmKernels();
      return tf.tidy(() => void fn().dataSync());
    },
  },
  {
    name: `${name} (fast)`,
    fn: () => {
      registerFastWasmKernels();
      return tf.tidy(() => void fn().dataSync());
    },
  },
];

const kernels = tf.randomNormal([16, 3, 3, 256, 256]);
const x = tf.randomNormal([batch, 14, 14, 256]);
const alpha = tf.randomNormal([288, 29]);
const alpha9 = tf.randomNormal([288, 9]);
const w = tf.randomNormal([29, 16384]);
const dcells = tf.randomNormal([288, 16384]);
const dcells9 = tf.randomNormal([288, 65536]);
// in training the kernel gradients are new tensors on every step, so the products get a fresh
// copy (XNNPACK would otherwise reuse the operator it packed on the previous call)
const fresh = (t) => tf.mul(t, 1);
const micro = [
  ['unstack 16 kernels 3x3x256x256', () => tf.stack(tf.unstack(kernels).map((k) => tf.sum(k)))],
  [`split a ${batch}x14x14x256 batch`, () => tf.stack(tf.split(x, batch, 0).map((k) => tf.sum(k)))],
  ['reverse 16 kernels spatially', () => tf.sum(tf.reverse(kernels, [1, 2]))],
  ['copy 288x16384 (the fresh operand alone)', () => tf.sum(fresh(dcells))],
  [
    'matMul TN 288x29 ^T x 288x16384 (dW)',
    () => tf.sum(tf.matMul(alpha, fresh(dcells), true, false)),
  ],
  [
    'matMul TN 288x9 ^T x 288x65536 (dW, 1x1 cells)',
    () => tf.sum(tf.matMul(alpha9, fresh(dcells9), true, false)),
  ],
  [
    'matMul NT 288x16384 x 29x16384 ^T (dA)',
    () => tf.sum(tf.matMul(fresh(dcells), w, false, true)),
  ],
];

/** One training step (forward, gradients, Adam) of a ResNet-8 width 4 on random data. */
const stepper = (budget) => resnet8TrainStep({ budget, width: 4, batch });
const steps = [
  ['train step, plain ResNet-8 w4', await stepper(null)],
  ['train step, KW 1x ResNet-8 w4', await stepper('1x')],
  ['train step, KW 1/2x ResNet-8 w4', await stepper('1/2x')],
];
const asyncPair = (name, fn) => [
  {
    name: `${name} (stock)`,
    fn: async () => {
      unregisterFastWasmKernels();
      await fn();
    },
  },
  {
    name: `${name} (fast)`,
    fn: async () => {
      registerFastWasmKernels();
      await fn();
    },
  },
];

console.log(`# tfjs wasm: stock kernels vs @kernelwarehouse/tfjs fast kernels\n`);
console.log(
  `${await machine()}; ${kernelsLine}; batch ${batch}; median of ${rounds} interleaved rounds\n`,
);
// KW_BENCH_ONLY=gap: only the global average pool's two tables (below)
const only = process.env.KW_BENCH_ONLY;
if (only && only !== 'gap') throw new Error(`KW_BENCH_ONLY: only "gap" is known, found "${only}"`);
if (!only) await stockVsFast();
async function stockVsFast() {
  console.log('| case | stock ms | fast ms | speed-up |');
  console.log('|---|---:|---:|---:|');
  for (const [name, fn] of micro) {
    const [s, f] = await compare(pair(name, fn), { rounds, warmup: 1 });
    console.log(
      `| ${name} | ${s.medianMs.toFixed(1)} | ${f.medianMs.toFixed(1)} | ${(s.medianMs / f.medianMs).toFixed(1)}x |`,
    );
  }
  for (const [name, fn] of steps) {
    const [s, f] = await compare(asyncPair(name, fn), { rounds, warmup: 1 });
    console.log(
      `| ${name} (batch ${batch}) | ${s.medianMs.toFixed(0)} | ${f.medianMs.toFixed(0)} | ${(s.medianMs / f.medianMs).toFixed(1)}x |`,
    );
  }
  registerFastWasmKernels();
}

// gradient products with R output rows (a^T b, b new on every call): where matMulNoPack's row
// limit (256) comes from
const rowsCases = [9, 64, 256, 512].map((r) => {
  const a = tf.randomNormal([288, r]);
  return [
    `matMul TN ${r} rows: 288x${r} ^T x 288x16384`,
    () => tf.sum(tf.matMul(a, fresh(dcells), true, false)),
  ];
});
const toggled = (name, fn) =>
  [false, true].map((on) => ({
    name,
    fn: async () => {
      setOwnWasmKernels(on);
      await fn();
    },
  }));

// KW's kernel assembly alpha [M, K] @ cells [K, N] (the width-4 ResNet-8's shapes): its two
// gradient products (tfjs: dy b^T and a^T dy, each reading all of dy) against matMulWasm's one
// pass (mm_grads); with the product's forward, common to both
const assemblyCases = [
  [288, 9, 65536],
  [576, 29, 16384],
  [576, 38, 4096],
  [64, 29, 16384],
].map(([M, K, N]) => {
  const a = tf.randomNormal([M, K]);
  const b = tf.randomNormal([K, N]);
  const dy = tf.randomNormal([M, N]);
  const g = tf.grads((x, y) => matMulWasm(x, y) ?? tf.matMul(x, y));
  return [
    `assembly gradients ${M}x${K} @ ${K}x${N} (with its forward)`,
    () => tf.add(...g([a, b], dy).map((t) => tf.sum(t))),
  ];
});

// the assembly's forward alone (a new warehouse operand on every call, as in training, where
// it is transposed per step): on tfjs's BatchMatMul (XNNPACK) against the no-pack kernel
const assemblyForwardCases = [
  [288, 9, 65536],
  [576, 29, 16384],
  [288, 38, 4096],
].map(([M, K, N]) => {
  const a = tf.randomNormal([M, K]);
  const b = tf.randomNormal([K, N]);
  // one row of the output: reading all of it back would cost more than the product
  return [
    `assembly forward ${M}x${K} @ ${K}x${N}`,
    () => tf.slice(matMulWasm(a, fresh(b)), [0, 0], [1, 4]),
  ];
});

// the width-4 ResNet-8's feature maps at its three stages (size, channels)
const STAGE_MAPS = [
  [28, 64],
  [14, 128],
  [7, 256],
];

// a training BatchNorm (batch statistics, running-statistics update) and its three gradients at
// those maps: tfjs's ops and autodiff against bn-wasm.ts's four passes
const bnCases = STAGE_MAPS.map(([hw, ch]) => {
  const x = tf.randomNormal([batch, hw, hw, ch]);
  const dy = tf.randomNormal([batch, hw, hw, ch]);
  const w = tf.randomUniform([ch], 0.5, 1.5);
  const b = tf.randomNormal([ch]);
  const store = new Map([
    ['running_mean', tf.zeros([ch])],
    ['running_var', tf.ones([ch])],
  ]);
  const variable = (name) => ({
    read: () => store.get(name),
    write: (t) => {
      store.get(name).dispose();
      store.set(name, tf.keep(t));
    },
  });
  const vars = (wt, bt) =>
    new Map([
      ['weight', { read: () => wt }],
      ['bias', { read: () => bt }],
      ['running_mean', variable('running_mean')],
      ['running_var', variable('running_var')],
    ]);
  const g = tf.grads((xt, wt, bt) =>
    tf.sum(tf.mul(batchNormLast(xt, vars(wt, bt), '', 1e-5, 0.1, true), dy)),
  );
  return [
    `training BatchNorm and its gradients ${batch}x${hw}x${hw}x${ch}`,
    () => tf.add(...g([x, w, b]).map((t) => tf.sum(t))),
  ];
});

// the attention branches' global average pool and its gradient at those maps: tfjs's two
// one-axis means and their autodiff against gap-wasm.ts's one pass each way (a table of their
// own, and whole steps with it off and on, come first among the form tables below)
const gapCases = STAGE_MAPS.map(([hw, ch]) => {
  const x = tf.randomNormal([batch, hw, hw, ch]);
  const dy = tf.randomNormal([batch, ch]);
  const ops = new TfOps(new Map(), new Map(), true, 'bench');
  const g = tf.grad((xt) => tf.sum(tf.mul(ops.globalAvgPool(xt), dy)));
  return [
    `global average pool and its gradient ${batch}x${hw}x${hw}x${ch}`,
    () => tf.add(tf.sum(ops.globalAvgPool(x)), tf.sum(g(x))),
  ];
});

/**
 * An input gradient on the own kernels at `hw`x`hw`x`ci` <- `co` (k x k, stride s, padding
 * (k - 1) / 2 as PyTorch's): for a kernel shared by the batch (an ordinary conv's
 * Conv2DBackpropInput) and for per-sample kernels (KW's).
 */
function inputGradCases([hw, ci, co, k, s]) {
  const p = (k - 1) / 2;
  const dy = tf.randomNormal([batch, hw / s, hw / s, co]);
  const w = tf.randomNormal([k, k, ci, co]);
  const ks = tf.randomNormal([batch, k, k, ci, co]);
  const inputShape = [batch, hw, hw, ci];
  const pad = [
    [0, 0],
    [p, p],
    [p, p],
    [0, 0],
  ];
  const label = `${k}x${k} stride ${s}, ${batch}x${hw}x${hw}x${ci} <- ${co}`;
  const run = (kernel, inputs, attrs) => () => tf.engine().runKernel(kernel, inputs, attrs);
  return [
    [
      `input gradient, shared kernel, ${label}`,
      run(
        'Conv2DBackpropInput',
        { dy, filter: w },
        { strides: [s, s], pad, dataFormat: 'NHWC', inputShape },
      ),
    ],
    [
      `input gradient, per-sample kernels, ${label}`,
      run(
        'KwWasmConv2DBackpropInput',
        { dy, kernels: ks },
        { strides: [s, s], pads: [p, p], shared: false, inputShape },
      ),
    ],
  ];
}

// stride 1: conv_dx1 against the gradient as a forward conv of dy with the flipped, transposed
// kernel (`setInputGradByForward`), at the three stage maps
const dxCases = STAGE_MAPS.map(([hw, ch]) => [hw, ch, ch, 3, 1]).flatMap(inputGradCases);

// strided: conv_dxs against one forward conv per output phase (`setStridedInputGradByPhases`),
// the width-4 ResNet-8's two stride-2 stage entries (3x3 conv and 1x1 shortcut)
const dxsCases = [
  [28, 64, 128, 3, 2],
  [14, 128, 256, 3, 2],
  [28, 64, 128, 1, 2],
  [14, 128, 256, 1, 2],
].flatMap(inputGradCases);

// a filter gradient on the own kernels: conv_dw reading x and dy in place against conv_dw_blk on
// channel-block copies (`setFilterGradBlocked`), shared kernel (Conv2DBackpropFilter) and
// per-sample kernels (KW's), 3x3 stride 1 and a stride-2 layer
const dwCases = [
  [28, 64, 64, 1],
  [14, 128, 128, 1],
  [7, 256, 256, 1],
  [28, 64, 128, 2],
].flatMap(([hw, ci, co, s]) => {
  const x = tf.randomNormal([batch, hw, hw, ci]);
  const dy = tf.randomNormal([batch, hw / s, hw / s, co]);
  const attrs = { strides: [s, s], pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, ci, co] };
  const label = `3x3 stride ${s}, ${batch}x${hw}x${hw}x${ci} -> ${co}`;
  const perSample = { strides: [s, s], pads: [1, 1], shared: false, kernelSize: [3, 3] };
  return [
    [
      `filter gradient, shared kernel, ${label}`,
      () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs),
    ],
    [
      `filter gradient, per-sample kernels, ${label}`,
      () => tf.engine().runKernel('KwWasmConv2DBackpropFilter', { x, dy }, perSample),
    ],
  ];
});

/**
 * `cases` with `setForm(false)` and `setForm(true)`, interleaved, as a table; leaves it on.
 * Whole training steps (`steps: true`) also print the ratio of CPU times.
 */
async function formTable(header, cases, setForm, steps = false) {
  console.log(`\n${header}`);
  console.log(steps ? '|---|---:|---:|---:|---:|' : '|---|---:|---:|---:|');
  for (const [name, fn] of cases) {
    const [off, on] = await compare(
      [false, true].map((form) => ({
        name,
        fn: async () => {
          setForm(form);
          if (steps) await fn();
          else tf.tidy(() => void fn().dataSync());
        },
      })),
      { rounds, warmup: 1 },
    );
    const digits = steps ? 0 : 1;
    const row = [
      steps ? `${name} (batch ${batch})` : name,
      off.medianMs.toFixed(digits),
      on.medianMs.toFixed(digits),
      `${(off.medianMs / on.medianMs).toFixed(2)}x`,
      ...(steps ? [`${(off.cpuMs / on.cpuMs).toFixed(2)}x`] : []),
    ];
    console.log(`| ${row.join(' | ')} |`);
  }
  setForm(true);
}

await formTable(
  '| case (own kernels on) | global average pool on tfjs ops ms | on gap-wasm.ts ms | speed-up |',
  gapCases,
  setWasmGlobalAvgPool,
);
await formTable(
  '| case (own kernels on) | global average pool on tfjs ops ms | on gap-wasm.ts ms | speed-up | CPU-time speed-up |',
  steps,
  setWasmGlobalAvgPool,
  true,
);
if (only === 'gap') process.exit(0);

await formTable(
  '| case (own kernels on) | conv_dw in place ms | on channel-block copies ms | speed-up |',
  dwCases,
  setFilterGradBlocked,
);
await formTable(
  '| case (own kernels on) | conv_dx1 ms | as a forward conv ms | speed-up |',
  dxCases,
  setInputGradByForward,
);
await formTable(
  '| case (own kernels on) | conv_dxs ms | one forward conv per phase ms | speed-up |',
  dxsCases,
  setStridedInputGradByPhases,
);
await formTable(
  '| case (own kernels on) | assembly forward on XNNPACK ms | on the no-pack kernel ms | speed-up |',
  assemblyForwardCases,
  setAssemblyForwardNoPack,
);
await formTable(
  '| case (own kernels on) | assembly forward on XNNPACK ms | no-pack ms | speed-up | CPU-time speed-up |',
  steps,
  setAssemblyForwardNoPack,
  true,
);

// the same training steps with both stride-1 gradient forms above off (conv_dw in place,
// conv_dx1) and on, then with the strided input gradient by phases off (conv_dxs) and on
await formTable(
  '| case (own kernels on) | gradient forms off ms | on ms | speed-up | CPU-time speed-up |',
  steps,
  (on) => {
    setFilterGradBlocked(on);
    setInputGradByForward(on);
  },
  true,
);
await formTable(
  '| case (own kernels on) | strided input gradient on conv_dxs ms | by phases ms | speed-up | CPU-time speed-up |',
  steps,
  setStridedInputGradByPhases,
  true,
);

console.log('\n| case (fast kernels on) | own kernels off ms | own kernels on ms | speed-up |');
console.log('|---|---:|---:|---:|');
for (const [name, fn] of [...rowsCases, ...assemblyCases, ...bnCases, ...gapCases]) {
  const [off, on] = await compare(
    toggled(name, () => tf.tidy(() => void fn().dataSync())),
    { rounds, warmup: 1 },
  );
  console.log(
    `| ${name} | ${off.medianMs.toFixed(1)} | ${on.medianMs.toFixed(1)} | ${(off.medianMs / on.medianMs).toFixed(2)}x |`,
  );
}
for (const [name, fn] of steps) {
  const [off, on] = await compare(toggled(name, fn), { rounds, warmup: 1 });
  console.log(
    `| ${name} (batch ${batch}) | ${off.medianMs.toFixed(0)} | ${on.medianMs.toFixed(0)} | ${(off.medianMs / on.medianMs).toFixed(2)}x |`,
  );
}
setOwnWasmKernels(true);
