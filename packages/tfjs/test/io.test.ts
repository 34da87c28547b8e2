import { loadWeights as coreLoad, initWeights, saveWeights } from '@kernelwarehouse/core';
import { Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import {
  buildModel,
  chooseBackend,
  exportWeights,
  fromModelOutput,
  loadWeights,
  ownWasmKernelsStatus,
  resetBackendReport,
  setOwnWasmKernels,
  toModelInput,
} from '../src/index.js';
import { useBackend } from './helpers.js';

async function saveArtifacts(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let out: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      out = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return out!;
}

const bytes = (a: tf.io.ModelArtifacts) =>
  new Uint8Array(tf.io.concatenateArrayBuffers([a.weightData as ArrayBuffer].flat()));

describe('weights in and out', () => {
  it('exportWeights -> safetensors -> loadWeights -> exportWeights is byte-identical', async () => {
    await useBackend('cpu');
    const spec = tinyKwSpec({ budget: 2, kwClassifier: true });
    const w = initWeights(spec, { seed: 21 });
    const model = buildModel(spec, w);
    const a = saveWeights(spec, exportWeights(model));
    // Buffer.compare, not toEqual (a per-element deep equality: 10-19 s of this test, issue 15)
    expect(Buffer.compare(a, saveWeights(spec, w))).toBe(0);
    const fresh = buildModel(spec);
    loadWeights(fresh, coreLoad(spec, a));
    const b = saveWeights(spec, exportWeights(fresh));
    expect(Buffer.from(b).equals(Buffer.from(a))).toBe(true);
    expect(() => loadWeights(fresh, new Map())).toThrow(
      /loadWeights: missing tensor "stem.weight"/,
    );
  });

  it.each(['cpu', 'wasm'] as const)(
    'buildModel and loadWeights refuse non-finite, extra, short and mis-typed tensors before writing any (%s)',
    async (backend) => {
      await useBackend(backend);
      const spec = tinyKwSpec({ budget: 1 });
      const good = initWeights(spec, { seed: 3 });
      const model = buildModel(spec, good);
      const before = exportWeights(model);
      const with1 = (name: string, f: (t: { shape: number[]; data: Float32Array }) => unknown) => {
        const m = new Map(good);
        const t = good.get(name)!;
        m.set(name, f({ shape: [...t.shape], data: t.data.slice() }) as never);
        return m;
      };
      const wh = [...good.keys()].find((k) => k.startsWith('warehouses.'))!;
      const cases: [string, Map<string, unknown>, RegExp][] = [
        [
          'Infinity in a warehouse',
          with1(wh, (t) => {
            t.data[3] = Number.POSITIVE_INFINITY;
            return t;
          }),
          /WEIGHTS_NOT_FINITE.*element 3 is Infinity/,
        ],
        [
          'NaN in a bias',
          with1('fc.bias', (t) => {
            t.data[0] = Number.NaN;
            return t;
          }),
          /WEIGHTS_NOT_FINITE.*"fc.bias"/,
        ],
        [
          'a misspelled extra tensor',
          new Map([...good, ['fc.weigth', { shape: [1], data: new Float32Array(1) }]]),
          /WEIGHTS_UNEXPECTED.*fc\.weigth/,
        ],
        [
          'data shorter than the shape',
          with1('fc.bias', (t) => ({ shape: t.shape, data: t.data.subarray(1) })),
          /WEIGHTS_SHAPE.*needs \d+ values, data has/,
        ],
        [
          'Float64Array data',
          with1('fc.bias', (t) => ({ shape: t.shape, data: Float64Array.from(t.data) })),
          /WEIGHTS_DTYPE/,
        ],
      ];
      for (const [label, w, re] of cases) {
        expect(() => buildModel(spec, w as never), label).toThrow(re);
        expect(() => loadWeights(model, w as never), label).toThrow(re);
      }
      // nothing was written by the failed loads
      for (const [name, t] of exportWeights(model)) {
        expect(
          Buffer.from(t.data.buffer).equals(Buffer.from(before.get(name)!.data.buffer)),
          name,
        ).toBe(true);
      }
      expect(() => buildModel(spec, good, { batchSize: -1 })).toThrow(
        /ARGUMENT_INVALID.*batchSize/,
      );
      expect(() => buildModel(spec, good, { batchSize: 1.5 })).toThrow(
        /ARGUMENT_INVALID.*batchSize/,
      );
    },
  );

  it.each(['cpu', 'wasm'] as const)(
    'a model on an empty batch: TENSOR_SHAPE naming the first layer (%s)',
    async (backend) => {
      await useBackend(backend);
      for (const spec of [
        tinyKwSpec({ budget: 1 }),
        tinyKwSpec({ budget: 1, kwClassifier: true }),
      ]) {
        const model = buildModel(spec, initWeights(spec, { seed: 1 }));
        const [c, h, w] = spec.inputShape as number[];
        const x = tf.zeros([0, h!, w!, c!]);
        expect(() => model.apply(x)).toThrow(/TENSOR_SHAPE.*layer "stem": the batch is empty/);
        x.dispose();
      }
    },
  );

  it('model.save -> tf.loadLayersModel -> save round-trips byte-identically; warehouses saved once', async () => {
    await useBackend('cpu');
    const spec = tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.5 });
    const model = buildModel(spec, initWeights(spec, { seed: 5 }));
    const a = await saveArtifacts(model);
    const names = a.weightSpecs!.map((s) => s.name);
    expect(names.filter((n) => n.includes('warehouses.stage0'))).toHaveLength(1);
    expect(names.filter((n) => n.includes('warehouses.stage1'))).toHaveLength(1);
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(a));
    const b = await saveArtifacts(loaded);
    expect(JSON.stringify(b.modelTopology)).toBe(JSON.stringify(a.modelTopology));
    expect(b.weightSpecs).toEqual(a.weightSpecs);
    expect(Buffer.from(bytes(b)).equals(Buffer.from(bytes(a)))).toBe(true);
    // and the loaded model computes the same function
    const x = toModelInput(randomInput(new Rng(3), [2, ...spec.inputShape]));
    const y0 = fromModelOutput(model.predict(x) as tf.Tensor).data;
    const y1 = fromModelOutput(loaded.predict(x) as tf.Tensor).data;
    expect(Array.from(y1)).toEqual(Array.from(y0));
  });
});

describe('backend choice', () => {
  it('falls back past missing tfjs-node(-gpu) to wasm and reports once', async () => {
    resetBackendReport();
    const lines: string[] = [];
    const tried: string[] = [];
    const importer = async (n: string) => {
      tried.push(n);
      if (n.includes('tfjs-node')) throw new Error(`Cannot find package '${n}'`);
      return import('@tensorflow/tfjs-backend-wasm');
    };
    const c = await chooseBackend({ importer, report: (l) => lines.push(l) });
    expect(c.backend).toBe('wasm');
    expect(tried.slice(0, 2)).toEqual(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
    expect(c.reason).toMatch(/skipped tfjs-node-gpu .*tfjs-node/);
    expect(tf.getBackend()).toBe('wasm');
    await chooseBackend({ importer, report: (l) => lines.push(l) });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/using backend "wasm"/);
    // the report says whether the own conv kernels run (they do in Node's tfjs 4.22 wasm)
    expect(lines[0]).toMatch(/own WebAssembly SIMD conv kernels: on/);
    // Node 20 has no relaxed SIMD unless asked (--experimental-wasm-relaxed-simd)
    const status = ownWasmKernelsStatus();
    expect(status.active).toBe(true);
    expect(status.reason).toBe(status.fma ? 'on, with fused multiply-add' : 'on');
    setOwnWasmKernels(false);
    expect(ownWasmKernelsStatus().reason).toMatch(/setOwnWasmKernels\(false\)/);
    setOwnWasmKernels(true);
  });

  it('the real importer also falls back (tfjs-node is not installed here); force works and fails loudly', async () => {
    const c = await chooseBackend({ report: null });
    expect(['wasm', 'tensorflow']).toContain(c.backend);
    const f = await chooseBackend({ force: 'cpu', report: null });
    expect(f.backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    await expect(
      chooseBackend({
        force: 'tfjs-node',
        report: null,
        importer: async () => Promise.reject(new Error('nope')),
      }),
    ).rejects.toThrow(/\[BACKEND_UNAVAILABLE\].*forced backend tfjs-node is not available: nope/);
  });
});
