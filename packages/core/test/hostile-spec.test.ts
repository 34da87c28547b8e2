// Specs that used to pass validation wrongly (issue 15): a spec mutated after it was validated
// (the cache answered with the stale result), duplicate outputs, tensors that fit the old
// 2^31 - 1 element limit but no backend, and values nested deeper than any stack.
import { describe, expect, it } from 'vitest';
import {
  analyzeSpec,
  boundedJson,
  describeValue,
  initWeights,
  KwError,
  type KwErrorCode,
  MAX_MODEL_ELEMENTS,
  MAX_TENSOR_ELEMENTS,
  type ModelSpec,
  paramTable,
  planModel,
  SpecBuilder,
  validateSpec,
} from '../src/index.js';
import { tinyKwSpec } from '../src/testing.js';

function expectKw(f: () => unknown, code: KwErrorCode, words: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a KwError').toBeInstanceOf(KwError);
  expect((err as KwError).code, (err as Error).message).toBe(code);
  expect((err as KwError).message).toMatch(words);
}

const node = (s: ModelSpec, id: string) =>
  s.nodes.find((n) => n.id === id) as unknown as Record<string, unknown>;

describe('the validation cache never answers for a spec that changed', () => {
  const mutations: [string, (s: ModelSpec) => void, KwErrorCode, RegExp][] = [
    ['stride 0', (s) => (node(s, 'stem').stride = 0), 'SPEC_BAD_FIELD', /stride/],
    [
      'negative channels',
      (s) => (node(s, 'stem').outChannels = -8),
      'SPEC_BAD_FIELD',
      /outChannels/,
    ],
    [
      'another specVersion',
      (s) => ((s as { specVersion: number }).specVersion = 2),
      'SPEC_VERSION',
      /found 2/,
    ],
    ['an output renamed', (s) => (s.outputs[0] = 'ghost'), 'SPEC_UNKNOWN_INPUT', /"ghost"/],
    ['a node removed', (s) => s.nodes.splice(1, 1), 'SPEC_UNKNOWN_INPUT', /stem_bn/],
    [
      'padding -0 -> NaN',
      (s) => (node(s, 'stem').padding = Number.NaN),
      'SPEC_BAD_FIELD',
      /padding/,
    ],
  ];
  for (const [label, mutate, code, words] of mutations) {
    it(`${label}: validateSpec, paramTable and planModel all see it`, () => {
      const spec = tinyKwSpec({ budget: 1, kwClassifier: true });
      const first = analyzeSpec(spec);
      expect(analyzeSpec(spec)).toBe(first); // unchanged: answered from the cache
      paramTable(spec);
      mutate(spec);
      expectKw(() => validateSpec(spec), code, words);
      expectKw(() => paramTable(spec), code, words);
      expectKw(() => planModel(spec), code, words);
    });
  }

  it('a change and its undo: valid again, and a mutated canonical spec is validated again', () => {
    const spec = tinyKwSpec({ budget: 1 });
    const a = analyzeSpec(spec);
    node(spec, 'stem').stride = 0;
    expect(() => validateSpec(spec)).toThrow(KwError);
    node(spec, 'stem').stride = [1, 1];
    expect(analyzeSpec(spec).shapes.get('fc')).toEqual(a.shapes.get('fc'));
    const canonical = analyzeSpec(spec).spec;
    (canonical.nodes[0] as unknown as Record<string, unknown>).kernelSize = [0, 0];
    expectKw(() => validateSpec(canonical), 'SPEC_BAD_FIELD', /kernelSize/);
  });

  it('changes JSON cannot see (undefined, -0 / 0, holes) are changes too', () => {
    const spec = tinyKwSpec({ budget: 1 });
    validateSpec(spec);
    const n = node(spec, 'stem_bn');
    n.eps = undefined; // default eps
    const withDefault = analyzeSpec(spec);
    n.eps = -0; // not > 0
    expectKw(() => validateSpec(spec), 'SPEC_BAD_FIELD', /eps/);
    n.eps = undefined;
    expect(analyzeSpec(spec).shapes).toEqual(withDefault.shapes);
  });

  it('a meta object nested 10^5 deep or with a cycle is fingerprinted without recursion', () => {
    const spec = tinyKwSpec({ budget: 1 }) as ModelSpec & { meta: unknown };
    let deep: unknown = 1;
    for (let i = 0; i < 1e5; i++) deep = { a: deep };
    const cyc: Record<string, unknown> = { x: 1 };
    cyc.self = cyc;
    spec.meta = { deep, cyc };
    expect(validateSpec(spec).name).toBe(spec.name);
    cyc.x = 2; // a change deep inside meta is seen (meta is carried into the canonical spec)
    expect(validateSpec(spec).meta).toBe(spec.meta);
  });
});

describe('outputs', () => {
  it('the same node named twice in outputs is SPEC_DUPLICATE_ID', () => {
    const spec = tinyKwSpec({ budget: 1 });
    spec.outputs = ['fc', 'pool', 'fc'];
    expectKw(
      () => validateSpec(spec),
      'SPEC_DUPLICATE_ID',
      /outputs\[2\] names "fc" a second time/,
    );
  });
});

describe('sizes every backend can hold', () => {
  it('the limits: 2^29 - 1 elements per tensor and per model (2 GiB of float32)', () => {
    expect(MAX_TENSOR_ELEMENTS).toBe(2 ** 29 - 1);
    expect(MAX_MODEL_ELEMENTS).toBe(2 ** 29 - 1);
    expect(MAX_TENSOR_ELEMENTS * 4).toBeLessThan(2 ** 31);
  });

  it('a linear weight of 2^29 elements (under the old 2^31 - 1) is refused before any allocation', () => {
    const b = new SpecBuilder('big-linear', [16]);
    b.output(b.linear('fc', b.input, 2 ** 25));
    const spec = b.build(); // the spec itself (activations) is fine
    expectKw(() => paramTable(spec), 'SPEC_SHAPE', /parameter "fc.weight".*at most 2\^29 - 1/);
    expectKw(() => initWeights(spec), 'SPEC_SHAPE', /fc.weight/);
  });

  it('two weights that each fit but not together (one ONNX file) are refused', () => {
    const b = new SpecBuilder('two-big', [16]);
    const h = b.linear('l1', b.input, 2 ** 24, false); // 2^28 weights
    b.output(b.linear('l2', h, 16, false)); // 2^28 weights
    expectKw(() => paramTable(b.build()), 'SPEC_SHAPE', /together; at most 2\^29 - 1/);
  });

  it('an activation of 2^29 elements per sample is refused', () => {
    const b = new SpecBuilder('big-act', [1, 2 ** 14, 2 ** 14]);
    b.output(b.conv2d('c', b.input, { outChannels: 2, kernelSize: 1 }));
    expectKw(() => b.build(), 'SPEC_SHAPE', /output \[2, 16384, 16384\]/);
  });
});

describe('error messages of deep values', () => {
  it('describeValue and boundedJson render 10^5-deep values without recursion, bounded', () => {
    let a: unknown = 0;
    let o: unknown = 0;
    for (let i = 0; i < 1e5; i++) {
      a = [a];
      o = { k: o };
    }
    expect(describeValue(a)).toMatch(/^\[\[\[.*\.\.\.$/);
    expect(describeValue(a).length).toBeLessThanOrEqual(120);
    expect(describeValue(o)).toMatch(/^\{"k":\{"k":/);
    const v = { a: [1, 'x', null, true, { b: -2.5 }], c: {} };
    expect(boundedJson(v, 1000)).toBe(JSON.stringify(v));
  });
});
