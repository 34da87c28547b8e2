// Per-op profile of an exported model on onnxruntime-web's wasm EP (its `enableProfiling`
// session option): time per op type, summed over the runs after the first, for plain ResNet18 and
// KW ResNet18 at a budget. Run: node ort-profile.mjs [budget|plain] [batch] [threads] [fixed]
//   e.g. node ort-profile.mjs 0.25 8 2 fixed
// Knobs: KW_BENCH_SIZE (224), KW_PROFILE_RUNS (3), KW_PROFILE_TAP_MIXING (on / off: the export's
// `tapMixing`; default its own choice), KW_PROFILE_SCAN_ASSEMBLY (off: the export's `scanAssembly:
// false`, every sample's KW kernel assembled before its Scan; default on at a dynamic batch).
import { execFileSync } from 'node:child_process';
import { initWeights } from '@kernelwarehouse/core';
import { toOnnxWithInfo } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import * as ort from 'onnxruntime-web';

const SIZE = Number(process.env.KW_BENCH_SIZE ?? 224);
const RUNS = Number(process.env.KW_PROFILE_RUNS ?? 3);
// `pnpm run bench:ort-profile -- 0.25 8 2` passes the `--` through: skip it
const [budgetArg = '0.25', batchArg = '1', threadsArg = '1', fixedArg = ''] = process.argv
  .slice(process.argv[2] === '--child' ? 3 : 2)
  .filter((a) => a !== '--');

async function child() {
  const budget = budgetArg === 'plain' ? null : Number(budgetArg);
  const n = Number(batchArg);
  ort.env.wasm.numThreads = Number(threadsArg);
  const spec = createModel('resnet18', { budget, inputShape: [3, SIZE, SIZE] });
  const { bytes, ops } = toOnnxWithInfo(spec, initWeights(spec, { seed: 0 }), {
    batch: fixedArg === 'fixed' ? n : undefined,
    threads: process.env.KW_PROFILE_EXPORT_THREADS
      ? Number(process.env.KW_PROFILE_EXPORT_THREADS)
      : undefined,
    tapMixing: process.env.KW_PROFILE_TAP_MIXING
      ? { on: true, off: false }[process.env.KW_PROFILE_TAP_MIXING]
      : undefined,
    scanAssembly: process.env.KW_PROFILE_SCAN_ASSEMBLY
      ? { on: true, off: false }[process.env.KW_PROFILE_SCAN_ASSEMBLY]
      : undefined,
  });
  console.error(`ops: ${JSON.stringify(ops)}`);
  const s = await ort.InferenceSession.create(bytes, {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
    enableProfiling: true,
  });
  const x = new ort.Tensor('float32', new Float32Array(n * 3 * SIZE * SIZE).fill(0.5), [
    n,
    3,
    SIZE,
    SIZE,
  ]);
  for (let r = 0; r < RUNS + 1; r++) await s.run({ [s.inputNames[0]]: x });
  s.endProfiling(); // onnxruntime-web prints the trace (a JSON array) on stdout
}

/** Ops whose profile time includes the nodes of their subgraphs (each profiled too). */
const CONTROL_FLOW = new Set(['Scan', 'Loop', 'If']);

if (process.argv[2] === '--child') await child();
else {
  const out = execFileSync(
    process.execPath,
    [new URL(import.meta.url).pathname, '--child', budgetArg, batchArg, threadsArg, fixedArg],
    { encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const events = JSON.parse(out.slice(out.indexOf('['), out.lastIndexOf(']') + 1));
  const runs = events.filter((e) => e.name === 'model_run');
  const after = runs[1]?.ts ?? 0; // skip the first run (warm-up)
  const byOp = new Map();
  // a control-flow node's time is its body nodes' (listed themselves): kept out of the totals
  const containers = new Map();
  const byNode = new Map();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < after) continue;
    const op = e.args.op_name;
    const shape = JSON.stringify(e.args.output_type_shape?.[0] ?? '');
    const sums = CONTROL_FLOW.has(op) ? containers : byOp;
    sums.set(op, (sums.get(op) ?? 0) + e.dur);
    // nodes of one op and output shape (a stage's layers of one shape) add up into one line
    const k = `${op} ${shape}`;
    const node = byNode.get(k) ?? { us: 0, names: new Set() };
    node.us += e.dur;
    node.names.add(e.name);
    byNode.set(k, node);
  }
  const total = [...byOp.values()].reduce((a, b) => a + b, 0);
  const runMs = runs.slice(1).map((r) => (r.dur / 1000).toFixed(0));
  console.log(
    `resnet18 ${budgetArg} batch ${batchArg} threads ${threadsArg} ${fixedArg || 'dynamic'}: model_run ms ${runMs.join(', ')}; node time per run ${(total / 1000 / RUNS).toFixed(1)} ms`,
  );
  for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]))
    console.log(
      `  ${op.padEnd(22)} ${(us / 1000 / RUNS).toFixed(1).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %`,
    );
  for (const [op, us] of containers)
    console.log(
      `  (${op}: ${(us / 1000 / RUNS).toFixed(1)} ms, the time of its body nodes above, not added again)`,
    );
  console.log('  top nodes (op, output shape; the time of all such nodes, and how many):');
  for (const [k, { us, names }] of [...byNode]
    .sort((a, b) => b[1].us - a[1].us)
    .slice(0, Number(process.env.KW_PROFILE_TOP ?? 12)))
    console.log(`    ${(us / 1000 / RUNS).toFixed(1).padStart(8)} ms  ${k} x${names.size}`);
}
