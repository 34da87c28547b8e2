import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  countParams,
  formatBudget,
  initWeights,
  type ModelSpec,
  parseBudget,
  saveWeights,
} from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import {
  buildModel,
  chooseBackend,
  exportWeights,
  temperatureCallback,
} from '@kernelwarehouse/tfjs';
import { createModel, getModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { datasetDir, type ImageSet, loadIdxFolder } from '../data.js';
import { writeFileAtomic } from '../fsio.js';
import { type Io, table, UsageError } from '../io.js';
import { lineChart } from '../svg.js';

/** One trained variant's results. */
export interface TrainResult {
  label: string;
  budget: number | null;
  params: number;
  testAccuracy: number;
  trainSeconds: number;
  imagesPerSecond: number;
  finalLoss: number;
  onnxAgreement: number;
  onnxMaxRelError: number;
  /** Training loss and tau per step (x = fractional epoch). */
  curve: { epoch: number; loss: number; tau: number }[];
}

function tensors(set: ImageSet, from: number, n: number, classes: number) {
  const px = new Float32Array(n * set.height * set.width);
  for (let i = 0; i < px.length; i++) px[i] = set.images[from * set.height * set.width + i]! / 255;
  const labels = Array.from(set.labels.subarray(from, from + n));
  return {
    x: tf.tensor4d(px, [n, set.height, set.width, 1]),
    y: tf.oneHot(tf.tensor1d(labels, 'int32'), classes) as tf.Tensor2D,
    nchw: px,
    labels,
  };
}

const fmtTime = (s: number) =>
  s >= 60
    ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`
    : `${s.toFixed(1)}s`;

/**
 * `kw train [--model resnet8_cifar] [--dataset mnist|fashion-mnist] [--data-dir DIR] [--budgets plain,1x,1/2x]
 * [--epochs 2] [--train-size 2000] [--test-size 500] [--batch 64] [--lr 0.005] [--temp-epochs E]
 * [--backend wasm|cpu] [--seed 0] [--out runs/NAME]`: trains the plain backbone and KernelWarehouse
 * variants on real data, exports each to ONNX, checks ONNX against tfjs, and writes a run folder.
 */
export async function trainCommand(args: string[], io: Io): Promise<number> {
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args,
      options: {
        model: { type: 'string', default: 'resnet8_cifar' },
        dataset: { type: 'string', default: 'mnist' },
        'data-dir': { type: 'string' },
        budgets: { type: 'string', default: 'plain,1x,1/2x' },
        epochs: { type: 'string', default: '2' },
        'train-size': { type: 'string', default: '2000' },
        'test-size': { type: 'string', default: '500' },
        batch: { type: 'string', default: '64' },
        lr: { type: 'string', default: '0.005' },
        'temp-epochs': { type: 'string' },
        backend: { type: 'string', default: 'wasm' },
        seed: { type: 'string', default: '0' },
        out: { type: 'string' },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!);
  }
  const num = (k: string, min: number, int = true) => {
    const x = Number(v[k]);
    if (!Number.isFinite(x) || x < min || (int && !Number.isInteger(x)))
      throw new UsageError(
        `--${k} must be ${int ? 'an integer' : 'a number'} >= ${min}; found "${v[k]}"`,
      );
    return x;
  };
  const epochs = num('epochs', 1);
  const trainSize = num('train-size', 1);
  const testSize = num('test-size', 1);
  const batch = num('batch', 2);
  const lr = num('lr', 0, false);
  const seed = num('seed', 0);
  const tempEpochs = v['temp-epochs'] === undefined ? epochs / 2 : num('temp-epochs', 0, false);
  const modelId = v.model as string;
  try {
    getModel(modelId);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^\[\w+\] /, ''));
  }
  const budgets = (v.budgets as string).split(',').map((b) => {
    if (b === 'plain') return null;
    try {
      return parseBudget(b);
    } catch {
      throw new UsageError(
        `bad budget "${b}" in --budgets; accepted: plain, 1x, 1/2x, 2x, ... (comma separated)`,
      );
    }
  });
  const backend = v.backend as string;
  if (backend !== 'wasm' && backend !== 'cpu')
    throw new UsageError(`--backend must be wasm or cpu; found "${backend}"`);

  const dir = datasetDir(v.dataset as string, v['data-dir'] as string | undefined);
  const train = loadIdxFolder(dir, 'train');
  const test = loadIdxFolder(dir, 't10k');
  if (trainSize > train.count || testSize > test.count) {
    throw new UsageError(
      `--train-size/--test-size exceed the data set (${train.count} train, ${test.count} test images)`,
    );
  }
  const classes = Math.max(...train.labels) + 1;
  const out =
    (v.out as string | undefined) ??
    join('runs', `${modelId}-${v.dataset}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });
  await chooseBackend({
    force: backend === 'wasm' ? 'wasm' : 'cpu',
    report: (l) => io.err(`${l}\n`),
  });

  const tr = tensors(train, 0, trainSize, classes);
  const te = tensors(test, 0, testSize, classes);
  const stepsPerEpoch = Math.ceil(trainSize / batch);
  io.err(
    `kw train: ${modelId} on ${v.dataset} (${trainSize} train / ${testSize} test images, ${train.height}x${train.width}x1), ${epochs} epochs, batch ${batch}, tau 1 -> 0 over ${tempEpochs} epochs, backend ${tf.getBackend()}\n`,
  );
  const results: TrainResult[] = [];
  const specs: ModelSpec[] = [];
  for (const budget of budgets) {
    const label = budget === null ? 'plain' : `KW ${formatBudget(budget)}`;
    const spec = createModel(modelId, {
      budget,
      classes,
      inputShape: [1, train.height, train.width],
    });
    specs.push(spec);
    const model = buildModel(spec, initWeights(spec, { seed }));
    model.compile({
      optimizer: tf.train.adam(lr),
      loss: 'categoricalCrossentropy',
      metrics: ['accuracy'],
    });
    const t0 = performance.now();
    let lastLoss = Number.NaN;
    const curve: TrainResult['curve'] = [];
    let tau = 1;
    const progress = new tf.CustomCallback({
      onBatchEnd: async (step, logs) => {
        lastLoss = logs?.loss ?? lastLoss;
        curve.push({ epoch: progressEpoch + (step + 1) / stepsPerEpoch, loss: lastLoss, tau });
        const done = step + 1;
        const el = (performance.now() - t0) / 1000;
        const seen = (progressEpoch * stepsPerEpoch + done) * batch;
        const ips = seen / el;
        const eta =
          ((epochs * stepsPerEpoch - (progressEpoch * stepsPerEpoch + done)) * batch) / ips;
        const width = 24;
        const bar = '#'.repeat(Math.round((done / stepsPerEpoch) * width)).padEnd(width, '.');
        const line = `${label.padEnd(8)} epoch ${progressEpoch + 1}/${epochs} [${bar}] ${done}/${stepsPerEpoch} loss ${lastLoss.toFixed(4)} acc ${(logs?.acc ?? 0).toFixed(3)} tau ${tau.toFixed(3)} ${ips.toFixed(0)} img/s ETA ${fmtTime(eta)}`;
        if ((process.stderr as { isTTY?: boolean }).isTTY) io.err(`\r${line}`);
        else if (done === stepsPerEpoch) io.err(`${line}\n`);
      },
      onEpochEnd: async () => {
        if ((process.stderr as { isTTY?: boolean }).isTTY) io.err('\n');
        progressEpoch++;
      },
    });
    let progressEpoch = 0;
    // model.fit takes the softmax of logits through the loss: wrap the logits model
    const probs = tf.model({
      inputs: model.inputs,
      outputs: tf.layers.softmax().apply(model.outputs[0]!) as tf.SymbolicTensor,
    });
    probs.compile({
      optimizer: tf.train.adam(lr),
      loss: 'categoricalCrossentropy',
      metrics: ['accuracy'],
    });
    await probs.fit(tr.x, tr.y, {
      epochs,
      batchSize: batch,
      shuffle: true,
      verbose: 0,
      callbacks: [
        temperatureCallback(
          model,
          { epochs: tempEpochs, itersPerEpoch: stepsPerEpoch },
          (t) => (tau = Math.max(0, t)),
        ),
        progress,
      ],
    });
    const trainSeconds = (performance.now() - t0) / 1000;
    // test accuracy and logits at tau = 0 (temperatureCallback sets it at the end of training)
    const logitsT = model.predict(te.x, { batchSize: 256 }) as tf.Tensor;
    const logits = logitsT.dataSync() as Float32Array;
    logitsT.dispose();
    const argmax = (a: ArrayLike<number>, i: number) => {
      let best = 0;
      for (let k = 1; k < classes; k++) if (a[i * classes + k]! > a[i * classes + best]!) best = k;
      return best;
    };
    let correct = 0;
    for (let i = 0; i < testSize; i++) if (argmax(logits, i) === te.labels[i]) correct++;
    // weights out, ONNX out, and the ONNX model checked against tfjs on the whole test set
    const weights = exportWeights(model);
    const slug = label.replace(/[^a-zA-Z0-9]+/g, '-').replace(/-$/, '');
    writeFileAtomic(join(out, `${slug}.safetensors`), saveWeights(spec, weights));
    const onnx = toOnnx(spec, weights);
    writeFileAtomic(join(out, `${slug}.onnx`), onnx);
    const session = await createSession(onnx);
    let same = 0;
    let maxAbs = 0;
    let scale = 1e-6;
    const hw = train.height * train.width;
    for (let s = 0; s < testSize; s += 250) {
      const n = Math.min(250, testSize - s);
      const [y] = await runSession(session, {
        shape: [n, 1, train.height, train.width],
        data: te.nchw.subarray(s * hw, (s + n) * hw),
      });
      for (let i = 0; i < n; i++) {
        if (argmax(y!.data, i) === argmax(logits, s + i)) same++;
        for (let k = 0; k < classes; k++) {
          maxAbs = Math.max(
            maxAbs,
            Math.abs(y!.data[i * classes + k]! - logits[(s + i) * classes + k]!),
          );
          scale = Math.max(scale, Math.abs(logits[(s + i) * classes + k]!));
        }
      }
    }
    await session.release();
    results.push({
      label,
      budget,
      params: countParams(spec),
      testAccuracy: correct / testSize,
      trainSeconds,
      imagesPerSecond: (epochs * trainSize) / trainSeconds,
      finalLoss: lastLoss,
      onnxAgreement: same / testSize,
      onnxMaxRelError: maxAbs / scale,
      curve,
    });
    probs.dispose();
  }
  tf.dispose([tr.x, tr.y, te.x, te.y]);

  const base = results.find((r) => r.budget === null)?.params;
  const rows: (string | number)[][] = [
    [
      'method',
      'params',
      'vs plain',
      'test acc',
      'train time',
      'img/s',
      'ONNX = tfjs',
      'ONNX logits rel err',
    ],
  ];
  for (const r of results) {
    rows.push([
      r.label,
      r.params.toLocaleString('en-US'),
      base
        ? `${r.params >= base ? '+' : ''}${(((r.params - base) / base) * 100).toFixed(1)}%`
        : '-',
      `${(r.testAccuracy * 100).toFixed(2)}%`,
      fmtTime(r.trainSeconds),
      r.imagesPerSecond.toFixed(0),
      `${(r.onnxAgreement * 100).toFixed(2)}%`,
      r.onnxMaxRelError.toExponential(1),
    ]);
  }
  const summary = table(rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
  io.out(`\n${summary}\n\nrun folder: ${out}\n`);
  const config = {
    model: modelId,
    dataset: v.dataset,
    trainSize,
    testSize,
    epochs,
    batch,
    lr,
    tempEpochs,
    seed,
    backend: tf.getBackend(),
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify({ config, results }, null, 2)}\n`);
  writeFileAtomic(
    join(out, 'report.md'),
    `# kw train: ${modelId} on ${v.dataset}\n\nCommand: \`kw train ${args.join(' ')}\`\n\nConfig: ${JSON.stringify(config)}\n\n\`\`\`\n${summary}\n\`\`\`\n\nOn a network this small the KW attention (hidden width >= 16, m*(n+1) logits per layer) outweighs the warehouse, so KW adds parameters here; the savings of KW 1/2x appear at ResNet scale (\`kw plan resnet18 --budget 1/2x\`: 0.64x).\n\n![training loss](loss.svg)\n\n![tau](tau.svg)\n\nEach model: \`<method>.safetensors\` (weights, spec names) and \`<method>.onnx\` (opset 17, dynamic batch, tau = 0). "ONNX = tfjs": share of test images with the same predicted class from onnxruntime-web (wasm) and from tfjs.\n`,
  );
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  writeFileAtomic(
    join(out, 'loss.svg'),
    lineChart(
      `${modelId} on ${v.dataset}: training loss`,
      'epoch',
      'loss (per batch)',
      results.map((r, i) => ({
        name: r.label,
        color: colors[i % colors.length]!,
        points: r.curve.map((c) => [c.epoch, c.loss] as [number, number]),
      })),
    ),
  );
  writeFileAtomic(
    join(out, 'tau.svg'),
    lineChart('KW temperature tau (per micro-batch)', 'epoch', 'tau', [
      {
        name: 'tau',
        color: '#d62728',
        points: (results.find((r) => r.budget !== null) ?? results[0]!).curve.map(
          (c) => [c.epoch, c.tau] as [number, number],
        ),
      },
    ]),
  );
  const bad = results.filter((r) => r.onnxAgreement < 0.999 || !(r.onnxMaxRelError < 1e-4));
  if (bad.length) {
    io.err(`kw train: ONNX disagrees with tfjs for ${bad.map((r) => r.label).join(', ')}\n`);
    return 1;
  }
  return 0;
}
