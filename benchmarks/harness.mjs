// Side-by-side timing for noisy shared machines: the cases run interleaved, round after round,
// so drifting load hits all of them alike; we report per-case medians and ratios to a baseline.
import { availableParallelism } from 'node:os';

/**
 * @param {{ name: string, fn: () => unknown | Promise<unknown>, ideal?: number }[]} cases
 *   the first case is the baseline; `ideal` is the MAC-ideal ratio to print beside the measured one
 * @param {{ rounds?: number, warmup?: number, minMs?: number }} [opts]
 * @returns {Promise<{ name: string, medianMs: number, ratio: number, ideal?: number, samples: number[] }[]>}
 */
export async function compare(cases, opts = {}) {
  const rounds = opts.rounds ?? 7;
  const warmup = opts.warmup ?? 1;
  const samples = cases.map(() => []);
  const cpu = cases.map(() => []);
  for (let r = 0; r < warmup + rounds; r++) {
    for (let i = 0; i < cases.length; i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await cases[i].fn();
      const dt = performance.now() - t0;
      const cu = process.cpuUsage(c0);
      if (r >= warmup) {
        samples[i].push(dt);
        cpu[i].push((cu.user + cu.system) / 1000);
      }
    }
  }
  const base = median(samples[0]);
  const cpuBase = median(cpu[0]);
  return cases.map((c, i) => ({
    name: c.name,
    medianMs: median(samples[i]),
    ratio: median(samples[i]) / base,
    ideal: c.ideal,
    samples: samples[i],
    // the process's CPU time (all its threads): time the case waited for a core is not in it
    cpuMs: median(cpu[i]),
    cpuRatio: median(cpu[i]) / cpuBase,
  }));
}

/** The ResNet18 models of the ORT benchmarks: [label, budget] (null: the plain model). */
export const RESNET18_MODELS = [
  ['plain', null],
  ['KW 1x', 1],
  ['KW 1/2x', 0.5],
  ['KW 1/4x', 0.25],
];

/** Thread counts from `KW_BENCH_THREADS` (default: 1 and the machine's cores), each once. */
export function benchThreads() {
  return (process.env.KW_BENCH_THREADS ?? `1,${availableParallelism()}`)
    .split(',')
    .map(Number)
    .filter((t, i, all) => all.indexOf(t) === i);
}

/** The median of `xs` (the mean of the two middle values for an even count). */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Print the result of {@link compare} as a markdown table. */
export function printTable(title, rows) {
  console.log(`\n### ${title}\n`);
  console.log('| case | median ms | measured ratio | MAC-ideal ratio | measured / ideal |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) {
    const ideal = r.ideal === undefined ? '' : r.ideal.toFixed(2);
    const over = r.ideal === undefined ? '' : (r.ratio / r.ideal).toFixed(2);
    console.log(
      `| ${r.name} | ${r.medianMs.toFixed(2)} | ${r.ratio.toFixed(2)} | ${ideal} | ${over} |`,
    );
  }
}

/**
 * tfjs on wasm as `kw train` runs it: the own conv kernels with relaxed SIMD's fused
 * multiply-add (`chooseBackend`'s `fusedMultiplyAdd`; on Node 20 it switches V8's flag on), unless `KW_BENCH_FMA=off`
 * (the unfused kernels, as `kw train --fma off`). Returns a few words for the report.
 */
export async function wasmAsKwTrain() {
  const { chooseBackend, ownWasmKernelsStatus } = await import('@kernelwarehouse/tfjs');
  const fusedMultiplyAdd = process.env.KW_BENCH_FMA !== 'off';
  await chooseBackend({ force: 'wasm', report: null, fusedMultiplyAdd });
  const s = ownWasmKernelsStatus();
  return `tfjs wasm own kernels ${s.active ? (s.fma ? 'on, fused multiply-add' : 'on, unfused') : `off (${s.reason})`}`;
}

/**
 * The ceiling of 4-lane WebAssembly SIMD on this machine: `chains` independent register
 * accumulators each updated `iters` times by `acc = acc * b + c` (an f32x4 multiply and add, or
 * one relaxed multiply-add), no memory traffic; GFLOP/s of the best of 5 runs. A hand-written
 * module (one exported function `f(iters)` returning a lane of the sum), so the figure does not
 * depend on the package.
 */
export function simdCeiling(chains, fused) {
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

/**
 * The 4-lane WebAssembly SIMD ceiling of one core: the best of {@link simdCeiling} over 8-13
 * register chains, GFLOP/s; undefined where the engine lacks the instruction (relaxed SIMD off).
 * @param {boolean} fused relaxed multiply-add (true) or f32x4 multiply and add
 */
export function simdPeak(fused) {
  const rates = [8, 10, 12, 13].map((c) => simdCeiling(c, fused));
  return rates[0] === undefined ? undefined : Math.max(...rates);
}

/**
 * The same ceiling with `threads` worker threads running it at once (started together at a
 * barrier): the sum of their rates, GFLOP/s. On a machine whose cores share execution units (SMT
 * siblings under a hypervisor) or slow each other down, this is below `threads` times one core's.
 * V8's flags are the process's, so relaxed SIMD is on in the workers when it is on here.
 * @param {number} threads
 * @param {boolean} fused
 */
export async function simdPeakParallel(threads, fused) {
  if (threads === 1) return simdPeak(fused);
  const { Worker } = await import('node:worker_threads');
  const gate = new Int32Array(new SharedArrayBuffer(4));
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.harness).then(({ simdPeak }) => {
      Atomics.add(workerData.gate, 0, 1);
      while (Atomics.load(workerData.gate, 0) < workerData.threads) {}
      parentPort.postMessage(simdPeak(workerData.fused) ?? null);
    });`;
  const rates = await Promise.all(
    Array.from({ length: threads }, () => {
      const w = new Worker(code, {
        eval: true,
        workerData: { harness: import.meta.url, gate, threads, fused },
      });
      return new Promise((resolve, reject) => {
        w.once('message', (r) => {
          w.terminate();
          resolve(r);
        });
        w.once('error', reject);
      });
    }),
  );
  return rates.includes(null) ? undefined : rates.reduce((a, b) => a + b, 0);
}

/** One line describing the machine, for RESULTS.md. */
export async function machine() {
  const os = await import('node:os');
  return `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

/**
 * The main job's model as a spec: ResNet-8 for 1x28x28 images, 10 classes, `width` (default 4),
 * at a KW budget (null or absent: plain).
 * @param {{ budget?: string | null, width?: number }} opts
 */
export async function resnet8Spec(opts = {}) {
  const { createModel } = await import('@kernelwarehouse/zoo');
  return createModel('resnet8_cifar', {
    inputShape: [1, 28, 28],
    classes: 10,
    width: opts.width ?? 4,
    ...(opts.budget ? { budget: opts.budget } : {}),
  });
}

/**
 * One training step of the main job's model (ResNet-8 for 1x28x28 images, 10 classes) at a KW
 * budget (null: plain), as `@kernelwarehouse/tfjs`'s Trainer takes it: softmax cross-entropy on
 * the logits, gradients of every trainable variable, one Adam update; KW at tau 0.5. The backend
 * must already be chosen. Returns an async function that runs one step on a fixed random batch.
 * @param {{ budget?: string | null, width?: number, batch?: number }} opts
 */
export async function resnet8TrainStep(opts = {}) {
  const { initWeights } = await import('@kernelwarehouse/core');
  const { buildModel, FusedAdamOptimizer, setTemperature } = await import('@kernelwarehouse/tfjs');
  const tf = await import('@tensorflow/tfjs');
  const batch = opts.batch ?? 32;
  const spec = await resnet8Spec(opts);
  const model = buildModel(spec, initWeights(spec, { seed: 0 }));
  if (opts.budget) setTemperature(model, 0.5);
  // the Trainer's Adam (bit-identical to tf.train.adam, fused into one pass per variable on wasm)
  const optimizer = new FusedAdamOptimizer(1e-3);
  const xb = tf.randomUniform([batch, 28, 28, 1]);
  const yb = tf.oneHot(tf.randomUniform([batch], 0, 10, 'int32'), 10);
  return async () => {
    const loss = tf.tidy(() =>
      optimizer.minimize(
        () => tf.losses.softmaxCrossEntropy(yb, model.apply(xb, { training: true })),
        true,
      ),
    );
    await loss.data();
    loss.dispose();
  };
}

/**
 * Milliseconds between the steps of one short `Trainer.fit` of `spec` on random 28x28x1 images
 * (`steps + 2` steps; the first two, which include starting shard workers, are left out), with
 * `shards` data-parallel shards (in worker threads when `shards > 1`). The backend must already be
 * chosen.
 * @param {unknown} spec
 * @param {{ batch: number, shards?: number, shardWorkers?: boolean, steps?: number }} opts
 */
export async function trainerStepTimes(spec, opts) {
  const { Trainer } = await import('@kernelwarehouse/tfjs');
  const tf = await import('@tensorflow/tfjs');
  const { batch } = opts;
  const shards = opts.shards ?? 1;
  const n = batch * ((opts.steps ?? 6) + 2);
  const x = tf.randomUniform([n, 28, 28, 1], 0, 1, 'float32', 1);
  const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
  const stamps = [];
  const t = new Trainer({
    spec,
    epochs: 1,
    batchSize: batch,
    shards,
    shardWorkers: opts.shardWorkers ?? shards > 1,
    bnPasses: 0,
    onEvent: (e) => {
      if (e.phase === 'train') stamps.push(performance.now());
    },
  });
  await t.fit({ x, labels });
  t.dispose();
  x.dispose();
  return stamps.slice(2).map((s, i) => s - stamps[i + 1]);
}
