// Exported KW ResNet18 (1x, 1/2x, 1/4x) vs plain ResNet18 on onnxruntime-web's wasm EP, 224x224,
// batch 1 and 8, 1 and 2 threads. Each thread count runs in its own process (onnxruntime-web
// fixes the thread count at its first session); inside one process all models run interleaved,
// round after round. Prints ratios to the plain model next to core's MAC-ideal ratio, and the
// model file sizes. The dynamic-batch export (by default each per-sample conv a Scan over the
// samples whose body assembles the sample's KW kernel, then convolves it) also runs with every
// sample's kernel assembled before the Scan (`scanAssembly: false`, the default on 2026-11-28)
// and without control flow (`scanBatch: false`: im2col + batched MatMul, the default before
// 2026-11-28). At batch 1 the fixed-batch export also runs in the
// form exported for one thread (`toOnnx`'s `threads: 1`), at every thread count (it is meant
// for one), and with every
// KW conv on an assembled kernel (`tapMajor: false`, the batch-1 form before tap by tap); a form
// whose export mixes some KW conv's taps (`tapMixing`, by default where it pays: KW 1/4x stage 4)
// runs beside the same form with every KW conv assembled (`tapMixing: false`). Run: pnpm --filter @kernelwarehouse/benchmarks bench:ort
// Knobs: KW_BENCH_SIZE (224), KW_BENCH_ROUNDS (3), KW_BENCH_BATCHES (1,8), KW_BENCH_THREADS
// (1 and the machine's cores, os.availableParallelism()), KW_BENCH_FORMS (the KW forms beside the
// default, comma-separated: scan-before, im2col, fixed, fixed-1-thread, fixed-assembled; all). Prints the load average (uptime) before
// and after each thread count, the spread (min-max) of the per-round ratios, and the ratio of each
// model's fastest run to the plain model's over the MAC-ideal (host stalls only add time); a row
// whose file is byte-identical to an earlier row's says so (an A/A control of the noise); and at
// one thread the ratio of the process's CPU time (median) over the MAC-ideal: time spent waiting
// for a core while other processes run is not in it (at 2 threads it would add both threads).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { availableParallelism, loadavg } from 'node:os';
import { initWeights, planModel, Rng } from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import { benchThreads, compare, machine, RESNET18_MODELS } from './harness.mjs';

const SIZE = Number(process.env.KW_BENCH_SIZE ?? 224);
const ROUNDS = Number(process.env.KW_BENCH_ROUNDS ?? 3);
const BATCHES = (process.env.KW_BENCH_BATCHES ?? '1,8').split(',').map(Number);
const THREADS = benchThreads();
const MODELS = RESNET18_MODELS;

/**
 * The export forms at batch `n`: the dynamic batch (every model); for KW also the kernels
 * assembled before the Scan, im2col, the fixed batch and, at batch 1, the fixed batch exported
 * for one thread (`threads: 1`: the wide assembly products) and the fixed batch with every KW
 * conv on an assembled kernel (`tapMajor: false`: the batch-1 form before the tap-by-tap stage
 * 4), run on the process's thread count. `key` names a form in KW_BENCH_FORMS.
 */
function formsAt(n) {
  const forms = [
    { key: 'scan', label: '' },
    {
      key: 'scan-before',
      label: ' (dynamic batch, kernels before the Scan: scanAssembly false)',
      scanAssembly: false,
    },
    { key: 'im2col', label: ' (dynamic batch, im2col: scanBatch false)', scanBatch: false },
    { key: 'fixed', label: ' (fixed batch, grouped Conv)', batch: n },
  ];
  if (n === 1) {
    forms.push({
      key: 'fixed-1-thread',
      label: ' (fixed batch, exported for 1 thread)',
      batch: n,
      threads: 1,
    });
    forms.push({
      key: 'fixed-assembled',
      label: ' (fixed batch, tapMajor false)',
      batch: n,
      tapMajor: false,
    });
  }
  return forms;
}

// KW_BENCH_FORMS: the KW forms to run beside the default (comma-separated keys; default all),
// for a longer A/B of a few forms
const FORM_KEYS = formsAt(1).map((f) => f.key); // batch 1 has every form
const FORMS = process.env.KW_BENCH_FORMS?.split(',').map((f) => f.trim());
for (const f of FORMS ?? [])
  if (!FORM_KEYS.includes(f))
    throw new Error(`KW_BENCH_FORMS: unknown form ${f} (known: ${FORM_KEYS.join(', ')})`);

async function child(threads) {
  const specs = MODELS.map(([label, budget]) => {
    const spec = createModel('resnet18', { budget, inputShape: [3, SIZE, SIZE] });
    const plan = planModel(spec);
    return {
      label,
      budget,
      spec,
      weights: initWeights(spec, { seed: 0 }),
      macs: plan.macs.total,
      params: plan.params.total,
    };
  });
  const rng = new Rng(1);
  const rows = [];
  for (const n of BATCHES) {
    const cases = [];
    const forms = formsAt(n);
    // the default form always runs (the plain model's only form, every ratio's base)
    const kwForms = forms.filter((f) => f.key === 'scan' || !FORMS || FORMS.includes(f.key));
    for (const m of specs) {
      // each form's file, exported once
      const mine = [];
      for (const form of m.budget === null ? [forms[0]] : kwForms) {
        const opts = {
          batch: form.batch,
          threads: form.threads,
          tapMajor: form.tapMajor,
          scanBatch: form.scanBatch,
          scanAssembly: form.scanAssembly,
        };
        const bytes = toOnnx(m.spec, m.weights, opts);
        mine.push({ form, bytes });
        // where the export's default mixes some KW conv's taps (`tapMixing`), that form with
        // every KW conv assembled too (the form before the mixed one)
        if (
          m.budget === null ||
          form.tapMajor === false ||
          form.scanBatch === false ||
          form.scanAssembly === false
        )
          continue;
        const assembled = toOnnx(m.spec, m.weights, { ...opts, tapMixing: false });
        if (!Buffer.from(assembled).equals(Buffer.from(bytes)))
          mine.push({
            form: { ...form, label: `${form.label || ' (dynamic batch)'} (tapMixing false)` },
            bytes: assembled,
          });
      }
      for (const { form, bytes } of mine) {
        const session = await createSession(bytes, { numThreads: threads });
        // a form whose file equals an earlier one's (KW 1x's one-thread form: no layer with
        // G_in > 1) is an A/A control: whatever separates the two rows is measurement, not model
        const digest = createHash('sha256').update(bytes).digest('hex');
        const twin = cases.find((c) => c.digest === digest);
        cases.push({
          name: `${m.label}${form.label}${twin ? ` [the same file as "${twin.name}"]` : ''}`,
          digest,
          session,
          bytes: bytes.length,
          macs: m.macs,
          params: m.params,
        });
      }
    }
    const x = { shape: [n, 3, SIZE, SIZE], data: rng.normalArray(n * 3 * SIZE * SIZE) };
    const res = await compare(
      cases.map((c) => ({
        name: c.name,
        fn: () => runSession(c.session, x),
        ideal: c.macs / cases[0].macs,
      })),
      { rounds: ROUNDS, warmup: 1 },
    );
    res.forEach((r, i) => {
      // per-round ratios: each KW run against the plain run of the same round
      const per = r.samples.map((t, k) => t / res[0].samples[k]);
      rows.push({
        threads,
        batch: n,
        ...r,
        lo: Math.min(...per),
        hi: Math.max(...per),
        // the ratio of the fastest runs: a host stall only ever adds time, so the minimum of
        // each model's rounds is the least disturbed run (a second estimate beside the median)
        minRatio: Math.min(...r.samples) / Math.min(...res[0].samples),
        bytes: cases[i].bytes,
        params: cases[i].params,
      });
    });
    for (const c of cases) await c.session.release();
  }
  process.stdout.write(`${JSON.stringify(rows)}\n`);
}

if (process.argv[2] === '--child') {
  await child(Number(process.argv[3]));
} else {
  const all = [];
  const loads = [];
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(', ');
  for (const t of THREADS) {
    const before = load();
    const out = execFileSync(
      process.execPath,
      [new URL(import.meta.url).pathname, '--child', String(t)],
      { encoding: 'utf8', maxBuffer: 1 << 24 },
    );
    all.push(...JSON.parse(out.trim().split('\n').pop()));
    loads.push(`${t} thread(s): load average ${before} before, ${load()} after`);
  }
  console.log(
    `machine: ${await machine()}; onnxruntime-web 1.30.0 wasm; ResNet18 ${SIZE}x${SIZE}; ${ROUNDS} rounds (median)`,
  );
  console.log(`load (uptime, ${availableParallelism()} cores): ${loads.join('; ')}`);
  console.log(
    '\n| threads | batch | model | params | .onnx size | median ms | ms / image | measured ratio (per-round min-max) | MAC-ideal ratio | measured / ideal | fastest-run ratio / ideal | CPU-time ratio / ideal (1 thread) |',
  );
  console.log('|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of all) {
    console.log(
      `| ${r.threads} | ${r.batch} | ${r.name} | ${(r.params / 1e6).toFixed(2)}M | ${(r.bytes / 2 ** 20).toFixed(1)} MiB | ${r.medianMs.toFixed(0)} | ${(r.medianMs / r.batch).toFixed(1)} | ${r.ratio.toFixed(2)} (${r.lo.toFixed(2)}-${r.hi.toFixed(2)}) | ${r.ideal.toFixed(2)} | ${(r.ratio / r.ideal).toFixed(2)} | ${(r.minRatio / r.ideal).toFixed(2)} | ${r.threads === 1 ? (r.cpuRatio / r.ideal).toFixed(2) : '-'} |`,
    );
  }
}
