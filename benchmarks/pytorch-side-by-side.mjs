// PyTorch CPU side by side (issue 16): the same models, the same thread count, one run.
//   * inference: ResNet18 and KW ResNet18 (1x, 1/2x, 1/4x), 224x224, batch 1 and 8: the official
//     OSVAI/KernelWarehouse models in PyTorch (pytorch/bench_official.py) against our export on
//     onnxruntime-web wasm (the default dynamic-batch form, ort-inference.mjs's child);
//   * training: one step of the main job's ResNet-8 width 4 (1x28x28, batch 32), plain / KW 1x /
//     KW 1/2x: the official modules in PyTorch (SGD) against @kernelwarehouse/tfjs on tfjs wasm
//     (harness.mjs's resnet8TrainStep: the Trainer's loss, Adam, tau 0.5; tfjs wasm runs one
//     thread per process in Node: at N threads the Trainer's N data-parallel shard workers),
//     with each side's GFLOP/s and the 4-lane WebAssembly SIMD ceiling of N cores at once
//     (harness.mjs's simdPeakParallel): PyTorch's rate over that ceiling is the floor of the
//     tfjs / PyTorch time on this machine for a step that does the direct convolutions'
//     multiply-adds (tfjs's 3x3 stride-1 convs run as Winograd convolutions, with fewer: its
//     time can go below that floor, and its GFLOP/s, counted on the direct multiply-adds, above
//     the ceiling).
// Needs Debian's /usr/bin/python3 with torch (python3-torch; skipped with a message otherwise)
// and a checkout of the official code: `node pytorch-side-by-side.mjs /tmp/kw-official` or
// KW_OFFICIAL=/tmp/kw-official (e.g. `git --git-dir=<mirror> archive HEAD | tar -x -C DIR`; it
// is never copied into this repository). Debian's torch links the reference BLAS (about 7x
// slower): when Debian's libopenblas0-pthread is installed it is loaded with LD_PRELOAD (and
// OPENBLAS_NUM_THREADS = the thread count); KW_TORCH_BLAS=reference keeps the reference BLAS.
// Knobs: KW_BENCH_THREADS (1 and the machine's cores), KW_BENCH_ROUNDS (3), KW_BENCH_BATCHES
// (1,8), KW_SBS_WHAT (inference,train), KW_PYTHON (/usr/bin/python3).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { machine } from './harness.mjs';

const here = (f) => new URL(f, import.meta.url).pathname;
const PY = process.env.KW_PYTHON ?? '/usr/bin/python3';
const ROUNDS = process.env.KW_BENCH_ROUNDS ?? '3';
const BATCHES = process.env.KW_BENCH_BATCHES ?? '1,8';
const WHAT = (process.env.KW_SBS_WHAT ?? 'inference,train').split(',');
const THREADS = (process.env.KW_BENCH_THREADS ?? `1,${availableParallelism()}`)
  .split(',')
  .map(Number)
  .filter((t, i, all) => all.indexOf(t) === i);
const OPENBLAS = '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0';
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');

async function tfjsTrainChild(threads) {
  const {
    compare,
    median,
    resnet8Spec,
    resnet8TrainStep,
    simdPeakParallel,
    trainerStepTimes,
    wasmAsKwTrain,
  } = await import('./harness.mjs');
  await wasmAsKwTrain();
  // the 4-lane SIMD ceiling of `threads` cores at once, in the instruction the kernels use
  const ceiling = await simdPeakParallel(threads, process.env.KW_BENCH_FMA !== 'off');
  if (threads > 1) {
    // tfjs wasm runs one thread per process: `threads` data-parallel shard workers (Trainer
    // shards + shardWorkers), the median time between steps of short fits, rounds interleaved
    const models = [
      ['plain', null],
      ['KW 1x', '1x'],
      ['KW 1/2x', '1/2x'],
    ];
    const samples = models.map(() => []);
    for (let r = 0; r < Number(ROUNDS); r++)
      for (const [i, [, budget]] of models.entries()) {
        const spec = await resnet8Spec({ budget });
        samples[i].push(
          ...(await trainerStepTimes(spec, { batch: 32, shards: threads, steps: 4 })),
        );
      }
    const res = models.map(([name], i) => ({
      name,
      medianMs: median(samples[i]),
      ratio: median(samples[i]) / median(samples[0]),
    }));
    process.stdout.write(`${JSON.stringify({ rows: res, ceiling })}\n`);
    return;
  }
  const stepper = (budget) => resnet8TrainStep({ budget, width: 4, batch: 32 });
  const res = await compare(
    [
      { name: 'plain', fn: await stepper(null) },
      { name: 'KW 1x', fn: await stepper('1x') },
      { name: 'KW 1/2x', fn: await stepper('1/2x') },
    ],
    { rounds: Number(ROUNDS), warmup: 1 },
  );
  process.stdout.write(`${JSON.stringify({ rows: res, ceiling })}\n`);
}

if (process.argv[2] === '--tfjs-train') {
  await tfjsTrainChild(Number(process.argv[3] ?? 1));
  process.exit(0);
}

// `pnpm run bench:pytorch -- DIR` passes the `--` through: skip it
const official = process.argv.slice(2).find((a) => a !== '--') ?? process.env.KW_OFFICIAL;
const probe = spawnSync(PY, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.log(`skipped: ${PY} with torch is not installed (Debian: apt-get install python3-torch)`);
  process.exit(0);
}
if (!official || !existsSync(`${official}/modules/kernel_warehouse.py`)) {
  console.log(
    'skipped: give a checkout of OSVAI/KernelWarehouse as the first argument or KW_OFFICIAL',
  );
  process.exit(0);
}
const useOpenblas = process.env.KW_TORCH_BLAS !== 'reference' && existsSync(OPENBLAS);
const last = (out) => JSON.parse(out.trim().split('\n').pop());

const sections = [];
for (const t of THREADS) {
  const before = load();
  const env = {
    ...process.env,
    OMP_NUM_THREADS: String(t),
    ...(useOpenblas ? { LD_PRELOAD: OPENBLAS, OPENBLAS_NUM_THREADS: String(t) } : {}),
  };
  const py = last(
    execFileSync(
      PY,
      [
        here('pytorch/bench_official.py'),
        '--official',
        official,
        '--threads',
        String(t),
        '--batches',
        BATCHES,
        '--rounds',
        ROUNDS,
        '--train-rounds',
        ROUNDS,
        '--what',
        WHAT.join(','),
      ],
      { encoding: 'utf8', env, maxBuffer: 1 << 24 },
    ),
  );
  let ort = [];
  if (WHAT.includes('inference')) {
    ort = last(
      execFileSync(process.execPath, [here('ort-inference.mjs'), '--child', String(t)], {
        encoding: 'utf8',
        env: { ...process.env, KW_BENCH_BATCHES: BATCHES, KW_BENCH_ROUNDS: ROUNDS },
        maxBuffer: 1 << 24,
      }),
    );
  }
  let tfjs = { rows: [], ceiling: undefined };
  if (WHAT.includes('train')) {
    tfjs = last(
      execFileSync(
        process.execPath,
        [here('pytorch-side-by-side.mjs'), '--tfjs-train', String(t)],
        {
          encoding: 'utf8',
          maxBuffer: 1 << 24,
        },
      ),
    );
  }
  sections.push({ t, py, ort, tfjs, load: `load average ${before} before, ${load()} after` });
}

console.log(
  `machine: ${await machine()}; PyTorch ${sections[0]?.py.torch} CPU with ${useOpenblas ? 'OpenBLAS (LD_PRELOAD of Debian libopenblas0-pthread)' : "Debian's reference BLAS"}; onnxruntime-web 1.30.0 wasm; tfjs 4.22 wasm (${process.env.KW_BENCH_FMA === 'off' ? 'own kernels unfused, KW_BENCH_FMA=off' : 'own kernels with fused multiply-add where relaxed SIMD is there or enableRelaxedSimd turns it on, as kw train'}); ${ROUNDS} interleaved rounds (median)`,
);
for (const s of sections) console.log(`${s.t} thread(s): ${s.load}`);
if (WHAT.includes('inference')) {
  console.log(
    '\n| threads | batch | model | PyTorch ms | PyTorch ratio | ORT wasm ms | ORT ratio | MAC-ideal | ORT / PyTorch time |',
  );
  console.log('|---:|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const s of sections) {
    for (const r of s.py.rows.filter((x) => x.kind === 'inference')) {
      const o = s.ort.find((x) => x.batch === r.batch && x.name === r.model);
      console.log(
        `| ${s.t} | ${r.batch} | ${r.model} | ${r.median_ms.toFixed(0)} | ${r.ratio.toFixed(2)} | ${o ? o.medianMs.toFixed(0) : ''} | ${o ? o.ratio.toFixed(2) : ''} | ${o?.ideal?.toFixed(2) ?? ''} | ${o ? (o.medianMs / r.median_ms).toFixed(2) : ''} |`,
      );
    }
  }
}
if (WHAT.includes('train')) {
  // MAC-ideal: core's MACs per image (conv + attention + kernel assembly) over plain's. A
  // training step is the forward and two gradient products of each (input and kernel; for the
  // assembly, of the attention and the warehouse), so the step's ratio is the forward's, and its
  // floating-point work 2 x 3 x batch x the forward's MACs per image.
  const { planModel } = await import('@kernelwarehouse/core');
  const { resnet8Spec } = await import('./harness.mjs');
  const macs = async (budget) => planModel(await resnet8Spec({ budget })).macs.total;
  const stepMacs = {
    plain: await macs(),
    'KW 1x': await macs('1x'),
    'KW 1/2x': await macs('1/2x'),
  };
  const gflop = (model) => (2 * 3 * 32 * stepMacs[model]) / 1e9;
  console.log(
    '\n| threads | model (ResNet-8 w4, batch 32, one step) | PyTorch ms | PyTorch ratio | tfjs wasm ms (1 thread; N threads: N shard workers) | tfjs ratio | MAC-ideal | tfjs / PyTorch time | PyTorch GFLOP/s | tfjs GFLOP/s | tfjs / PyTorch floor |',
  );
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of sections) {
    for (const r of s.py.rows.filter((x) => x.kind === 'train')) {
      const o = s.tfjs.rows.find((x) => x.name === r.model);
      const g = gflop(r.model);
      const pyRate = (g * 1000) / r.median_ms;
      const cells = [
        s.t,
        r.model,
        r.median_ms.toFixed(0),
        `${r.ratio.toFixed(2)} (${Math.min(...r.ratios).toFixed(2)}-${Math.max(...r.ratios).toFixed(2)})`,
        o ? o.medianMs.toFixed(0) : '',
        o ? o.ratio.toFixed(2) : '',
        (stepMacs[r.model] / stepMacs.plain).toFixed(2),
        o ? (o.medianMs / r.median_ms).toFixed(2) : '',
        pyRate.toFixed(1),
        o ? ((g * 1000) / o.medianMs).toFixed(1) : '',
        s.tfjs.ceiling ? (pyRate / s.tfjs.ceiling).toFixed(2) : '',
      ];
      console.log(`| ${cells.join(' | ')} |`);
    }
  }
  const ceilings = sections
    .filter((s) => s.tfjs.ceiling)
    .map((s) => `${s.tfjs.ceiling.toFixed(1)} GFLOP/s on ${s.t} thread(s)`);
  console.log(
    `\nThe 4-lane WebAssembly SIMD ceiling (simdPeakParallel: register-resident ${process.env.KW_BENCH_FMA === 'off' ? 'multiply and add' : 'relaxed multiply-add'} on every thread at once, measured in the tfjs child): ${ceilings.join(', ') || 'not measured'}. "tfjs / PyTorch floor" = PyTorch's GFLOP/s over that ceiling: the least tfjs / PyTorch time a wasm step doing the direct convolutions' multiply-adds could reach with every one at the ceiling (no loads, no other ops). GFLOP/s count 2 x 3 x batch x core's forward MACs per image (KW: conv, attention and kernel assembly) for both sides; tfjs's 3x3 stride-1 convs run as Winograd convolutions (F(2x2, 3x3): 16 multiply-adds per 2x2 outputs instead of 36; F(4x4, 3x3), 36 per 4x4 instead of 144, in every pass of an ordinary conv and in per-sample kernels' filter gradient on 28x28 and 7x7 maps), so its rate is an effective one and its time can go below the floor.`,
  );
}
