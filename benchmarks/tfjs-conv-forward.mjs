// An ordinary conv's forward on tfjs wasm: the stock Conv2D kernel (XNNPACK, which packs the
// filter again for every new filter tensor) against @kernelwarehouse/tfjs's own `conv_fwd`
// (src/conv-wasm.ts `conv2dForwardWasm`, registered in front of the stock kernel by
// `registerFastWasmKernels`), side by side in one run. Two filters per shape: a new tensor on
// every call (training: the weights change every step) and the same tensor (inference, where
// XNNPACK reuses its packed operator). Shapes: the main job's ResNet-8 width 4 at batch 32 and
// ResNet18's 3x3 stages at batch 1 and 8 (KW_BENCH_SHAPES="N,S,C,O,k,stride;..."). The own kernel
// uses relaxed SIMD's fused multiply-add as `kw train` does (KW_BENCH_FMA=off: unfused), and runs
// 3x3 stride-1 convs as Winograd F(2x2, 3x3) as it does by default (KW_BENCH_WINOGRAD=off: the
// direct kernel; the GFLOP/s column counts the direct multiply-adds either way).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:conv-forward   (KW_BENCH_ROUNDS=5)
import { ownWasmKernelsStatus, setOwnWasmKernels, setWasmWinograd } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { compare, machine, simdPeak, wasmAsKwTrain } from './harness.mjs';

await wasmAsKwTrain(); // KW_BENCH_FMA=off: the unfused kernels
const winograd = process.env.KW_BENCH_WINOGRAD !== 'off';
setWasmWinograd(winograd);
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const shapes = (
  process.env.KW_BENCH_SHAPES ??
  '32,28,64,64,3,1;32,14,128,128,3,1;32,7,256,256,3,1;32,28,64,128,3,2;32,28,64,128,1,2;' +
    '1,56,64,64,3,1;1,28,128,128,3,1;1,14,256,256,3,1;1,7,512,512,3,1;8,56,64,64,3,1;8,14,256,256,3,1'
)
  .split(';')
  .map((s) => s.split(',').map(Number));

const gflops = (r) => (r === undefined ? 'not available' : `${r.toFixed(1)} GFLOP/s`);
const status = ownWasmKernelsStatus();
console.log(`# ordinary conv forward, tfjs wasm: XNNPACK vs own kernel\n`);
console.log(
  `${await machine()}; own kernels: ${status.active ? 'on' : `off (${status.reason})`}, fused multiply-add: ${status.fma}, Winograd for 3x3 stride 1: ${winograd ? 'on (GFLOP/s on the direct multiply-adds)' : 'off'}; ${rounds} rounds, medians\n`,
);
console.log(
  `4-lane WebAssembly SIMD ceiling on one core (register-resident, no loads): multiply + add ${gflops(simdPeak(false))}, relaxed multiply-add ${gflops(simdPeak(true))}\n`,
);
console.log(
  '| N | size | C -> O | k, stride | filter | XNNPACK ms | own ms | speed-up | GFLOP/s (own) | max rel diff |',
);
console.log('|---:|---:|---|---|---|---:|---:|---:|---:|---:|');
for (const [N, S, C, O, k, s] of shapes) {
  const x = tf.randomNormal([N, S, S, C]);
  const w = tf.randomNormal([k, k, C, O]);
  const p = (k - 1) / 2;
  const pad = [
    [0, 0],
    [p, p],
    [p, p],
    [0, 0],
  ];
  for (const fresh of [true, false]) {
    const filter = () => (fresh ? tf.mul(w, 1) : w);
    const run = (own) => () => {
      setOwnWasmKernels(own);
      return tf.tidy(() => void tf.conv2d(x, filter(), s, pad).dataSync());
    };
    const r = await compare(
      [
        { name: 'xnnpack', fn: run(false) },
        { name: 'own', fn: run(true) },
      ],
      { rounds },
    );
    const [a, b] = tf.tidy(() => {
      setOwnWasmKernels(false);
      const ya = tf.conv2d(x, w, s, pad);
      setOwnWasmKernels(true);
      return [ya, tf.conv2d(x, w, s, pad)];
    });
    const diff = tf.tidy(
      () => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(a)).dataSync()[0],
    );
    tf.dispose([a, b]);
    const Ho = Math.floor((S + 2 * p - k) / s) + 1;
    const gflop = (2 * N * Ho * Ho * O * C * k * k) / 1e9;
    console.log(
      `| ${N} | ${S} | ${C} -> ${O} | ${k}x${k}, ${s} | ${fresh ? 'new each call' : 'same'} | ${r[0].medianMs.toFixed(2)} | ${r[1].medianMs.toFixed(2)} | ${(r[0].medianMs / r[1].medianMs).toFixed(2)} | ${((gflop / r[1].medianMs) * 1e3).toFixed(1)} | ${diff.toExponential(1)} |`,
    );
  }
  tf.dispose([x, w]);
}
setOwnWasmKernels(true);
