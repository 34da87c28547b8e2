// An ordinary conv's forward on tfjs wasm: the stock Conv2D kernel (XNNPACK, which packs the
// filter again for every new filter tensor) against @kernelwarehouse/tfjs's own `conv_fwd`
// (src/conv-wasm.ts `conv2dForwardWasm`, registered in front of the stock kernel by
// `registerFastWasmKernels`), side by side in one run. Two filters per shape: a new tensor on
// every call (training: the weights change every step) and the same tensor (inference, where
// XNNPACK reuses its packed operator). Shapes: the main job's ResNet-8 width 4 at batch 32 and
// ResNet18's 3x3 stages at batch 1 and 8 (KW_BENCH_SHAPES="N,S,C,O,k,stride;..."). The own kernel
// uses relaxed SIMD's fused multiply-add as `kw train` does (KW_BENCH_FMA=off: unfused).
// Run: pnpm --filter @kernelwarehouse/benchmarks bench:conv-forward   (KW_BENCH_ROUNDS=5)
import { ownWasmKernelsStatus, setOwnWasmKernels } from '@kernelwarehouse/tfjs';
import * as tf from '@tensorflow/tfjs';
import { compare, machine, wasmAsKwTrain } from './harness.mjs';

await wasmAsKwTrain(); // KW_BENCH_FMA=off: the unfused kernels
const rounds = Number(process.env.KW_BENCH_ROUNDS ?? 5);
const shapes = (
  process.env.KW_BENCH_SHAPES ??
  '32,28,64,64,3,1;32,14,128,128,3,1;32,7,256,256,3,1;32,28,64,128,3,2;32,28,64,128,1,2;' +
    '1,56,64,64,3,1;1,28,128,128,3,1;1,14,256,256,3,1;1,7,512,512,3,1;8,56,64,64,3,1;8,14,256,256,3,1'
)
  .split(';')
  .map((s) => s.split(',').map(Number));

/**
 * The ceiling of 4-lane WebAssembly SIMD on this machine: `chains` independent register
 * accumulators each updated `iters` times by `acc = acc * b + c` (an f32x4 multiply and add, or
 * one relaxed multiply-add), no memory traffic; GFLOP/s of the best of 5 runs. A hand-written
 * module (one exported function `f(iters)` returning a lane of the sum), so the figure does not
 * depend on the package.
 */
function simdCeiling(chains, fused) {
  const uleb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const simd = (op) => [0xfd, ...uleb(op)];
  const [B, C, A0] = [1, 2, 3]; // locals: 0 = iters (param), 1 = b, 2 = c, 3.. = accumulators
  const splat = (v) => [0x43, ...new Uint8Array(new Float32Array([v]).buffer), ...simd(0x13)];
  const code = [...splat(0.999), 0x21, B, ...splat(1e-3), 0x21, C];
  for (let q = 0; q < chains; q++) code.push(...splat(1), 0x21, A0 + q);
  code.push(0x03, 0x40); // loop
  for (let q = 0; q < chains; q++) {
    if (fused) code.push(0x20, A0 + q, 0x20, B, 0x20, C, ...simd(0x105), 0x21, A0 + q);
    else code.push(0x20, A0 + q, 0x20, B, ...simd(0xe6), 0x20, C, ...simd(0xe4), 0x21, A0 + q);
  }
  // iters -= 1, again while it is not 0
  code.push(0x20, 0, 0x41, 1, 0x6b, 0x22, 0, 0x0d, 0, 0x0b);
  // keep the accumulators live: return their sum's lane 0 (a dropped value may be optimized
  // away with the whole loop body)
  code.push(0x20, A0);
  for (let q = 1; q < chains; q++) code.push(0x20, A0 + q, ...simd(0xe4));
  code.push(...simd(0x1f), 0, 0x0b);
  const body = [1, ...uleb(chains + 2), 0x7b, ...code];
  const func = [...uleb(body.length), ...body];
  const bytes = new Uint8Array([
    ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...[1, 6, 1, 0x60, 1, 0x7f, 1, 0x7d], // type (i32) -> f32
    ...[3, 2, 1, 0],
    ...[7, 5, 1, 1, 0x66, 0, 0], // export "f"
    ...[10, ...uleb(func.length + 1), 1, ...func],
  ]);
  if (!WebAssembly.validate(bytes)) return undefined;
  const f = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.f;
  const iters = 2e7;
  if (!Number.isFinite(f(1e5))) throw new Error('simdCeiling: the loop diverged');
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    f(iters);
    best = Math.min(best, performance.now() - t);
  }
  return (iters * chains * 8) / best / 1e6;
}

const ceiling = (fused) => {
  const rates = [8, 10, 12, 13].map((c) => simdCeiling(c, fused));
  return rates[0] === undefined ? 'not available' : `${Math.max(...rates).toFixed(1)} GFLOP/s`;
};

const status = ownWasmKernelsStatus();
console.log(`# ordinary conv forward, tfjs wasm: XNNPACK vs own kernel\n`);
console.log(
  `${await machine()}; own kernels: ${status.active ? 'on' : `off (${status.reason})`}, fused multiply-add: ${status.fma}; ${rounds} rounds, medians\n`,
);
console.log(
  `4-lane WebAssembly SIMD ceiling on one core (register-resident, no loads): multiply + add ${ceiling(false)}, relaxed multiply-add ${ceiling(true)}\n`,
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
