// The tfjs layers of every method beside KW (CondConv, DY-Conv, ODConv, WeightNet, SE, DO-Conv,
// DO-DConv, DO-GConv, SLaK) against core's reference executor on the same random weights, on the
// cpu and wasm backends, in inference and training mode. Tolerance: relative error
// max|tfjs - ref| / max|ref| < 1e-4 (float32). Plus: DO-Conv / SLaK fold == unfolded, gradients
// against finite differences, tensor-leak checks per layer type, weight round trips, errors.
import {
  loadWeights as coreLoad,
  type DynamicMethodRef,
  initWeights,
  isKwError,
  type ModelSpec,
  type NodeSpec,
  runReference,
  SpecBuilder,
  saveWeights,
  type WeightMap,
} from '@kernelwarehouse/core';
import { perturb, Rng, randomInput } from '@kernelwarehouse/core/testing';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildModel,
  CondConv2D,
  exportWeights,
  foldModel,
  fromModelOutput,
  loadWeights,
  MethodConvLayer,
  methodSchedule,
  methodTemperatureCallback,
  registerTrainingKernels,
  SpecNode,
  setMethodTemperature,
  setTemperature,
  specVariables,
  stepMethodTemperature,
  toModelInput,
} from '../src/index.js';
import { relErr, useBackend } from './helpers.js';

/** Relative-error tolerance of every forward comparison here (float32). */
const TOL = 1e-4;

/** One dynamic conv layer (plus a BN and ReLU after it, so the output is a real feature map). */
function oneLayer(
  name: string,
  input: [number, number, number],
  conv: Parameters<SpecBuilder['dynamicConv2d']>[2],
  method: DynamicMethodRef,
): ModelSpec {
  const b = new SpecBuilder(name, input);
  const y = b.dynamicConv2d('dyn', b.input, conv, method);
  b.output(b.relu('relu', b.batchNorm('bn', y)));
  return b.build();
}

/** The same spec with extra settings merged into every non-KW dynamic node's method. */
function withMethod(spec: ModelSpec, patch: Record<string, unknown>): ModelSpec {
  const nodes = spec.nodes.map((n: NodeSpec) =>
    n.op === 'dynamicConv2d' ? ({ ...n, method: { ...n.method, ...patch } } as NodeSpec) : n,
  );
  return { ...spec, nodes };
}

const zoo = (method: Parameters<typeof createModel>[1]) => () =>
  createModel('resnet8_cifar', { ...method, inputShape: [3, 8, 8], classes: 5 });

/** [method, case label, spec] */
const CASES: [string, string, () => ModelSpec][] = [
  ['condconv', 'resnet8 4 experts', zoo({ method: { kind: 'condconv', experts: 4 } })],
  [
    'condconv',
    'groups 2, bias, stride 2',
    () =>
      oneLayer(
        'cc',
        [4, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, stride: 2, groups: 2, bias: true },
        { kind: 'condconv', experts: 3 },
      ),
  ],
  [
    'dyconv',
    'resnet8 K=4, tau 3',
    () => withMethod(zoo({ method: { kind: 'dyconv', kernels: 4 } })(), { temperature: 3 }),
  ],
  [
    'dyconv',
    'depthwise, bias, dilation 2, tau 0.7',
    () =>
      oneLayer(
        'dy',
        [6, 8, 8],
        { outChannels: 6, kernelSize: 3, padding: 2, dilation: 2, groups: 6, bias: true },
        { kind: 'dyconv', kernels: 3, temperature: 0.7 },
      ),
  ],
  [
    'odconv',
    'resnet8 K=4, tau 2',
    () => withMethod(zoo({ method: { kind: 'odconv', kernels: 4 } })(), { temperature: 2 }),
  ],
  ['odconv', 'resnet8 K=1', zoo({ method: { kind: 'odconv', kernels: 1 } })],
  [
    'odconv',
    'depthwise K=2 (no filter head)',
    () =>
      oneLayer(
        'od-dw',
        [6, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 },
        { kind: 'odconv', kernels: 2, minHidden: 4 },
      ),
  ],
  [
    'odconv',
    '1x1 groups 2 stride 2 (no spatial head)',
    () =>
      oneLayer(
        'od-1x1',
        [4, 7, 7],
        { outChannels: 6, kernelSize: 1, stride: 2, groups: 2 },
        { kind: 'odconv', kernels: 3, minHidden: 4, temperature: 5 },
      ),
  ],
  ['weightnet', 'resnet8 M=2 G=2', zoo({ method: { kind: 'weightnet' } })],
  [
    'weightnet',
    'depthwise M=4 G=2',
    () =>
      oneLayer(
        'wn-dw',
        [6, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 },
        { kind: 'weightnet', M: 4, G: 2 },
      ),
  ],
  ['se', 'resnet8 SE blocks', zoo({ method: { kind: 'se' } })],
  ['doconv', 'resnet8 DO-Conv', zoo({ method: { kind: 'doconv' } })],
  [
    'doconv',
    'D_mul 11, bias, stride 2',
    () =>
      oneLayer(
        'do',
        [3, 8, 8],
        { outChannels: 5, kernelSize: 3, padding: 1, stride: 2, bias: true },
        { kind: 'doconv', dMul: 11 },
      ),
  ],
  [
    'do-dconv',
    'depthwise 3x3',
    () =>
      oneLayer(
        'do-dw',
        [6, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 6 },
        { kind: 'doconv' },
      ),
  ],
  [
    'do-gconv',
    'c 4, f 6, groups 2 (official index rule)',
    () =>
      oneLayer(
        'do-g',
        [4, 7, 7],
        { outChannels: 6, kernelSize: 3, padding: 1, groups: 2, bias: true },
        { kind: 'doconv' },
      ),
  ],
  [
    'slak',
    'K 7, N 3 (three branches)',
    () =>
      oneLayer(
        'slak',
        [4, 9, 9],
        { outChannels: 4, kernelSize: 7, padding: 3, groups: 4 },
        { kind: 'slak', smallKernel: 3 },
      ),
  ],
  [
    'slak',
    'K 5, N 5 (two branches), fold full',
    () =>
      oneLayer(
        'slak2',
        [4, 8, 8],
        { outChannels: 4, kernelSize: 5, padding: 2, groups: 4 },
        { kind: 'slak', smallKernel: 5, fold: 'full' },
      ),
  ],
];

/** Seeded random weights: non-trivial BN statistics, DO-Conv's D away from 0, biases set. */
function randomWeights(spec: ModelSpec, seed: number): WeightMap {
  const rng = new Rng(seed);
  const w = initWeights(spec, { seed });
  for (const [k, t] of w) {
    if (k.endsWith('running_var'))
      w.set(k, { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) });
    else if (!k.endsWith('d_diag')) w.set(k, perturb(rng, t, k.endsWith('.D') ? 0.2 : 0.05));
  }
  return w;
}

/** Largest relative error per "method | backend | mode". */
const worst: Record<string, number> = {};
const note = (key: string, e: number) => {
  worst[key] = Math.max(worst[key] ?? 0, e);
};

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`method layers vs core reference on ${backend}`, () => {
    for (const [method, label, make] of CASES) {
      for (const mode of ['inference', 'train'] as const) {
        it(`${method}: ${label}, ${mode}`, async () => {
          await useBackend(backend);
          const spec = make();
          const weights = randomWeights(spec, 17);
          const x = randomInput(new Rng(23), [3, ...spec.inputShape]);
          const want = runReference(spec, weights, x, { mode }).get(spec.outputs[0]!)!;
          const model = buildModel(spec, weights);
          if (method !== 'se') {
            expect(model.layers.some((l) => l instanceof MethodConvLayer)).toBe(true);
          }
          const xi = toModelInput(x);
          const y = model.apply(xi, { training: mode === 'train' }) as tf.Tensor;
          const got = fromModelOutput(y);
          tf.dispose([xi, y]);
          model.dispose();
          const e = relErr(got.data, want.data);
          note(`${method} | ${backend} | ${mode}`, e);
          expect(got.shape).toEqual(want.shape);
          expect(e).toBeLessThan(TOL);
        });
      }
    }

    it('setMethodTemperature drives DY-Conv and ODConv like the node setting does', async () => {
      await useBackend(backend);
      for (const kind of ['dyconv', 'odconv'] as const) {
        const base = zoo({ method: { kind, kernels: 3 } })();
        const weights = randomWeights(base, 5);
        const x = randomInput(new Rng(6), [2, ...base.inputShape]);
        const hot = withMethod(base, { temperature: 7 });
        const want = runReference(hot, weights, x).get(hot.outputs[0]!)!;
        const cold = runReference(base, weights, x).get(base.outputs[0]!)!;
        const model = buildModel(base, weights);
        setMethodTemperature(model, 7);
        const xi = toModelInput(x);
        const y = model.predict(xi) as tf.Tensor;
        const got = fromModelOutput(y);
        tf.dispose([xi, y]);
        model.dispose();
        expect(relErr(cold.data, want.data)).toBeGreaterThan(1e-3); // tau matters here
        expect(relErr(got.data, want.data)).toBeLessThan(TOL);
      }
    });

    for (const [method, label, make] of CASES.filter(([m]) => /^(do|slak)/.test(m))) {
      it(`foldModel: ${method} ${label} folds to plain layers with the same output`, async () => {
        await useBackend(backend);
        const spec = make();
        const weights = randomWeights(spec, 31);
        const model = buildModel(spec, weights);
        const folded = foldModel(model, spec);
        expect(folded.layers.some((l) => l instanceof MethodConvLayer)).toBe(false);
        expect(folded.layers.filter((l) => l instanceof SpecNode).length).toBeGreaterThan(0);
        const xi = toModelInput(randomInput(new Rng(8), [2, ...spec.inputShape]));
        const a = model.predict(xi) as tf.Tensor;
        const b = folded.predict(xi) as tf.Tensor;
        const e = relErr(b.dataSync(), a.dataSync());
        note(`fold ${method} | ${backend}`, e);
        tf.dispose([xi, a, b]);
        model.dispose();
        folded.dispose();
        expect(e).toBeLessThan(TOL);
      });
    }
  });
}

/** Each new layer type once, in one small spec per type (leaks, round trips, gradients). */
const LAYER_SPECS: [string, () => ModelSpec][] = [
  ['CondConv2D', CASES[1]![2]],
  [
    'DyConv2D',
    // no dilation here: tfjs has no gradient for dilated convs (see README, Limits)
    () =>
      oneLayer(
        'dy',
        [4, 6, 6],
        { outChannels: 4, kernelSize: 3, padding: 1, groups: 2, bias: true },
        { kind: 'dyconv', kernels: 3 },
      ),
  ],
  [
    'ODConv2D',
    () =>
      oneLayer(
        'od',
        [4, 6, 6],
        { outChannels: 4, kernelSize: 3, padding: 1 },
        { kind: 'odconv', kernels: 2, minHidden: 4 },
      ),
  ],
  ['WeightNet2D', CASES[9]![2]],
  ['DOConv2D', CASES[14]![2]],
  ['SLaKConv2D', CASES[15]![2]],
];

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`no tensor leaks in the method layers on ${backend}`, () => {
    for (const [label, make] of LAYER_SPECS) {
      it(label, async () => {
        await useBackend(backend);
        if (backend === 'wasm') registerTrainingKernels('wasm');
        const inner = make();
        // the one-layer spec with a linear head, so model.fit has a 2-D target
        const spec: ModelSpec = {
          ...inner,
          nodes: [
            ...inner.nodes,
            { id: 'flat', op: 'flatten', inputs: [inner.outputs[0]!] },
          ] as NodeSpec[],
          outputs: ['flat'],
        };
        const model = buildModel(spec, randomWeights(spec, 2));
        const x = toModelInput(randomInput(new Rng(1), [4, ...spec.inputShape]));
        const out = model.outputs[0]!.shape[1]!;
        const y = tf.randomNormal([4, out]);
        model.compile({ optimizer: tf.train.sgd(1e-3), loss: 'meanSquaredError' });
        tf.dispose(model.predict(x) as tf.Tensor);
        await model.fit(x, y, { epochs: 1, batchSize: 2, verbose: 0 });
        const start = tf.memory().numTensors;
        for (let i = 0; i < 4; i++) {
          setMethodTemperature(model, 1 + i);
          tf.dispose(model.predict(x) as tf.Tensor);
          await model.fit(x, y, { epochs: 1, batchSize: 2, verbose: 0 });
        }
        expect(tf.memory().numTensors).toBe(start);
        tf.dispose([x, y]);
        model.dispose();
      });
    }
  });
}

/** Loss sum(model(x) * r) and its analytic gradient wrt the named variables, vs central differences. */
function finiteDifferenceCheck(spec: ModelSpec, names: string[], training: boolean) {
  const model = buildModel(spec, randomWeights(spec, 4));
  const shape = spec.inputShape as number[];
  const x = toModelInput(randomInput(new Rng(1), [2, ...shape]));
  const outShape = model.outputs[0]!.shape.slice(1) as number[];
  const r = tf.tensor(new Rng(2).normalArray(2 * outShape.reduce((a, b) => a * b, 1)), [
    2,
    ...outShape,
  ]);
  const loss = () => tf.sum(tf.mul(model.apply(x, { training }) as tf.Tensor, r)) as tf.Scalar;
  const vars = specVariables(model);
  let err = 0;
  let checked = 0;
  for (const name of names) {
    const v = vars.get(name);
    if (!v) throw new Error(`no variable ${name}`);
    const tv = (v as unknown as { val: tf.Variable }).val;
    const { value, grads: g } = tf.variableGrads(loss, [tv]);
    const an = g[tv.name]!.dataSync();
    tf.dispose([value, g[tv.name]!]);
    const base = v.read().dataSync().slice() as Float32Array;
    for (const idx of [0, Math.floor(base.length / 2), base.length - 1]) {
      const eps = 3e-3;
      const at = (d: number) => {
        const p = base.slice();
        p[idx]! += d;
        tf.tidy(() => {
          v.write(tf.tensor(p, v.shape as number[]));
        });
        return tf.tidy(() => loss().dataSync()[0]!);
      };
      const fd = (at(eps) - at(-eps)) / (2 * eps);
      tf.tidy(() => {
        v.write(tf.tensor(base, v.shape as number[]));
      });
      err = Math.max(err, Math.abs(fd - an[idx]!) / Math.max(Math.abs(an[idx]!), 0.1));
      checked++;
    }
  }
  tf.dispose([x, r]);
  model.dispose();
  return { err, checked };
}

describe('gradients of the method layers', () => {
  it('ODConv (training mode, attention BN on batch statistics) and CondConv match central finite differences (cpu)', async () => {
    await useBackend('cpu');
    const od = finiteDifferenceCheck(
      LAYER_SPECS[2]![1](),
      [
        'dyn.weight',
        'dyn.attention.fc.weight',
        'dyn.attention.bn.weight',
        'dyn.attention.channel_fc.weight',
        'dyn.attention.filter_fc.bias',
        'dyn.attention.spatial_fc.weight',
        'dyn.attention.kernel_fc.weight',
      ],
      true,
    );
    const cc = finiteDifferenceCheck(
      LAYER_SPECS[0]![1](),
      ['dyn.weight', 'dyn.bias', 'dyn.routing_fn.weight', 'dyn.routing_fn.bias'],
      false,
    );
    console.log(
      `finite differences: ODConv worst relative error ${od.err.toExponential(2)} (${od.checked} entries), CondConv ${cc.err.toExponential(2)} (${cc.checked} entries)`,
    );
    note('gradient vs finite differences | ODConv', od.err);
    note('gradient vs finite differences | CondConv', cc.err);
    expect(od.checked).toBe(21);
    expect(cc.checked).toBe(12);
    expect(od.err).toBeLessThan(1e-2);
    expect(cc.err).toBeLessThan(1e-2);
  });

  it('every method layer trains on wasm with the same gradients as on cpu', async () => {
    const b = new SpecBuilder('chain', [4, 7, 7]);
    let x = b.dynamicConv2d(
      'od',
      b.input,
      { outChannels: 4, kernelSize: 3, padding: 1 },
      { kind: 'odconv', kernels: 2, minHidden: 4 },
    );
    x = b.dynamicConv2d(
      'cc',
      x,
      { outChannels: 4, kernelSize: 3, padding: 1, bias: true },
      { kind: 'condconv', experts: 2 },
    );
    x = b.dynamicConv2d(
      'dy',
      x,
      { outChannels: 4, kernelSize: 3, padding: 1, groups: 4 },
      { kind: 'dyconv', kernels: 2 },
    );
    x = b.dynamicConv2d(
      'wn',
      x,
      { outChannels: 4, kernelSize: 3, padding: 1 },
      { kind: 'weightnet' },
    );
    x = b.dynamicConv2d(
      'do',
      x,
      { outChannels: 4, kernelSize: 3, padding: 1, groups: 2 },
      { kind: 'doconv' },
    );
    x = b.dynamicConv2d(
      'sl',
      x,
      { outChannels: 4, kernelSize: 5, padding: 2, groups: 4 },
      { kind: 'slak', smallKernel: 3 },
    );
    b.output(b.flatten('flat', x));
    const spec = b.build();
    const weights = randomWeights(spec, 9);
    const x0 = randomInput(new Rng(3), [2, ...spec.inputShape]);
    const run = () => {
      const model = buildModel(spec, weights);
      const trainable = [...specVariables(model).entries()].filter(([, v]) => v.trainable);
      const xi = toModelInput(x0);
      const loss = () =>
        tf.sum(tf.square(model.apply(xi, { training: true }) as tf.Tensor)) as tf.Scalar;
      const { value, grads } = tf.variableGrads(
        loss,
        trainable.map(([, v]) => (v as unknown as { val: tf.Variable }).val),
      );
      const out = new Map<string, Float32Array>();
      for (const [n, v] of trainable) {
        out.set(
          n,
          grads[(v as unknown as { val: tf.Variable }).val.name]!.dataSync() as Float32Array,
        );
      }
      tf.dispose([value, xi, ...Object.values(grads)]);
      model.dispose();
      return out;
    };
    await useBackend('cpu');
    const cpu = run();
    await useBackend('wasm');
    registerTrainingKernels('wasm');
    const wasm = run();
    let e = 0;
    for (const [n, g] of cpu) e = Math.max(e, relErr(wasm.get(n)!, g));
    console.log(
      `method layer gradients wasm vs cpu (${cpu.size} tensors): worst relative error ${e.toExponential(2)}`,
    );
    note('gradient wasm vs cpu | all method layers', e);
    expect(cpu.size).toBeGreaterThan(30);
    expect(e).toBeLessThan(1e-3);
  });
});

describe('weights in and out with method layers', () => {
  const mixed = () => {
    const b = new SpecBuilder('mixed', [4, 8, 8]);
    let x = b.dynamicConv2d(
      'od',
      b.input,
      { outChannels: 6, kernelSize: 3, padding: 1 },
      { kind: 'odconv', kernels: 2, minHidden: 4 },
    );
    x = b.dynamicConv2d(
      'do',
      x,
      { outChannels: 6, kernelSize: 3, padding: 1, groups: 3, bias: true },
      { kind: 'doconv' },
    );
    x = b.dynamicConv2d(
      'sl',
      x,
      { outChannels: 6, kernelSize: 5, padding: 2, groups: 6 },
      { kind: 'slak', smallKernel: 3 },
    );
    b.output(b.linear('fc', b.flatten('flat', b.globalAvgPool('gap', x)), 3));
    return b.build();
  };

  it('exportWeights -> safetensors -> loadWeights round-trips byte-identically (ODConv, DO-GConv, SLaK)', async () => {
    await useBackend('cpu');
    const spec = mixed();
    const w = randomWeights(spec, 12);
    const model = buildModel(spec, w);
    const bytes = saveWeights(spec, exportWeights(model));
    expect(Buffer.from(bytes).equals(Buffer.from(saveWeights(spec, w)))).toBe(true);
    const fresh = buildModel(spec);
    loadWeights(fresh, coreLoad(spec, bytes));
    const again = saveWeights(spec, exportWeights(fresh));
    expect(Buffer.from(again).equals(Buffer.from(bytes))).toBe(true);
    const xi = toModelInput(randomInput(new Rng(4), [2, ...spec.inputShape]));
    const a = model.predict(xi) as tf.Tensor;
    const c = fresh.predict(xi) as tf.Tensor;
    expect(Array.from(c.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([xi, a, c]);
  });

  it('model.save -> tf.loadLayersModel restores the method layers (registered classes)', async () => {
    await useBackend('cpu');
    const spec = mixed();
    const model = buildModel(spec, randomWeights(spec, 13));
    let artifacts: tf.io.ModelArtifacts | undefined;
    await model.save(
      tf.io.withSaveHandler(async (a) => {
        artifacts = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
    const kinds = loaded.layers.map((l) => l.getClassName());
    expect(kinds).toEqual(expect.arrayContaining(['ODConv2D', 'DOConv2D', 'SLaKConv2D']));
    const xi = toModelInput(randomInput(new Rng(4), [2, ...spec.inputShape]));
    const a = model.predict(xi) as tf.Tensor;
    const c = loaded.predict(xi) as tf.Tensor;
    expect(Array.from(c.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([xi, a, c]);
  });
});

describe('errors are KwErrors with codes', () => {
  it('loadWeights: WEIGHTS_MISSING and WEIGHTS_SHAPE; temperatures: ARGUMENT_INVALID; layers: SPEC_BAD_FIELD', async () => {
    await useBackend('cpu');
    const spec = LAYER_SPECS[2]![1]();
    const model = buildModel(spec);
    const w = exportWeights(model);
    const code = (f: () => void) => {
      try {
        f();
      } catch (e) {
        return isKwError(e) ? e.code : `not a KwError: ${String(e)}`;
      }
      return 'no error';
    };
    const missing = new Map(w);
    missing.delete('dyn.attention.bn.running_var');
    expect(code(() => loadWeights(model, missing))).toBe('WEIGHTS_MISSING');
    expect(() => loadWeights(model, missing)).toThrow(/"dyn.attention.bn.running_var"/);
    const bad = new Map(w);
    bad.set('dyn.weight', { shape: [1, 2], data: new Float32Array(2) });
    expect(code(() => loadWeights(model, bad))).toBe('WEIGHTS_SHAPE');
    expect(() => loadWeights(model, bad)).toThrow(/expected shape \[2,4,4,3,3\], found \[1,2\]/);
    expect(code(() => setTemperature(model, 2))).toBe('ARGUMENT_INVALID');
    expect(code(() => setMethodTemperature(model, 0))).toBe('ARGUMENT_INVALID');
    expect(code(() => setMethodTemperature(model, Number.NaN))).toBe('ARGUMENT_INVALID');
    // tiny temperatures overflow logit / tau to NaN: refused at the setter (core's minimum)
    expect(() => setMethodTemperature(model, 5e-324)).toThrow(
      /ARGUMENT_INVALID.*>= 0\.001.*5e-324/,
    );
    const linear: NodeSpec = {
      id: 'lin',
      op: 'dynamicLinear',
      inputs: ['input'],
      outFeatures: 3,
      bias: false,
      method: { kind: 'condconv', experts: 2 },
    } as NodeSpec;
    expect(code(() => new CondConv2D({ node: linear }))).toBe('SPEC_BAD_FIELD');
    const unknown = withMethod(spec, { kind: 'nosuchmethod' });
    expect(code(() => buildModel(unknown))).toBe('SPEC_UNKNOWN_METHOD');
    model.dispose();
  });
});

afterAll(() => {
  console.log(
    Object.entries(worst)
      .map(([k, v]) => `${k}: ${v.toExponential(2)}`)
      .join('\n'),
  );
});

describe('DY-Conv / ODConv temperature schedule', () => {
  it('methodTemperatureCallback anneals 30 -> 1 per batch in model.fit and leaves 1', async () => {
    await useBackend('cpu');
    const spec = oneLayer(
      'dy-sched',
      [3, 6, 6],
      { outChannels: 4, kernelSize: 3, padding: 1 },
      { kind: 'dyconv', kernels: 3 },
    );
    const model = buildModel(spec, initWeights(spec, { seed: 3 }));
    const layer = model.layers.find((l) => l instanceof MethodConvLayer) as unknown as {
      temperature: number;
    };
    const n = 8;
    const batchSize = 2;
    const x = tf.randomNormal([n, 6, 6, 3]);
    const y = tf.randomNormal([n, ...(model.outputs[0]!.shape.slice(1) as number[])]);
    model.compile({ optimizer: tf.train.sgd(1e-3), loss: 'meanSquaredError' });
    const sched = methodSchedule(n / batchSize, 2); // 2 epochs of 4 batches: 30 -> 1
    const seen: number[] = [];
    const inLayer: number[] = [];
    await model.fit(x, y, {
      epochs: 3,
      batchSize,
      shuffle: false,
      callbacks: [
        methodTemperatureCallback(model, sched, (t) => seen.push(t)),
        new tf.CustomCallback({ onBatchEnd: async () => void inLayer.push(layer.temperature) }),
      ],
    });
    expect(seen.length).toBe(12);
    // by hand: T = 8, t = 1..12, value = 1 + 29 * max(0, (8 - t) / 8)
    seen.forEach((v, i) => {
      expect(v).toBeCloseTo(1 + 29 * Math.max(0, (8 - (i + 1)) / 8), 10);
    });
    expect(inLayer).toEqual(seen); // the layer ran each batch at the scheduled value
    expect(layer.temperature).toBe(1);
    expect(stepMethodTemperature(model, { epochs: 1, itersPerEpoch: 10 }, 0, 4)).toBeCloseTo(
      1 + 29 * 0.5,
      10,
    );
    expect(layer.temperature).toBeCloseTo(15.5, 10);
    tf.dispose([x, y]);
    model.dispose();
  });
});
