// Parity of exported ONNX models on onnxruntime-web (wasm EP, in Node) against the core reference
// executor on the same weights. Tolerance: relative error < 1e-4 (float32; measured ~1e-7).
import {
  countParams,
  type DynamicMethodRef,
  initWeights,
  KwError,
  type ModelSpec,
  maxRelativeError,
  runReference,
  SpecBuilder,
  type WeightMap,
} from '@kernelwarehouse/core';
import {
  type BackendRunner,
  CONFORMANCE_TOLERANCE,
  conformanceChecks,
  perturb,
  Rng,
  randomInput,
  tinyKwSpec,
} from '@kernelwarehouse/core/testing';
import { createModel } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import {
  createSession,
  executionProviders,
  exportOptionsFor,
  IR_VERSION,
  OPSET,
  onnxInfo,
  runSession,
  toOnnx,
  toOnnxWithInfo,
} from './index.js';
import { tapMixingPays, tapMixingRatio } from './ops.js';

const TOL = CONFORMANCE_TOLERANCE;

/** Every tensor randomised, BN variances positive: no path is trivially zero or identity. */
function randomWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  for (const [k, t] of w) {
    w.set(
      k,
      k.endsWith('running_var')
        ? { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) }
        : perturb(rng, t, 0.1),
    );
  }
  return w;
}

/** Nodes of `op` in the graph and in its Scan bodies. */
function allOps(
  ex: { ops: Record<string, number>; subgraphOps: Record<string, number> },
  op: string,
): number {
  return (ex.ops[op] ?? 0) + (ex.subgraphOps[op] ?? 0);
}

async function parity(
  spec: ModelSpec,
  opts: {
    tau?: number;
    batches?: number[];
    seed?: number;
    fixedBatch?: number;
    threads?: number;
    tapMajor?: boolean;
    tapMixing?: boolean;
    scanBatch?: boolean;
    scanAssembly?: boolean;
  } = {},
) {
  const w = randomWeights(spec, opts.seed ?? 1);
  const tau = opts.tau ?? 0;
  const session = await createSession(
    toOnnx(spec, w, {
      temperature: tau,
      batch: opts.fixedBatch,
      threads: opts.threads,
      tapMajor: opts.tapMajor,
      tapMixing: opts.tapMixing,
      scanBatch: opts.scanBatch,
      scanAssembly: opts.scanAssembly,
    }),
  );
  const errs: number[] = [];
  for (const n of opts.batches ?? [1, 3]) {
    const x = randomInput(new Rng(100 + n), [n, ...spec.inputShape]);
    const outs = await runSession(session, x);
    const ref = runReference(spec, w, x, { temperature: tau });
    spec.outputs.forEach((o, i) => {
      expect(outs[i]!.shape).toEqual(ref.get(o)!.shape);
      errs.push(maxRelativeError(outs[i]!.data, ref.get(o)!.data));
    });
  }
  return Math.max(...errs);
}

function allOpsSpec(): ModelSpec {
  const b = new SpecBuilder('all-ops', [4, 9, 9]);
  let x = b.conv2d('c', b.input, {
    outChannels: 10,
    kernelSize: 3,
    padding: 1,
    groups: 2,
    bias: true,
  });
  x = b.batchNorm('bn', x); // folded into c
  const r = b.relu('r', x);
  const g = b.gelu('g', b.layerNorm('ln', r));
  const s = b.mul('ls', [g], 0.5);
  const se = b.sigmoid('sg', b.globalAvgPool('gp', s));
  const gated = b.mul('gate', [s, se]);
  x = b.relu6('r6', b.addNodes('sum', [gated, r, x]));
  x = b.batchNorm('bn2', b.identity('id', x)); // not foldable
  x = b.avgPool('ap', x, 3, 2, 1);
  x = b.maxPool('mp', b.dropout('do', x, 0.3), 2, 1, 0);
  x = b.conv2d('dil', x, {
    outChannels: 5,
    kernelSize: 3,
    dilation: 2,
    padding: 2,
    stride: [1, 2],
  });
  x = b.flatten('fl', x);
  x = b.layerNorm('ln2', x);
  b.output(b.linear('fc', x, 3));
  return b.build();
}

/** An exported model on onnxruntime-web (wasm EP) as a conformance runner: inference only. */
const runner: BackendRunner = {
  modes: ['inference'],
  async run(spec, weights, x, run) {
    const session = await createSession(toOnnx(spec, weights, { temperature: run.temperature }));
    return (await runSession(session, x))[0]!;
  },
};

describe('core conformance suite on onnxruntime-web (wasm)', () => {
  for (const check of conformanceChecks(runner.modes)) {
    it(check.name, async () => {
      const r = await check.measure(runner);
      expect(r.shape).toEqual(r.want);
      expect(r.error).toBeLessThan(CONFORMANCE_TOLERANCE);
    });
  }
});

describe('ONNX parity on onnxruntime-web (wasm), batch 1 and 3 from one model', () => {
  const cases: [string, ModelSpec, number][] = [
    ['plain spec with every op', allOpsSpec(), 0],
    ['KW b = 1/2, tau = 1 (the one-to-one init)', tinyKwSpec({ budget: 0.5, cellRatio: 0.5 }), 1],
  ];
  for (const [label, spec, tau] of cases) {
    it(label, async () => {
      expect(await parity(spec, { tau })).toBeLessThan(TOL);
    });
  }
});

describe('a KW model exported at temperature 1 (constant attention)', () => {
  it('has no attention and no per-sample machinery: one Conv / Gemm per KW layer', async () => {
    const spec = tinyKwSpec({ budget: 0.5, cellRatio: 0.5, kwClassifier: true });
    const w = randomWeights(spec, 3);
    const at = (tau: number) => onnxInfo(toOnnx(spec, w, { temperature: tau })).ops;
    const one = at(1);
    const zero = at(0);
    // CAF's Abs and the attention's global pool are there at tau = 0 and gone at tau = 1
    expect(zero.Abs).toBeGreaterThan(0);
    expect(one.Abs ?? 0).toBe(0);
    expect(one.ReduceMean ?? 0).toBeLessThan(zero.ReduceMean ?? 0);
    // and the graph still gives the reference's numbers (batches 1 and 3)
    expect(await parity(spec, { tau: 1, seed: 3 })).toBeLessThan(TOL);
  });
});

describe('fixed-batch form (options.batch: one Conv with group = batch x groups)', () => {
  const cases: [string, ModelSpec, number][] = [
    ['KW b = 1', tinyKwSpec({ budget: 1 }), 0],
    ['KW b = 1/2, tau = 0.5', tinyKwSpec({ budget: 0.5, cellRatio: 0.5 }), 0.5],
    [
      'KW non-local basis, KW classifier',
      tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.25, kwClassifier: true }),
      0,
    ],
  ];
  for (const [label, spec, tau] of cases) {
    it(`${label} at batch 3`, async () => {
      expect(await parity(spec, { tau, batches: [3], fixedBatch: 3 })).toBeLessThan(TOL);
    });
    // batch 1 on one thread: the wide assembly products (G_in > 1) and their Transposes
    it(`${label} at batch 1, exported for one thread`, async () => {
      const opts = { tau, batches: [1], fixedBatch: 1 };
      expect(await parity(spec, { ...opts, threads: 1 })).toBeLessThan(TOL);
      expect(await parity(spec, opts)).toBeLessThan(TOL);
    });
  }
  it('ResNet18 1/4x at batch 1, exported for one thread (every 3x3 layer G_out = G_in = 2)', async () => {
    const spec = createModel('resnet18', { budget: '1/4x', inputShape: [3, 32, 32], classes: 10 });
    expect(await parity(spec, { batches: [1], fixedBatch: 1, threads: 1 })).toBeLessThan(TOL);
  });

  it('emits grouped Convs instead of im2col MatMuls, fixes the batch and refuses another one', async () => {
    const spec = tinyKwSpec({ budget: 1 });
    const w = initWeights(spec);
    // (the assembled forms: by default these small maps would mix their taps, `tapMixing`)
    const fixed = onnxInfo(toOnnx(spec, w, { batch: 3, tapMixing: false }));
    const dynamic = onnxInfo(toOnnx(spec, w, { tapMixing: false, scanBatch: false }));
    const scan = onnxInfo(toOnnx(spec, w, { tapMixing: false }));
    expect(fixed.inputs[0]!.shape).toEqual([3, 3, 8, 8]);
    expect(dynamic.inputs[0]!.shape[0]).toBe('N');
    expect((fixed.ops.MatMul ?? 0) + 4).toBe(dynamic.ops.MatMul); // 4 KW convs: no im2col MatMul
    // the dynamic batch's default, a Scan per KW conv: no im2col MatMul either, and each
    // layer's assembly MatMul in its Scan's body, beside the sample's Conv
    expect([scan.ops.MatMul ?? 0, scan.ops.Scan]).toEqual([(fixed.ops.MatMul ?? 0) - 4, 4]);
    expect([scan.subgraphOps.MatMul, scan.subgraphOps.Conv]).toEqual([4, 4]);
    expect(() => toOnnx(spec, w, { batch: 0 })).toThrow(/batch must be an integer >= 1/);
    for (const threads of [0, 1.5, Number.NaN])
      expect(() => toOnnx(spec, w, { batch: 1, threads })).toThrow(
        /threads must be an integer >= 1/,
      );
    const session = await createSession(toOnnx(spec, w, { batch: 3 }));
    await expect(runSession(session, randomInput(new Rng(1), [2, 3, 8, 8]))).rejects.toThrow(
      KwError,
    );
  });
});

/**
 * KW convs for the tap-major form: cells split in and out (G_out = G_in = 2), a bias, a stride
 * with a dilation, a non-square kernel, and a grouped conv and a 1x1 that keep the assembled form.
 */
function tapSpec(): ModelSpec {
  const b = new SpecBuilder('tap-major', [4, 9, 9]);
  b.warehouse({ id: 'w', budget: 0.5, cellInRatio: 0.5, cellOutRatio: 0.5 });
  const kw = { kind: 'kw' as const, warehouse: 'w' };
  let x = b.dynamicConv2d(
    'a',
    b.input,
    { outChannels: 8, kernelSize: 3, padding: 1, bias: true },
    kw,
  );
  x = b.relu('ra', x);
  x = b.dynamicConv2d(
    'b',
    x,
    { outChannels: 8, kernelSize: [3, 2], stride: 2, dilation: 2, padding: [2, 1] },
    kw,
  );
  x = b.dynamicConv2d('c', x, { outChannels: 8, kernelSize: 3, padding: 1, groups: 2 }, kw);
  x = b.dynamicConv2d('d', x, { outChannels: 8, kernelSize: 1 }, kw);
  b.output(b.flatten('fl', x));
  return b.build();
}

/** The KW specs both forced export forms (tap by tap, mixed) are checked on, with their tau. */
const KW_FORM_CASES = (): [string, ModelSpec, number][] => [
  ['KW b = 1, tau = 0.5', tinyKwSpec({ budget: 1 }), 0.5],
  [
    'KW non-local basis, KW classifier',
    tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.25, kwClassifier: true }),
    0,
  ],
];

/** Parity of an export form at a dynamic batch (1 and 3) and fixed batches 3 and 1, per case. */
function formParity(cases: [string, ModelSpec, number][], form: Parameters<typeof parity>[1]) {
  for (const [label, spec, tau] of cases) {
    it(`${label}: dynamic batch (1 and 3), fixed batch 3 and 1`, async () => {
      const o = { ...form, tau };
      expect(await parity(spec, o)).toBeLessThan(TOL);
      expect(await parity(spec, { ...o, batches: [3], fixedBatch: 3 })).toBeLessThan(TOL);
      expect(await parity(spec, { ...o, batches: [1], fixedBatch: 1 })).toBeLessThan(TOL);
    });
  }
}

describe('KW convs tap by tap (options.tapMajor)', () => {
  formParity(
    [['split cells, bias, stride + dilation, non-square kernel', tapSpec(), 0], ...KW_FORM_CASES()],
    { tapMajor: true },
  );

  it('takes the layers it applies to: ungrouped, more than one tap; the warehouse stored once', () => {
    const spec = tapSpec();
    const w = initWeights(spec);
    const on = toOnnxWithInfo(spec, w, { tapMajor: true });
    const off = toOnnxWithInfo(spec, w, { tapMajor: false });
    // one ReduceSum over taps and G_in per tap-major layer (a and b; not the grouped c nor the 1x1
    // d), in the layer's Scan body at a dynamic batch
    expect(allOps(on, 'ReduceSum') - allOps(off, 'ReduceSum')).toBe(2);
    expect(on.subgraphOps.ReduceSum).toBe(2);
    expect(Math.abs(on.initializerBytes - off.initializerBytes)).toBeLessThan(2048);
    expect(() => toOnnx(spec, w, { tapMajor: 'yes' as unknown as boolean })).toThrow(
      /tapMajor must be true or false/,
    );
  });

  it('by default where the assembly is costly, at any batch: ResNet18 224x224 stage 4', () => {
    const spec = createModel('resnet18', { budget: 1, inputShape: [3, 224, 224] });
    const w = initWeights(spec);
    const taps = (o: { batch?: number; tapMajor?: boolean }) =>
      allOps(toOnnxWithInfo(spec, w, o), 'ReduceSum') -
      allOps(toOnnxWithInfo(spec, w, { ...o, tapMajor: false }), 'ReduceSum');
    // the four 3x3 convs of layer4 (7x7 outputs), not the twelve before them nor the 1x1
    // shortcuts
    expect(taps({ batch: 1 })).toBe(4);
    expect(taps({ batch: 2 })).toBe(4);
    expect(taps({})).toBe(4);
    // and none at 32x32 input would be wrong: there every stage-3 and -4 layer has few pixels
    const small = createModel('resnet18', { budget: 1, inputShape: [3, 32, 32] });
    expect(allOps(toOnnxWithInfo(small, initWeights(small)), 'ReduceSum')).toBeGreaterThan(
      allOps(toOnnxWithInfo(small, initWeights(small), { tapMajor: false }), 'ReduceSum'),
    );
  }, 60_000);

  it('ResNet18 1/4x 32x32 at batch 1 (auto: its small-pixel layers tap by tap, G_out = G_in = 2)', async () => {
    const spec = createModel('resnet18', { budget: '1/4x', inputShape: [3, 32, 32], classes: 10 });
    expect(await parity(spec, { batches: [1], fixedBatch: 1 })).toBeLessThan(TOL);
  });
});

/** KW convs for the mixed form: stride 2 with a non-square kernel and uneven padding, G_out = 1. */
function mixSpec(): ModelSpec {
  const b = new SpecBuilder('mixed', [6, 11, 10]);
  b.warehouse({ id: 'w', budget: 0.5, cellInRatio: 0.5 });
  const kw = { kind: 'kw' as const, warehouse: 'w' };
  let x = b.dynamicConv2d(
    'a',
    b.input,
    { outChannels: 6, kernelSize: [3, 2], stride: 2, padding: [1, 0], bias: true },
    kw,
  );
  x = b.relu('ra', x);
  x = b.dynamicConv2d('b', x, { outChannels: 6, kernelSize: 3, padding: 1 }, kw);
  b.output(b.flatten('fl', x));
  return b.build();
}

describe('KW convs in the mixed form (options.tapMixing)', () => {
  formParity(
    [
      ['G_out = G_in = 2, bias; dilated and grouped convs stay assembled; a 1x1', tapSpec(), 0],
      ['stride 2, non-square kernel, uneven padding, G_out = 1', mixSpec(), 0.5],
      ...KW_FORM_CASES(),
    ],
    { tapMixing: true },
  );

  it('changes the graph where forced, the warehouse stored once; refuses a non-boolean', () => {
    for (const spec of [tapSpec(), mixSpec()]) {
      const w = initWeights(spec);
      const on = toOnnxWithInfo(spec, w, { tapMixing: true, tapMajor: false });
      const off = toOnnxWithInfo(spec, w, { tapMixing: false, tapMajor: false });
      // no per-sample conv on the mixed layers: their im2col patches go to a MatMul, not a
      // grouped Conv per sample; the export differs
      expect(on.bytes).not.toEqual(off.bytes);
      // the mixed layers read the warehouse as stored (a view onnxruntime folds at load): the
      // file holds it once (the two forms' shape constants differ by a few int64s)
      expect(Math.abs(on.initializerBytes - off.initializerBytes)).toBeLessThan(2048);
      expect(() => toOnnx(spec, w, { tapMixing: 1 as unknown as boolean })).toThrow(
        /tapMixing must be true or false, found 1/,
      );
    }
  });

  it('the cost rule: hand-derived ratios of ResNet18 224x224 1/4x layers', () => {
    // stage 4 after its first conv: o = i = 512, G_out = G_in = 2, n = 27, 3x3 taps, 7x7 pixels:
    // (27/18 + 2·2·27/512) / (1 + 2·27/49) = 0.8139...
    expect(tapMixingRatio(512, 512, 2, 2, 27, 9, 49)).toBeCloseTo(
      (27 / 18 + (2 * 2 * 27) / 512) / (1 + (2 * 27) / 49),
      12,
    );
    expect(tapMixingRatio(512, 512, 2, 2, 27, 9, 49)).toBeCloseTo(0.8139, 4);
    // stage 3: o = i = 256, n = 47, 14x14 pixels: (47/18 + 4·47/256) / (1 + 2·47/196) = 2.26
    expect(tapMixingRatio(256, 256, 2, 2, 47, 9, 196)).toBeCloseTo(2.2606, 3);
    expect(tapMixingPays(8, 512, 512, 2, 2, 27, 9, 49)).toBe(true);
    expect(tapMixingPays(undefined, 512, 512, 2, 2, 27, 9, 49)).toBe(true);
    expect(tapMixingPays(1, 512, 512, 2, 2, 27, 9, 49)).toBe(false);
    expect(tapMixingPays(8, 256, 256, 2, 2, 47, 9, 196)).toBe(false);
  });

  it('by default: ResNet18 224x224 1/4x stage 4 after its first conv (not at a fixed batch of 1), no other ResNet18 budget; the warehouse stored once', () => {
    // each mixed layer there replaces a tap-major one (one ReduceSum over taps each)
    const taps = (spec: ModelSpec, o: { batch?: number }) => {
      const w = initWeights(spec);
      const auto = toOnnxWithInfo(spec, w, o);
      const off = toOnnxWithInfo(spec, w, { ...o, tapMixing: false });
      // (the two forms' shape constants differ by a few int64s)
      expect(Math.abs(auto.initializerBytes - off.initializerBytes)).toBeLessThan(2048);
      return allOps(off, 'ReduceSum') - allOps(auto, 'ReduceSum');
    };
    const quarter = createModel('resnet18', { budget: '1/4x', inputShape: [3, 224, 224] });
    expect(taps(quarter, {})).toBe(3);
    expect(taps(quarter, { batch: 8 })).toBe(3);
    expect(taps(quarter, { batch: 1 })).toBe(0);
    for (const budget of ['1x', '1/2x'])
      expect(taps(createModel('resnet18', { budget, inputShape: [3, 224, 224] }), {})).toBe(0);
  }, 120_000);

  it('ResNet18 1/4x 16x16 by default at batch 2 (its small-pixel layers mixed)', async () => {
    const spec = createModel('resnet18', { budget: '1/4x', inputShape: [3, 16, 16], classes: 10 });
    const w = initWeights(spec);
    expect(toOnnxWithInfo(spec, w).bytes).not.toEqual(
      toOnnxWithInfo(spec, w, { tapMixing: false }).bytes,
    );
    expect(await parity(spec, { batches: [2] })).toBeLessThan(TOL);
  });
});

describe('per-sample convs at a dynamic batch: a Scan over the samples (default) or im2col (options.scanBatch false)', () => {
  const cases: [string, ModelSpec, number][] = [
    ['KW: bias, dilation + stride + non-square kernel, grouped, 1x1', tapSpec(), 0],
    ...KW_FORM_CASES(),
    ['CondConv, 3 experts, with biases', methodSpec({ kind: 'condconv', experts: 3 }, true), 0],
    ['ODConv 4x, temperature 3', methodSpec({ kind: 'odconv', kernels: 4, temperature: 3 }), 0],
    ['WeightNet M = 4, G = 2', methodSpec({ kind: 'weightnet', M: 4, G: 2 }), 0],
  ];
  for (const [label, spec, tau] of cases) {
    it(`${label}: both forms at batch 1 and 3`, async () => {
      // every KW conv on an assembled kernel, so that each is a per-sample conv
      const forms = { tau, tapMajor: false, tapMixing: false };
      expect(await parity(spec, { ...forms, scanBatch: true })).toBeLessThan(TOL);
      expect(await parity(spec, { ...forms, scanAssembly: false })).toBeLessThan(TOL);
      expect(await parity(spec, { ...forms, scanBatch: false })).toBeLessThan(TOL);
    });
  }

  it('one Scan per per-sample conv by default, none with scanBatch false or a fixed batch; refusals', () => {
    const spec = tapSpec();
    const w = initWeights(spec);
    const assembled = { tapMajor: false, tapMixing: false };
    const scan = toOnnxWithInfo(spec, w, assembled);
    const im2col = toOnnxWithInfo(spec, w, { ...assembled, scanBatch: false });
    // a, b, c, d: four KW convs, each its own per-sample conv
    expect(scan.ops.Scan).toBe(4);
    expect(onnxInfo(scan.bytes).ops.Scan).toBe(4);
    expect(im2col.ops.Scan).toBeUndefined();
    // im2col: one batched MatMul per conv beside its assembly's; the Scan form has neither outside
    // its bodies (each KW layer's assembly is in its body, with scanAssembly false before it)
    const before = toOnnxWithInfo(spec, w, { ...assembled, scanAssembly: false });
    expect([im2col.ops.MatMul ?? 0, before.ops.MatMul ?? 0, scan.ops.MatMul ?? 0]).toEqual([
      8, 4, 0,
    ]);
    expect([scan.subgraphOps.MatMul, before.subgraphOps.MatMul]).toEqual([4, undefined]);
    expect(toOnnxWithInfo(spec, w, { ...assembled, batch: 2 }).ops.Scan).toBeUndefined();
    expect(toOnnxWithInfo(spec, w, { ...assembled, batch: 2, scanBatch: false }).bytes).toEqual(
      toOnnxWithInfo(spec, w, { ...assembled, batch: 2 }).bytes,
    );
    expect(() => toOnnx(spec, w, { scanBatch: 'on' as unknown as boolean })).toThrow(
      /scanBatch must be true or false, found on/,
    );
    expect(() => toOnnx(spec, w, { scanBatch: true, batch: 2 })).toThrow(
      /scanBatch applies to a dynamic batch, but batch is fixed at 2/,
    );
    expect(() => toOnnx(spec, w, { scanAssembly: true, batch: 2 })).toThrow(
      /scanAssembly applies to the Scan form of a dynamic batch, but batch is fixed at 2/,
    );
    expect(() => toOnnx(spec, w, { scanAssembly: true, scanBatch: false })).toThrow(
      /scanAssembly applies to the Scan form of a dynamic batch, but scanBatch is false/,
    );
    expect(() => toOnnx(spec, w, { scanAssembly: 0 as unknown as boolean })).toThrow(
      /scanAssembly must be true or false, found 0/,
    );
    // false where it does not apply changes nothing
    expect(toOnnx(spec, w, { ...assembled, batch: 2, scanAssembly: false })).toEqual(
      toOnnx(spec, w, { ...assembled, batch: 2 }),
    );
    // the weights are stored once either way (the Scan bodies hold only shapes and axes)
    expect(Math.abs(scan.initializerBytes - im2col.initializerBytes)).toBeLessThan(2048);
    expect(scan.subgraphInitializerBytes).toBeLessThan(2048);
  });

  it('createSession exports a spec for WebGPU without Scan unless told otherwise', () => {
    expect(exportOptionsFor('webgpu', undefined)).toEqual({ scanBatch: false });
    expect(exportOptionsFor('webgpu', { temperature: 0.5 })).toEqual({
      scanBatch: false,
      temperature: 0.5,
    });
    expect(exportOptionsFor('webgpu', { scanBatch: true })).toEqual({ scanBatch: true });
    // asking for the Scan form's per-sample assembly asks for the Scan form
    expect(exportOptionsFor('webgpu', { scanAssembly: true })?.scanBatch).toBeUndefined();
    expect(exportOptionsFor('webgpu', { scanAssembly: false })).toEqual({
      scanAssembly: false,
      scanBatch: false,
    });
    // an explicit undefined is not a choice: WebGPU still gets the form without Scan
    expect(exportOptionsFor('webgpu', { scanBatch: undefined })).toEqual({ scanBatch: false });
    expect(exportOptionsFor('wasm', undefined)).toBeUndefined();
    expect(exportOptionsFor('wasm', { batch: 2 })).toEqual({ batch: 2 });
    // not an object: handed on as it is, for toOnnx to name
    expect(exportOptionsFor('webgpu', 'x' as unknown as undefined)).toBe('x');
  });
});

describe('methods with an inference form export folded', () => {
  const cases: [string, ModelSpec][] = [
    [
      'DO-Conv resnet8_cifar',
      createModel('resnet8_cifar', { method: { kind: 'doconv' }, inputShape: [3, 12, 12] }),
    ],
    [
      'SLaK (tiny width)',
      createModel('slak_tiny', { inputShape: [3, 16, 16], width: 0.05, classes: 3 }),
    ],
  ];
  for (const [label, spec] of cases) {
    it(label, async () => {
      expect(await parity(spec)).toBeLessThan(TOL);
      const info = onnxInfo(toOnnx(spec, initWeights(spec)));
      expect(info.ops.MatMul ?? 0).toBe(0); // plain convs only: nothing dynamic left
    });
  }
});

/**
 * Three dynamic convs that walk each method's branches: a 3x3 grouped conv with padding (and a
 * bias where the method has one), a strided 1x1 conv, a depthwise 3x3 conv; then a linear head.
 * Every conv is an output: the signal shrinks through randomly initialised dynamic layers, and
 * a parity measured only on the head would not see an error in the last one.
 */
function methodSpec(method: DynamicMethodRef, bias = false): ModelSpec {
  const b = new SpecBuilder(`m-${method.kind}`, [6, 7, 7]);
  const grouped = method.kind === 'weightnet' ? 1 : 2; // WeightNet: groups 1 or depthwise only
  let x = b.dynamicConv2d(
    'a',
    b.input,
    { outChannels: 8, kernelSize: 3, padding: 1, groups: grouped, bias },
    method,
  );
  b.output(x);
  x = b.dynamicConv2d('p', b.relu('ar', x), { outChannels: 12, kernelSize: 1, stride: 2 }, method);
  b.output(x);
  x = b.dynamicConv2d('d', x, { outChannels: 12, kernelSize: 3, padding: 1, groups: 12 }, method);
  b.output(x); // each conv is an output, compared at its own scale
  b.output(b.linear('fc', b.flatten('fl', b.globalAvgPool('gp', b.relu('dr', x))), 5));
  return b.build();
}

describe('methods without an inference fold export as their attention + per-sample conv', () => {
  const cases: [string, ModelSpec][] = [
    ['CondConv, 3 experts, with biases', methodSpec({ kind: 'condconv', experts: 3 }, true)],
    [
      'DY-Conv, K = 4, softmax temperature 7, with biases',
      methodSpec({ kind: 'dyconv', kernels: 4, temperature: 7 }, true),
    ],
    ['ODConv 4x, temperature 3', methodSpec({ kind: 'odconv', kernels: 4, temperature: 3 })],
    ['ODConv 1x (no kernel head)', methodSpec({ kind: 'odconv', kernels: 1 })],
    ['WeightNet M = 2, G = 2 (lambda 1)', methodSpec({ kind: 'weightnet' })],
    ['WeightNet M = 4, G = 2 (lambda 2)', methodSpec({ kind: 'weightnet', M: 4, G: 2 })],
  ];
  for (const [label, spec] of cases) {
    it(`${label}: batch 1 and 3, dynamic batch`, async () => {
      expect(await parity(spec)).toBeLessThan(TOL);
    });
    it(`${label}: fixed batch 3 (grouped Conv)`, async () => {
      expect(await parity(spec, { batches: [3], fixedBatch: 3 })).toBeLessThan(TOL);
    });
  }

  const zoo: [string, Parameters<typeof createModel>[1]][] = [
    ['resnet8_cifar CondConv', { method: { kind: 'condconv', experts: 4 } }],
    ['resnet8_cifar DY-Conv', { method: { kind: 'dyconv', kernels: 4 } }],
    ['resnet8_cifar ODConv 4x', { method: { kind: 'odconv', kernels: 4 } }],
    ['resnet8_cifar WeightNet', { method: { kind: 'weightnet' } }],
    ['resnet8_cifar SE', { method: { kind: 'se' } }],
  ];
  for (const [label, opts] of zoo) {
    it(label, async () => {
      const spec = createModel('resnet8_cifar', { ...opts, inputShape: [3, 12, 12] });
      expect(await parity(spec)).toBeLessThan(TOL);
    });
  }
  it('mobilenetv2_050 ODConv 4x (depthwise: no filter head)', async () => {
    const spec = createModel('mobilenetv2_050', {
      method: { kind: 'odconv', kernels: 4 },
      inputShape: [3, 16, 16],
      classes: 5,
    });
    expect(await parity(spec)).toBeLessThan(TOL);
  });

  it('the graph carries the attention ops of each method and no refusal is left', () => {
    const ops = (method: DynamicMethodRef) => {
      const spec = methodSpec(method);
      return onnxInfo(toOnnx(spec, initWeights(spec))).ops;
    };
    expect(ops({ kind: 'condconv', experts: 3 }).Sigmoid).toBe(3);
    expect(ops({ kind: 'dyconv', kernels: 4 }).Softmax).toBe(3);
    const od = ops({ kind: 'odconv', kernels: 4 });
    // kernel head everywhere; channel head everywhere; filter head not on the depthwise conv;
    // spatial head not on the 1x1 conv
    expect(od.Softmax).toBe(3);
    expect(od.Sigmoid).toBe(3 + 2 + 2);
    expect(ops({ kind: 'weightnet' }).Sigmoid).toBe(3);
  });
});

describe('zoo backbones at small inputs', () => {
  const zoo: [string, Parameters<typeof createModel>[1]][] = [
    ['resnet8_cifar', { budget: null, classes: 10 }],
    ['resnet8_cifar', { budget: '1x', classes: 10 }],
    ['resnet8_cifar', { budget: '1/2x', classes: 10 }],
    ['resnet18', { budget: '1x', inputShape: [3, 16, 16], width: 0.25, classes: 7 }],
    ['resnet50', { budget: '1/2x', inputShape: [3, 16, 16], width: 0.25, classes: 7 }],
    ['mobilenetv2_050', { budget: '1/2x', inputShape: [3, 16, 16], classes: 5 }],
    ['mobilenetv2_050', { budget: '4x', inputShape: [3, 16, 16], classes: 5 }],
    ['convnext_tiny', { budget: '1x', inputShape: [3, 16, 16], width: 0.125, classes: 3 }],
  ];
  for (const [id, opts] of zoo) {
    it(`${id} ${opts?.budget ?? 'plain'}`, async () => {
      expect(await parity(createModel(id, opts), { batches: [1, 3] })).toBeLessThan(TOL);
    });
  }
});

describe('export details', () => {
  it('states opset 17 / IR 8, keeps the batch dynamic and reports ops', () => {
    const spec = tinyKwSpec({ budget: 1 });
    const ex = toOnnxWithInfo(spec, initWeights(spec));
    expect([ex.opset, ex.irVersion]).toEqual([17, 8]);
    expect([OPSET, IR_VERSION]).toEqual([17, 8]);
    const info = onnxInfo(ex.bytes);
    expect(info.opsets['']).toBe(17);
    expect(info.irVersion).toBe(8);
    expect(info.inputs).toEqual([{ name: 'input', shape: ['N', 3, 8, 8], elemType: 1 }]);
    expect(info.outputs).toEqual([{ name: 'fc', shape: ['N', 4], elemType: 1 }]);
    expect(allOps(info, 'MatMul')).toBeGreaterThanOrEqual(4);
    expect(info.ops).toEqual(ex.ops);
    expect(info.subgraphOps).toEqual(ex.subgraphOps);
    // a Scan per KW conv on an assembled kernel (3 of the 4: at 8x8 one mixes its taps,
    // `tapMixing`), each body assembling its sample's kernel (a MatMul) for its Conv
    expect([info.ops.Scan, info.subgraphOps.MatMul, info.subgraphOps.Conv]).toEqual([3, 3, 3]);
    expect(info.initializerBytes).toBe(ex.initializerBytes);
    expect(info.subgraphInitializerBytes).toBe(ex.subgraphInitializerBytes);
  });

  it('stores each warehouse once: initializer bytes track the parameter count', () => {
    for (const budget of ['1x', '1/4x']) {
      const spec = createModel('resnet18', { budget, inputShape: [3, 32, 32], classes: 10 });
      const ex = toOnnxWithInfo(spec, initWeights(spec));
      const params = countParams(spec);
      // + im2col one-hot kernels and shape constants, - BatchNorm folded away: within 3%
      expect(Math.abs(ex.initializerBytes / 4 / params - 1)).toBeLessThan(0.03);
    }
  });

  it('grouped conv with 5 output channels per group (the WebGPU NHWC bug shape) is exact on wasm; WebGPU asks for NCHW', async () => {
    const b = new SpecBuilder('g5', [6, 7, 7]);
    b.warehouse({ id: 'w', budget: 1 });
    const x = b.conv2d('c', b.input, { outChannels: 10, kernelSize: 3, padding: 1, groups: 2 });
    b.output(
      b.dynamicConv2d(
        'k',
        x,
        { outChannels: 10, kernelSize: 3, padding: 1, groups: 2 },
        { kind: 'kw', warehouse: 'w' },
      ),
    );
    expect(await parity(b.build())).toBeLessThan(TOL);
    expect(executionProviders('webgpu')).toEqual([{ name: 'webgpu', preferredLayout: 'NCHW' }]);
  });

  it('refuses bad input clearly', async () => {
    const spec = tinyKwSpec({ budget: 1 });
    const w = initWeights(spec);
    expect(() => toOnnx(spec, w, { temperature: 2 })).toThrow(/temperature must be in \[0, 1\]/);
    const missing = new Map(w);
    missing.delete('warehouses.stage0');
    expect(() => toOnnx(spec, missing)).toThrow(/missing: warehouses.stage0/);
    const session = await createSession({ spec, weights: w });
    await expect(runSession(session, randomInput(new Rng(1), [1, 3, 9, 9]))).rejects.toThrow(
      KwError,
    );
    await expect(createSession(new Uint8Array([1, 2, 3]))).rejects.toThrow(/refused the model/);
  });
});

describe('onnxInfo on hostile bytes', () => {
  const spec = tinyKwSpec({ budget: 1 });
  const good = toOnnx(spec, initWeights(spec));
  it('truncations, garbage and non-ONNX protobufs are ONNX_INVALID, never another error', () => {
    const rng = new Rng(9);
    const cases: Uint8Array[] = [
      new Uint8Array(0),
      Uint8Array.from([0xff, 0xff, 0xff]),
      new TextEncoder().encode('{"not":"onnx"}'),
    ];
    for (const cut of [1, 2, 10, 100, good.length >> 1, good.length - 1])
      cases.push(good.slice(0, cut));
    for (let i = 0; i < 40; i++)
      cases.push(Uint8Array.from({ length: 1 + rng.int(0, 300) }, () => rng.int(0, 255)));
    let refused = 0;
    for (const c of cases) {
      try {
        onnxInfo(c);
      } catch (e) {
        expect(e).toBeInstanceOf(KwError);
        expect((e as KwError).code).toBe('ONNX_INVALID');
        refused++;
      }
    }
    expect(refused).toBeGreaterThanOrEqual(cases.length - 5);
  });
});
