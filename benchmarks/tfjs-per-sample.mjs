// tfjs has no grouped convolution, so a dynamic conv (one kernel per sample) needs a workaround.
// This measures the options side by side on one backend, forward and forward + gradients,
// against ONE conv with a shared kernel (what a plain layer costs), and checks each option
// against the per-sample loop (max relative error):
//   library     @kernelwarehouse/tfjs's perSampleConv: on wasm its own per-sample kernels
//               (conv-wasm.ts: WebAssembly SIMD on the tensors in the tfjs heap, no
//               kernel packing), elsewhere the loop below
//   loop        split the batch, one conv2d per sample, concat (the stock-op route; what the
//               library did on wasm before its own kernels)
//   loop, kernels reused   the same per-sample loop over kernel tensors it has seen before
//               (forward only): the wasm backend then reuses the XNNPACK operator it built for
//               each kernel, so the difference to `loop` is the per-call cost of building an
//               operator (transposing and packing the kernel). Training cannot reuse them: the
//               kernels are new tensors every step (and `tf.unstack` makes new ones every call).
//   im2col-dw   patches by a depthwise conv with a constant one-hot kernel (channel multiplier
//               kh*kw), then one batched matMul with the per-sample kernels
//   im2col-pad  patches by pad + kh*kw strided slices + concat, then one batched matMul
// Backend: KW_BENCH_BACKEND (wasm default); shapes: KW_BENCH_SHAPES="N,S,C;N,S,C"; options:
// KW_BENCH_OPTIONS (all).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:per-sample
import { Rng } from '@kernelwarehouse/core';
import { chooseBackend, perSampleConv } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { compare, machine } from './harness.mjs';

const backend = process.env.KW_BENCH_BACKEND ?? 'wasm';
const choice = await chooseBackend({ force: backend, report: null });
const shapes = (process.env.KW_BENCH_SHAPES ?? '8,16,32;8,56,64')
  .split(';')
  .map((s) => s.split(',').map(Number));
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 3);
// which options besides the shared conv (KW_BENCH_OPTIONS=loop skips the im2col ones, which
// are slow to check at large shapes)
const OPTIONS = (process.env.KW_BENCH_OPTIONS ?? 'library,loop,im2col-dw,im2col-pad').split(',');
const K = 3; // 3x3, stride 1, padding 1

// kernels: [N, K, K, C, O] (per-sample HWIO)
const loop = (x, k) => {
  const n = x.shape[0];
  const xs = tf.split(x, n, 0);
  const ks = tf.unstack(k);
  return tf.concat(
    xs.map((xi, i) => tf.conv2d(xi, ks[i], 1, 'same')),
    0,
  );
};
const matmulPatches = (patches, k, order) => {
  const [n, h, w] = patches.shape;
  const [, kh, kw, c, o] = k.shape;
  // patch channel order: 'cj' = c * (kh*kw) + j (depthwise output), 'jc' = j * c + c (slices)
  const kk = order === 'cj' ? tf.transpose(k, [0, 3, 1, 2, 4]) : k;
  const y = tf.matMul(
    tf.reshape(patches, [n, h * w, kh * kw * c]),
    tf.reshape(kk, [n, kh * kw * c, o]),
  );
  return tf.reshape(y, [n, h, w, o]);
};
const oneHot = (c) => {
  const d = new Float32Array(K * K * c * K * K);
  for (let j = 0; j < K * K; j++)
    for (let ch = 0; ch < c; ch++) d[j * c * K * K + ch * K * K + j] = 1;
  return tf.tensor4d(d, [K, K, c, K * K]);
};
const im2colDw = (eye) => (x, k) => matmulPatches(tf.depthwiseConv2d(x, eye, 1, 'same'), k, 'cj');
const im2colPad = (x, k) => {
  const [n, h, w, c] = x.shape;
  const p = tf.pad(x, [
    [0, 0],
    [1, 1],
    [1, 1],
    [0, 0],
  ]);
  const parts = [];
  for (let i = 0; i < K; i++)
    for (let j = 0; j < K; j++) parts.push(tf.slice(p, [0, i, j, 0], [n, h, w, c]));
  return matmulPatches(tf.concat(parts, 3), k, 'jc');
};

console.log(
  `machine: ${await machine()}; tfjs backend: ${choice.backend}; ${rounds} rounds (median)`,
);
for (const [N, S, C] of shapes) {
  const rng = new Rng(N * S + C);
  const x = tf.tensor4d(rng.normalArray(N * S * S * C), [N, S, S, C]);
  const k = tf.tensor(
    rng.normalArray(N * K * K * C * C).map((v) => v * 0.05),
    [N, K, K, C, C],
  );
  const shared = tf.tensor4d(
    rng.normalArray(K * K * C * C).map((v) => v * 0.05),
    [K, K, C, C],
  );
  const eye = oneHot(C);
  const geometry = { groups: 1, stride: [1, 1], padding: [1, 1], dilation: [1, 1] };
  const options = [
    ['library', (a, b) => perSampleConv(a, b, geometry)],
    ['loop', loop],
    ['im2col-dw', im2colDw(eye)],
    ['im2col-pad', im2colPad],
  ].filter(([name]) => OPTIONS.includes(name));
  // correctness first: each option against the loop, forward and both gradients
  // (typed arrays are read outside tf.tidy: tidy walks a returned container element by element)
  const values = (ts) => {
    const out = ts.map((t) => t.dataSync());
    tf.dispose(ts);
    return out;
  };
  const [ref] = values([tf.tidy(() => loop(x, k))]);
  const gradOf = (f) => tf.grads((a, b) => tf.sum(tf.square(f(a, b))));
  const refGrads = values(tf.tidy(() => gradOf(loop)([x, k])));
  const errs = {};
  const rel = (a, b) => {
    let num = 0;
    let den = 0;
    for (let i = 0; i < a.length; i++) {
      num = Math.max(num, Math.abs(a[i] - b[i]));
      den = Math.max(den, Math.abs(b[i]));
    }
    return num / den;
  };
  for (const [name, f] of options) {
    let gradErr = Number.NaN;
    const fwdErr = rel(values([tf.tidy(() => f(x, k))])[0], ref);
    try {
      gradErr = tf.tidy(() => {
        const g = gradOf(f)([x, k]).map((t) => t.dataSync());
        return Math.max(rel(g[0], refGrads[0]), rel(g[1], refGrads[1]));
      });
    } catch (e) {
      gradErr = `no ${choice.backend} gradient (${/multiplier/.test(e.message) ? `channel multiplier ${K * K}` : String(e.message).slice(0, 50)})`;
    }
    errs[name] = [fwdErr, gradErr];
  }
  const timed = (f, train) => async () => {
    const out = tf.tidy(() => (train ? gradOf(f)([x, k]) : [f(x, k)]));
    await Promise.all(out.map((t) => t.data()));
    tf.dispose(out);
  };
  const reused = tf.unstack(k);
  const loopReused = (a) => {
    const xs = tf.split(a, a.shape[0], 0);
    return tf.concat(
      xs.map((xi, i) => tf.conv2d(xi, reused[i], 1, 'same')),
      0,
    );
  };
  const fwd = [
    { name: 'one conv, shared kernel', fn: timed((a) => tf.conv2d(a, shared, 1, 'same'), false) },
    { name: 'loop, kernels reused', fn: timed(loopReused, false) },
    ...options.map(([name, f]) => ({ name, fn: timed(f, false) })),
  ];
  const trainable = options.filter(([name]) => typeof errs[name][1] === 'number');
  const bwd = [
    {
      name: 'one conv, shared kernel',
      fn: async () => {
        const g = tf.grads((a, b) => tf.sum(tf.square(tf.conv2d(a, b, 1, 'same'))))([x, shared]);
        await Promise.all(g.map((t) => t.data()));
        tf.dispose(g);
      },
    },
    ...trainable.map(([name, f]) => ({ name, fn: timed(f, true) })),
  ];
  const f = await compare(fwd, { rounds });
  const b = await compare(bwd, { rounds });
  console.log(
    `\n### per-sample 3x3 conv, batch ${N}, ${S}x${S}x${C} -> ${C} (${choice.backend})\n`,
  );
  console.log(
    '| option | forward ms | forward / shared conv | fwd+grads ms | fwd+grads / shared conv | max rel err fwd | max rel err grads |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of f) {
    const g = b.find((t) => t.name === r.name);
    const e = errs[r.name];
    const fmt = (v) => (typeof v === 'number' ? v.toExponential(1) : v);
    console.log(
      `| ${r.name} | ${r.medianMs.toFixed(1)} | ${r.ratio.toFixed(2)} | ${g ? g.medianMs.toFixed(1) : '-'} | ${g ? g.ratio.toFixed(2) : '-'} | ${e ? fmt(e[0]) : ''} | ${e ? fmt(e[1]) : ''} |`,
    );
  }
  tf.dispose([x, k, shared, eye, ...reused]);
}
