// Graph value names in exported models (hunt finding r7): an input name onnxruntime cannot load or
// feed is refused at export, and a spec output id never collides with a name the exporter makes.
import {
  initWeights,
  isKwError,
  type ModelSpec,
  maxRelativeError,
  runReference,
  SpecBuilder,
} from '@kernelwarehouse/core';
import { describe, expect, it } from 'vitest';
import { createSession, runSession, toOnnx, toOnnxWithInfo } from './index.js';
import { GraphBuilder } from './onnx.js';

/** conv 'c' -> relu -> pool -> flatten -> linear `outId` (the one output). */
function spec(outId: string): ModelSpec {
  const b = new SpecBuilder('n', [2, 4, 4]);
  const x = b.conv2d('c', b.input, { outChannels: 3, kernelSize: 1 });
  b.output(b.linear(outId, b.flatten('f', b.globalAvgPool('p', b.relu('r', x))), 2));
  return b.build();
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('inputName', () => {
  const s = spec('fc');
  const w = initWeights(s, { seed: 1 });
  for (const [label, name, words] of [
    ['empty', '', /inputName must be a non-empty string, found ""/],
    ["the output's id", 'fc', /inputName "fc" is also the name of a graph output/],
    [
      'holding a NUL',
      'in\u0000put',
      /inputName "in\\u0000put" holds the control character U\+0000 at index 2/,
    ],
    ['holding a newline', 'a\nb', /control character U\+000A at index 1/],
    ['a number', 123, /inputName must be a string, found number 123/],
    ['an object', {}, /inputName must be a string, found object \{\}/],
    ['null', null, /inputName must be a string, found null/],
  ] as const) {
    it(`${label}: refused at export with ARGUMENT_INVALID`, () => {
      const e = thrown(() => toOnnx(s, w, { inputName: name as string }));
      expect(isKwError(e, 'ARGUMENT_INVALID'), String(e)).toBe(true);
      expect((e as Error).message).toMatch(words);
    });
  }

  it('a name the exporter would generate is kept, and the model loads and runs', async () => {
    for (const inputName of ['c.weight_0', 'relu_0']) {
      const ex = toOnnxWithInfo(s, w, { inputName });
      expect(ex.inputName).toBe(inputName);
      const session = await createSession(ex.bytes, { numThreads: 1 });
      expect(session.inputNames).toEqual([inputName]);
      const [y] = await runSession(session, { shape: [1, 2, 4, 4], data: new Float32Array(32) });
      expect(y!.shape).toEqual([1, 2]);
    }
  });
});

describe('spec output ids against generated names', () => {
  // each of these is a valid spec id that the exporter also generates for this graph
  for (const outId of ['c.weight_0', 'relu_2', 'gemm_7']) {
    it(`an output named "${outId}" exports, loads and matches the reference`, async () => {
      const s = spec(outId);
      const w = initWeights(s, { seed: 2 });
      const session = await createSession(toOnnx(s, w), { numThreads: 1 });
      expect(session.outputNames).toEqual([outId]);
      const x = { shape: [2, 2, 4, 4], data: Float32Array.from({ length: 64 }, (_, i) => i / 64) };
      const [y] = await runSession(session, x);
      const ref = runReference(s, w, x).get(outId)!;
      expect(maxRelativeError(y!.data, ref.data)).toBeLessThan(1e-5);
    });
  }
});

describe('duplicate value names (safety net before serialising)', () => {
  it('a name defined twice is refused with ONNX_INVALID naming it', () => {
    const g = new GraphBuilder();
    const x = g.input('x', [1]);
    g.output('x', x, [1]);
    const e = thrown(() => g.model('m', ''));
    expect(isKwError(e, 'ONNX_INVALID'), String(e)).toBe(true);
    expect((e as Error).message).toMatch(/value name "x" twice/);
  });
});
