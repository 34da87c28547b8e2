/**
 * One conformance suite for every backend: each registered method (KernelWarehouse at several
 * budgets and attention variants) and SE, on fresh seeded random weights and inputs, in
 * inference and train mode, compared with the reference executor. The tolerance is stated once
 * here ({@link CONFORMANCE_TOLERANCE}); a backend's test only supplies a {@link BackendRunner}.
 * Exported from `@kernelwarehouse/core/testing`.
 */
import { initWeights } from './init.js';
import { METHODS } from './methods/registry.js';
import { addSqueezeExcite } from './methods/se.js';
import { runReference } from './reference/executor.js';
import { Rng } from './rng.js';
import { type ConvOptions, SpecBuilder } from './spec/builder.js';
import type { DynamicMethodRef, ModelSpec } from './spec/types.js';
import { maxRelativeError, type Tensor, type WeightMap } from './tensor.js';

/**
 * Largest accepted relative error `max|backend - reference| / max|reference|` (float32 backends
 * against the float64-accumulating reference; measured 1e-7 to 2e-6, the margin covers
 * attention BatchNorms in train mode, which divide by small batch variances).
 */
export const CONFORMANCE_TOLERANCE = 1e-4;

/** How a case runs. */
export interface ConformanceRun {
  mode: 'inference' | 'train';
  /** KernelWarehouse's tau (other methods run at their spec temperature). */
  temperature: number;
}

/** A backend under test: runs a spec on an NCHW batch and returns the spec's first output, NCHW. */
export interface BackendRunner {
  /** Modes it implements (an inference-only exporter leaves out 'train'). */
  modes: readonly ('inference' | 'train')[];
  run(
    spec: ModelSpec,
    weights: WeightMap,
    input: Tensor,
    run: ConformanceRun,
  ): Promise<Tensor> | Tensor;
}

/** One case of the suite: a spec the method under test appears in. */
export interface ConformanceCase {
  /** Registered method kind (or `se`, `plain`). */
  method: string;
  name: string;
  spec: () => ModelSpec;
}

/** One dynamic conv layer followed by BatchNorm and ReLU (so the output is a real feature map). */
function oneLayer(
  name: string,
  input: [number, number, number],
  conv: ConvOptions,
  method: DynamicMethodRef,
): ModelSpec {
  const b = new SpecBuilder(name, input);
  const y = b.dynamicConv2d('dyn', b.input, conv, method);
  b.output(b.relu('relu', b.batchNorm('bn', y)));
  return b.build();
}

/** A small KW net: two warehouses (a 3x3 one shared by plain, grouped and strided convs; a 1x1 one). */
function kwNet(
  o: {
    budget?: number;
    cellRatio?: number;
    norm?: 'batch' | 'layer';
    nonlocalBasisRatio?: number;
    classifier?: boolean;
  } = {},
): ModelSpec {
  const budget = o.budget ?? 1;
  const b = new SpecBuilder(`conformance-kw-${budget}`, [3, 8, 8]);
  for (const id of ['stage0', 'stage1', ...(o.classifier ? ['head'] : [])]) {
    b.warehouse({
      id,
      budget,
      norm: o.norm ?? 'batch',
      cellInRatio: o.cellRatio ?? 1,
      cellOutRatio: o.cellRatio ?? 1,
      nonlocalBasisRatio: o.nonlocalBasisRatio ?? 1,
    });
  }
  const k0 = { kind: 'kw' as const, warehouse: 'stage0' };
  let x = b.relu(
    'stem_relu',
    b.conv2d('stem', b.input, { outChannels: 8, kernelSize: 3, padding: 1 }),
  );
  const y = b.dynamicConv2d('c1', x, { outChannels: 8, kernelSize: 3, padding: 1 }, k0);
  const y2 = b.dynamicConv2d(
    'c2',
    b.relu('c1_relu', b.batchNorm('c1_bn', y)),
    { outChannels: 8, kernelSize: 3, padding: 1, groups: 2, bias: true },
    k0,
  );
  x = b.relu('add_relu', b.addNodes('add', [x, y2]));
  x = b.dynamicConv2d('down', x, { outChannels: 16, kernelSize: 3, stride: 2, padding: 1 }, k0);
  x = b.dynamicConv2d(
    'pw',
    x,
    { outChannels: 16, kernelSize: 1 },
    { kind: 'kw', warehouse: 'stage1' },
  );
  x = b.flatten('flat', b.globalAvgPool('pool', b.relu('pw_relu', b.batchNorm('pw_bn', x))));
  x = o.classifier
    ? b.dynamicLinear('fc', x, 4, { kind: 'kw', warehouse: 'head' })
    : b.linear('fc', x, 4);
  b.output(x);
  return b.build();
}

function seNet(): ModelSpec {
  const b = new SpecBuilder('conformance-se', [6, 6, 6]);
  const x = b.conv2d('c', b.input, { outChannels: 8, kernelSize: 3, padding: 1 });
  b.output(addSqueezeExcite(b, 'se', b.relu('r', x), 8, { reduction: 4 }));
  return b.build();
}

/**
 * One KW 3x3 conv of 64 channels with its own warehouse, on 3x3 maps: few cells (n = 9) for many
 * channels on few pixels, where a backend's `Ops.mixTaps` pays (tfjs wasm takes the mixed
 * form here, for whole-tap cells and for halved ones alike).
 */
function kwFewCells(budget: number, cellRatio: number): ModelSpec {
  const b = new SpecBuilder(`conformance-kw-few-cells-${budget}`, [64, 3, 3]);
  b.warehouse({ id: 'w', budget, cellInRatio: cellRatio, cellOutRatio: cellRatio });
  const conv = { outChannels: 64, kernelSize: 3, padding: 1, bias: true };
  const y = b.dynamicConv2d('dyn', b.input, conv, { kind: 'kw', warehouse: 'w' });
  b.output(b.relu('relu', b.batchNorm('bn', y)));
  return b.build();
}

/** Every case of the suite. Each registered method kind has at least one (a test checks it). */
export function conformanceCases(): ConformanceCase[] {
  const c = (method: string, name: string, spec: () => ModelSpec) => ({ method, name, spec });
  return [
    c('kw', 'KW b=1', () => kwNet()),
    c('kw', 'KW b=2, half cells', () => kwNet({ budget: 2, cellRatio: 0.5 })),
    c('kw', 'KW b=1/3, KW classifier', () => kwNet({ budget: 1 / 3, classifier: true })),
    c('kw', 'KW LayerNorm attention', () => kwNet({ norm: 'layer', classifier: true })),
    c('kw', 'KW non-local basis 0.5', () => kwNet({ budget: 2, nonlocalBasisRatio: 0.5 })),
    c('kw', 'KW 64 channels, 9 whole-tap cells', () => kwFewCells(1, 1)),
    c('kw', 'KW 64 channels, 9 halved cells (G_out = G_in = 2)', () => kwFewCells(1 / 4, 0.5)),
    c('condconv', 'CondConv groups 2, bias, stride 2', () =>
      oneLayer(
        'cc',
        [4, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, stride: 2, groups: 2, bias: true },
        { kind: 'condconv', experts: 3 },
      ),
    ),
    c('dyconv', 'DY-Conv depthwise, bias, dilation 2, temperature 0.7', () =>
      oneLayer(
        'dy',
        [6, 8, 8],
        { outChannels: 6, kernelSize: 3, padding: 2, dilation: 2, groups: 6, bias: true },
        { kind: 'dyconv', kernels: 3, temperature: 0.7 },
      ),
    ),
    c('odconv', 'ODConv K=3 groups 2, temperature 2', () =>
      oneLayer(
        'od',
        [4, 6, 6],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 2 },
        { kind: 'odconv', kernels: 3, minHidden: 4, temperature: 2 },
      ),
    ),
    c('odconv', 'ODConv depthwise K=1 (no filter or kernel head)', () =>
      oneLayer(
        'od-dw',
        [6, 6, 6],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 },
        { kind: 'odconv', kernels: 1, minHidden: 4 },
      ),
    ),
    c('weightnet', 'WeightNet M=2 G=2', () =>
      oneLayer(
        'wn',
        [4, 6, 6],
        { outChannels: 6, kernelSize: 3, padding: 1 },
        { kind: 'weightnet' },
      ),
    ),
    c('weightnet', 'WeightNet depthwise M=4 G=2', () =>
      oneLayer(
        'wn-dw',
        [6, 6, 6],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 },
        { kind: 'weightnet', M: 4, G: 2 },
      ),
    ),
    c('doconv', 'DO-GConv groups 2, bias', () =>
      oneLayer(
        'do',
        [4, 6, 6],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 2, bias: true },
        { kind: 'doconv' },
      ),
    ),
    c('slak', 'SLaK K=7 N=3', () =>
      oneLayer(
        'slak',
        [4, 9, 9],
        { outChannels: 4, kernelSize: 7, padding: 3, groups: 4 },
        { kind: 'slak', smallKernel: 3 },
      ),
    ),
    c('se', 'SE block', seNet),
  ];
}

/** Every tensor randomised (BatchNorm variances in [0.5, 1.5]): no path is trivially zero or identity. */
export function conformanceWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  for (const [k, t] of w) {
    const data = new Float32Array(t.data);
    if (k.endsWith('running_var'))
      for (let i = 0; i < data.length; i++) data[i] = 0.5 + rng.uniform();
    else if (!k.endsWith('d_diag'))
      for (let i = 0; i < data.length; i++) data[i]! += 0.1 * rng.normal();
    w.set(k, { shape: [...t.shape], data });
  }
  return w;
}

/** One check of the suite: a case in one mode, at one tau and batch size. */
export interface ConformanceCheck {
  /** e.g. `KW b=1 | train, tau 0.4, batch 3`. */
  name: string;
  case: ConformanceCase;
  run: ConformanceRun;
  batch: number;
  /** Runs the backend and the reference on fresh seeded inputs; returns the relative error. */
  measure(runner: BackendRunner): Promise<{ error: number; shape: number[]; want: number[] }>;
}

/**
 * The checks a backend with `modes` runs: inference (batch 1 and 3), train (batch 5); KW also at
 * tau 0.4, and in inference at tau 1 (constant attention: one ordinary conv per KW layer).
 */
export function conformanceChecks(modes: readonly ('inference' | 'train')[]): ConformanceCheck[] {
  const out: ConformanceCheck[] = [];
  conformanceCases().forEach((cs, ci) => {
    const runs: [ConformanceRun, number][] = [];
    if (modes.includes('inference')) {
      runs.push(
        [{ mode: 'inference', temperature: 0 }, 1],
        [{ mode: 'inference', temperature: 0 }, 3],
      );
      if (cs.method === 'kw')
        runs.push(
          [{ mode: 'inference', temperature: 0.4 }, 3],
          [{ mode: 'inference', temperature: 1 }, 3],
        );
    }
    if (modes.includes('train')) {
      // train-mode BatchNorms divide by batch variances: 5 samples keep that well conditioned
      runs.push([{ mode: 'train', temperature: 0 }, 5]);
      if (cs.method === 'kw') runs.push([{ mode: 'train', temperature: 0.4 }, 5]);
    }
    for (const [run, batch] of runs) {
      out.push({
        name: `${cs.name} | ${run.mode}, tau ${run.temperature}, batch ${batch}`,
        case: cs,
        run,
        batch,
        async measure(runner) {
          const spec = cs.spec();
          const weights = conformanceWeights(spec, 1000 + ci);
          const rng = new Rng(7 * ci + batch);
          const n = spec.inputShape.reduce((a, b) => a * b, batch);
          const x: Tensor = { shape: [batch, ...spec.inputShape], data: rng.normalArray(n) };
          const want = runReference(spec, weights, x, run).get(spec.outputs[0]!)!;
          const got = await runner.run(spec, weights, x, run);
          const same =
            got.shape.length === want.shape.length &&
            got.shape.every((d, i) => d === want.shape[i]);
          return {
            error: same ? maxRelativeError(got.data, want.data) : Number.POSITIVE_INFINITY,
            shape: [...got.shape],
            want: [...want.shape],
          };
        },
      });
    }
  });
  return out;
}

/** Registered method kinds without a conformance case (empty when the suite covers them all). */
export function uncoveredMethods(): string[] {
  const covered = new Set(conformanceCases().map((c) => c.method));
  return [...METHODS.keys()].filter((k) => !covered.has(k));
}
