// Peak memory of an exported KW ResNet18 run on onnxruntime-web's wasm EP, by export form: the
// default dynamic-batch form (each sample's kernel assembled in its `Scan` body), the kernels of
// every sample assembled before the `Scan` (`scanAssembly: false`) and im2col (`scanBatch:
// false`), beside plain ResNet18. This process exports each (model, form) to a temporary file; a
// process of its own then creates a session from the file and runs one batch twice, and reports
// its peak resident memory (Linux `VmHWM`) after the session's creation and after the runs. Run: pnpm --filter
// @kernelwarehouse/benchmarks bench:ort-memory
// Knobs: KW_BENCH_SIZE (224), KW_BENCH_BATCH (16), KW_BENCH_BUDGETS (1,0.5,0.25).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initWeights, Rng } from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import { machine, RESNET18_MODELS } from './harness.mjs';

const SIZE = Number(process.env.KW_BENCH_SIZE ?? 224);
const BATCH = Number(process.env.KW_BENCH_BATCH ?? 16);
const BUDGETS = (process.env.KW_BENCH_BUDGETS ?? '1,0.5,0.25').split(',').map(Number);
const FORMS = {
  default: {},
  'kernels before the Scan (scanAssembly false)': { scanAssembly: false },
  'im2col (scanBatch false)': { scanBatch: false },
};

/** This process's peak resident set (kB -> MiB), from /proc (Linux). */
const peakMiB = () => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
};

async function child(file) {
  const session = await createSession(new Uint8Array(readFileSync(file)), { numThreads: 1 });
  const x = {
    shape: [BATCH, 3, SIZE, SIZE],
    data: new Rng(1).normalArray(BATCH * 3 * SIZE * SIZE),
  };
  const before = peakMiB();
  for (let r = 0; r < 2; r++) await runSession(session, x);
  process.stdout.write(JSON.stringify({ before, after: peakMiB() }));
}

if (process.argv[2] === '--child') await child(process.argv[3]);
else if (process.platform !== 'linux') console.log('bench:ort-memory reads /proc: Linux only');
else {
  console.log(`${await machine()}; ResNet18 ${SIZE}x${SIZE}, batch ${BATCH}, one thread`);
  const rows = [];
  const dir = mkdtempSync(join(tmpdir(), 'kw-ort-memory-'));
  const cases = [
    ['plain', 'default'],
    ...BUDGETS.flatMap((b) => Object.keys(FORMS).map((f) => [String(b), f])),
  ];
  for (const [budget, form] of cases) {
    const spec = createModel('resnet18', {
      budget: budget === 'plain' ? null : Number(budget),
      inputShape: [3, SIZE, SIZE],
    });
    const file = join(dir, 'model.onnx');
    writeFileSync(file, toOnnx(spec, initWeights(spec, { seed: 0 }), FORMS[form]));
    const out = execFileSync(
      process.execPath,
      [new URL(import.meta.url).pathname, '--child', file],
      { encoding: 'utf8', maxBuffer: 1 << 20, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const r = JSON.parse(out);
    rows.push({ budget, form, ...r });
    console.error(`${budget} ${form}: peak ${r.after.toFixed(0)} MiB`);
  }
  rmSync(dir, { recursive: true, force: true });
  console.log(
    '\n| model | export form | peak RSS after session creation (MiB) | peak RSS after 2 runs (MiB) | the runs add (MiB) |',
  );
  console.log('|---|---|---:|---:|---:|');
  for (const r of rows) {
    // the ORT benchmarks' label of the budget (plain: null), or the budget itself
    const budget = r.budget === 'plain' ? null : Number(r.budget);
    const model = RESNET18_MODELS.find(([, b]) => b === budget)?.[0] ?? `KW ${r.budget}`;
    console.log(
      `| ${model} | ${r.form} | ${r.before.toFixed(0)} | ${r.after.toFixed(0)} | ${(r.after - r.before).toFixed(0)} |`,
    );
  }
}
