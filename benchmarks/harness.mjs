// Side-by-side timing for noisy shared machines: the cases run interleaved, round after round,
// so drifting load hits all of them alike; we report per-case medians and ratios to a baseline.

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
  const { buildModel, setTemperature } = await import('@kernelwarehouse/tfjs');
  const tf = await import('@tensorflow/tfjs');
  const batch = opts.batch ?? 32;
  const spec = await resnet8Spec(opts);
  const model = buildModel(spec, initWeights(spec, { seed: 0 }));
  if (opts.budget) setTemperature(model, 0.5);
  const optimizer = tf.train.adam(1e-3);
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
