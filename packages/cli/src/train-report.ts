/**
 * What `kw train` writes about a run: each variant's weights and ONNX (checked against tfjs),
 * and at the end the table, results.json, report.md and the charts.
 */
import { join } from 'node:path';
import { type ModelSpec, saveWeights, type WeightMap } from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import type { CurvePoint } from '@kernelwarehouse/tfjs';
import { writeFileAtomic } from './fsio.js';
import { type Io, table } from './io.js';
import { fmtTime } from './progress.js';
import { lineChart } from './svg.js';
import { compareWithPlain } from './train-compare.js';
import type { RunOptions } from './train-options.js';

/** One trained variant's results (one method, one seed). */
export interface TrainResult {
  /** Canonical method: `plain`, `kw:1x`, `kw:1/2x`, `odconv:4`, ... */
  method: string;
  label: string;
  budget: number | null;
  seed: number;
  params: number;
  testAccuracy: number;
  trainSeconds: number;
  imagesPerSecond: number;
  finalLoss: number;
  onnxAgreement: number;
  onnxMaxRelError: number;
  /** Per step: loss, KW tau (KW models), DY-Conv / ODConv temperature (those models), lr. */
  curve: CurvePoint[];
}

const argmax = (a: ArrayLike<number>, i: number, classes: number) => {
  let best = 0;
  for (let k = 1; k < classes; k++) if (a[i * classes + k]! > a[i * classes + best]!) best = k;
  return best;
};

/**
 * Write `<slug>.safetensors` and `<slug>.onnx` (opset 17, inference temperatures) and check
 * the ONNX model (onnxruntime-web, wasm) against the tfjs logits on the test images (NCHW).
 */
export async function exportAndCheck(
  spec: ModelSpec,
  weights: WeightMap,
  out: string,
  slug: string,
  test: { nchw: Float32Array; count: number; height: number; width: number },
  logits: Float32Array,
  classes: number,
): Promise<{ onnxAgreement: number; onnxMaxRelError: number }> {
  writeFileAtomic(join(out, `${slug}.safetensors`), saveWeights(spec, weights));
  const onnx = toOnnx(spec, weights);
  writeFileAtomic(join(out, `${slug}.onnx`), onnx);
  const session = await createSession(onnx);
  let same = 0;
  let maxAbs = 0;
  let scale = 1e-6;
  const hw = test.height * test.width;
  for (let s = 0; s < test.count; s += 250) {
    const n = Math.min(250, test.count - s);
    const [y] = await runSession(session, {
      shape: [n, 1, test.height, test.width],
      data: test.nchw.subarray(s * hw, (s + n) * hw),
    });
    for (let i = 0; i < n; i++) {
      if (argmax(y!.data, i, classes) === argmax(logits, s + i, classes)) same++;
      for (let k = 0; k < classes; k++) {
        const t = logits[(s + i) * classes + k]!;
        maxAbs = Math.max(maxAbs, Math.abs(y!.data[i * classes + k]! - t));
        scale = Math.max(scale, Math.abs(t));
      }
    }
  }
  await session.release();
  return { onnxAgreement: same / test.count, onnxMaxRelError: maxAbs / scale };
}

const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
const std = (a: number[]) =>
  a.length < 2 ? 0 : Math.sqrt(a.reduce((s, x) => s + (x - mean(a)) ** 2, 0) / (a.length - 1));

/** The table, results.json, report.md and the charts of a finished run. */
export function writeReport(p: {
  io: Io;
  out: string;
  opts: RunOptions;
  choices: { key: string; label: string; budget: number | null }[];
  results: TrainResult[];
  config: Record<string, unknown>;
  checkpoints: { ms: number; bytes: number }[];
  command: string;
}): void {
  const { io, out, opts, results, checkpoints: ck } = p;
  const summaries = p.choices.map((c) => {
    const rs = results.filter((r) => r.method === c.key);
    return {
      method: c.key,
      label: c.label,
      params: rs[0]!.params,
      seeds: rs.map((r) => r.seed),
      testAccuracyMean: mean(rs.map((r) => r.testAccuracy)),
      testAccuracyStd: std(rs.map((r) => r.testAccuracy)),
      trainSecondsMean: mean(rs.map((r) => r.trainSeconds)),
      imagesPerSecondMean: mean(rs.map((r) => r.imagesPerSecond)),
      onnxAgreementMin: Math.min(...rs.map((r) => r.onnxAgreement)),
      onnxMaxRelError: Math.max(...rs.map((r) => r.onnxMaxRelError)),
    };
  });
  const seeds = opts.seeds;
  const plainParams = summaries.find((r) => r.method === 'plain')?.params;
  const rows: (string | number)[][] = [
    [
      'method',
      'params',
      'vs plain',
      seeds > 1 ? `test acc (mean ± std, ${seeds} seeds)` : 'test acc',
      'train time',
      'img/s',
      'ONNX = tfjs',
      'ONNX logits rel err',
    ],
  ];
  for (const r of summaries) {
    const acc = `${(r.testAccuracyMean * 100).toFixed(2)}%`;
    rows.push([
      r.label,
      r.params.toLocaleString('en-US'),
      plainParams
        ? `${r.params >= plainParams ? '+' : ''}${(((r.params - plainParams) / plainParams) * 100).toFixed(1)}%`
        : '-',
      seeds > 1 ? `${acc} ± ${(r.testAccuracyStd * 100).toFixed(2)}` : acc,
      fmtTime(r.trainSecondsMean),
      r.imagesPerSecondMean.toFixed(0),
      `${(r.onnxAgreementMin * 100).toFixed(2)}%`,
      r.onnxMaxRelError.toExponential(1),
    ]);
  }
  const summary = table(rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
  const compared = compareWithPlain(results);
  io.out(
    `\n${summary}\n${compared.length ? `\n${compared.slice(2).join('\n')}` : ''}\nrun folder: ${out}\n`,
  );
  const checkpoints = ck.length
    ? {
        written: ck.length,
        meanMs: mean(ck.map((c) => c.ms)),
        maxMs: Math.max(...ck.map((c) => c.ms)),
        maxBytes: Math.max(...ck.map((c) => c.bytes)),
      }
    : null;
  writeFileAtomic(
    join(out, 'results.json'),
    `${JSON.stringify({ config: p.config, summary: summaries, results, checkpoints }, null, 2)}\n`,
  );
  const first = results.filter((r) => r.seed === opts.seed);
  const withTau = first.find((r) => r.curve.some((c) => c.tau !== undefined));
  const withTemp = first.find((r) => r.curve.some((c) => c.temperature !== undefined));
  writeFileAtomic(
    join(out, 'report.md'),
    `# kw train: ${opts.model} on ${opts.dataset}\n\nCommand: \`${p.command}\`\n\nConfig: ${JSON.stringify(p.config)}\n\n\`\`\`\n${summary}\n\`\`\`\n\n${seeds > 1 ? `Test accuracy: mean ± sample standard deviation over ${seeds} seeds (${summaries[0]!.seeds.join(', ')}); each seed sets the initial weights and the order of the training images. Charts show seed ${opts.seed}.\n\n` : ''}${compared.join('\n')}\n![training loss](loss.svg)\n\n${withTau ? '![tau](tau.svg)\n\n' : ''}${withTemp ? '![temperature](temperature.svg)\n\n' : ''}Each model: \`<method>.safetensors\` (weights, spec names) and \`<method>.onnx\` (opset 17, dynamic batch, inference temperatures)${seeds > 1 ? ', one pair per seed (`-seedN`)' : ''}. "ONNX = tfjs": share of test images with the same predicted class from onnxruntime-web (wasm) and from tfjs.\n`,
  );
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  writeFileAtomic(
    join(out, 'loss.svg'),
    lineChart(
      `${opts.model} on ${opts.dataset}: training loss`,
      'epoch',
      'loss (per batch)',
      first.map((r, i) => ({
        name: r.label,
        color: colors[i % colors.length]!,
        points: r.curve.map((c) => [c.epoch, c.loss] as [number, number]),
      })),
    ),
  );
  if (withTau)
    writeFileAtomic(
      join(out, 'tau.svg'),
      lineChart('KW temperature tau (per micro-batch)', 'epoch', 'tau', [
        {
          name: 'tau',
          color: '#d62728',
          points: withTau.curve.map((c) => [c.epoch, c.tau!] as [number, number]),
        },
      ]),
    );
  if (withTemp)
    writeFileAtomic(
      join(out, 'temperature.svg'),
      lineChart('DY-Conv / ODConv softmax temperature (per micro-batch)', 'epoch', 'temperature', [
        {
          name: 'temperature',
          color: '#9467bd',
          points: withTemp.curve.map((c) => [c.epoch, c.temperature!] as [number, number]),
        },
      ]),
    );
}

/** The first line `kw train` prints: what it is about to train and how. */
export function runLine(
  opts: RunOptions,
  choices: { budget: number | null; method?: { kind: string } }[],
  data: { height: number; width: number },
  backend: string,
): string {
  const { epochs, seeds } = opts;
  const tau = opts.tempEpochs ?? opts.tauFraction * epochs;
  const kw = choices.some((c) => c.budget !== null);
  const peers = choices.some((c) => c.method?.kind === 'dyconv' || c.method?.kind === 'odconv');
  return `kw train: ${opts.model}${opts.width ? ` (width ${opts.width})` : ''} on ${opts.dataset} (${opts.trainSize} train / ${opts.testSize} test images, ${data.height}x${data.width}x1), ${epochs} epochs, batch ${opts.batch}, ${opts.optimizer} lr ${opts.lr}${opts.schedule === 'cosine' ? ' cosine' : ''}, ${kw ? `KW tau 1 -> 0 over ${tau} epochs, ` : ''}${peers ? `DY-Conv/ODConv temperature 30 -> 1 over ${opts.methodTempEpochs ?? Math.min(10, epochs)} epochs, ` : ''}${seeds > 1 ? `${seeds} seeds, ` : ''}backend ${backend}${opts.bnPasses > 0 ? `; BatchNorm statistics re-estimated over ${opts.bnPasses} training batches before testing` : ''}\n`;
}

/** The run's setting as results.json and report.md record it. */
export function runConfig(opts: RunOptions, backend: string): Record<string, unknown> {
  const { epochs } = opts;
  return {
    model: opts.model,
    width: opts.width,
    dataset: opts.dataset,
    dataDir: opts.dataDir,
    methods: opts.methods,
    trainSize: opts.trainSize,
    testSize: opts.testSize,
    epochs,
    batch: opts.batch,
    optimizer: opts.optimizer,
    lr: opts.lr,
    schedule: opts.schedule,
    weightDecay: opts.weightDecay,
    momentum: opts.optimizer === 'sgd' ? opts.momentum : undefined,
    tempEpochs: opts.tempEpochs ?? opts.tauFraction * epochs,
    methodTempEpochs: opts.methodTempEpochs ?? Math.min(10, epochs),
    seed: opts.seed,
    seeds: opts.seeds,
    bnPasses: opts.bnPasses,
    checkpointEvery: opts.checkpointEvery,
    shards: opts.shards ?? 1,
    backend,
    fma: opts.fma ?? 'on',
    winograd: opts.winograd ?? 'on',
  };
}
