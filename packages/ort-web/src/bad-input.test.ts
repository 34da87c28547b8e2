// Issue 7's adapter corpus: tensors of the wrong rank, channels, size, length, dtype or with
// non-finite values, fed to the core reference executor and to an exported ONNX session. Both
// must refuse each with the same KwError code and a message that names what was found; neither
// may return NaN or an empty result.
import {
  initWeights,
  isKwError,
  type KwErrorCode,
  runReference,
  type Tensor,
} from '@kernelwarehouse/core';
import { tinyKwSpec } from '@kernelwarehouse/core/testing';
import { describe, expect, it } from 'vitest';
import { createSession, runSession, toOnnx } from './index.js';

const spec = tinyKwSpec({ budget: 1 }); // input [N, 3, 8, 8]
const weights = initWeights(spec, { seed: 1 });
const f32 = (n: number, v = 0.5) => new Float32Array(n).fill(v);
const withAt = (n: number, i: number, v: number) => {
  const d = f32(n);
  d[i] = v;
  return d;
};

/** [label, input, code, what the message must name] */
export const BAD_TENSORS: [string, unknown, KwErrorCode, RegExp][] = [
  [
    'rank 3 (batch dim missing)',
    { shape: [3, 8, 8], data: f32(192) },
    'TENSOR_SHAPE',
    /\[3, 8, 8\]/,
  ],
  ['rank 5', { shape: [1, 1, 3, 8, 8], data: f32(192) }, 'TENSOR_SHAPE', /\[1, 1, 3, 8, 8\]/],
  ['rank 2 (flattened)', { shape: [1, 192], data: f32(192) }, 'TENSOR_SHAPE', /\[1, 192\]/],
  [
    '4 channels instead of 3',
    { shape: [1, 4, 8, 8], data: f32(256) },
    'TENSOR_SHAPE',
    /\[1, 4, 8, 8\]/,
  ],
  [
    'NHWC instead of NCHW',
    { shape: [1, 8, 8, 3], data: f32(192) },
    'TENSOR_SHAPE',
    /\[1, 8, 8, 3\]/,
  ],
  ['height 9', { shape: [2, 3, 9, 8], data: f32(432) }, 'TENSOR_SHAPE', /\[2, 3, 9, 8\]/],
  ['width 7', { shape: [1, 3, 8, 7], data: f32(168) }, 'TENSOR_SHAPE', /\[1, 3, 8, 7\]/],
  ['empty batch', { shape: [0, 3, 8, 8], data: f32(0) }, 'TENSOR_SHAPE', /\[0, 3, 8, 8\]/],
  ['data shorter than the shape', { shape: [1, 3, 8, 8], data: f32(100) }, 'TENSOR_SHAPE', /100/],
  ['data longer than the shape', { shape: [1, 3, 8, 8], data: f32(193) }, 'TENSOR_SHAPE', /193/],
  ['fractional dim', { shape: [1.5, 3, 8, 8], data: f32(288) }, 'TENSOR_SHAPE', /1\.5/],
  [
    'Float64Array data',
    { shape: [1, 3, 8, 8], data: new Float64Array(192) },
    'TENSOR_DTYPE',
    /Float32Array/,
  ],
  [
    'plain number[] data',
    { shape: [1, 3, 8, 8], data: Array(192).fill(0) },
    'TENSOR_DTYPE',
    /Float32Array/,
  ],
  [
    'Int32Array data',
    { shape: [1, 3, 8, 8], data: new Int32Array(192) },
    'TENSOR_DTYPE',
    /Float32Array/,
  ],
  ['no data', { shape: [1, 3, 8, 8] }, 'TENSOR_DTYPE', /Float32Array/],
  ['null', null, 'TENSOR_DTYPE', /Float32Array/],
  [
    'NaN inside',
    { shape: [1, 3, 8, 8], data: withAt(192, 77, Number.NaN) },
    'TENSOR_NOT_FINITE',
    /77.*NaN|NaN.*77/,
  ],
  [
    '+Infinity inside',
    { shape: [1, 3, 8, 8], data: withAt(192, 5, Number.POSITIVE_INFINITY) },
    'TENSOR_NOT_FINITE',
    /Infinity/,
  ],
  [
    '-Infinity at the end',
    { shape: [1, 3, 8, 8], data: withAt(192, 191, Number.NEGATIVE_INFINITY) },
    'TENSOR_NOT_FINITE',
    /191/,
  ],
];

async function refusal(f: () => unknown): Promise<unknown> {
  try {
    const r = await f();
    return { returned: r };
  } catch (e) {
    return e;
  }
}

describe('wrong tensors to the executors', () => {
  it(`${BAD_TENSORS.length} bad inputs: reference and ONNX session refuse each with the same named KwError`, async () => {
    const session = await createSession(toOnnx(spec, weights));
    for (const [label, x, code, names] of BAD_TENSORS) {
      const ref = await refusal(() => runReference(spec, weights, x as Tensor));
      const ort = await refusal(() => runSession(session, x as Tensor));
      for (const [who, e] of [
        ['reference', ref],
        ['ort-web', ort],
      ] as const) {
        expect(
          isKwError(e, code),
          `${who}, ${label}: ${String((e as Error)?.message ?? JSON.stringify(e))}`,
        ).toBe(true);
        expect((e as Error).message, `${who}, ${label}`).toMatch(names);
      }
    }
    // and a good input still runs after all that
    const [y] = await runSession(session, { shape: [2, 3, 8, 8], data: f32(384) });
    expect(y!.shape).toEqual([2, 4]);
    expect(y!.data.every(Number.isFinite)).toBe(true);
  });
});

describe('wrong arguments to createSession, toOnnx and runSession', () => {
  const x = { shape: [1, 3, 8, 8], data: f32(192) };

  it('an ArrayBuffer (what fetch().arrayBuffer() returns) is taken as the ONNX bytes', async () => {
    const bytes = toOnnx(spec, weights);
    const fromView = await runSession(await createSession(bytes), x);
    const fromBuffer = await runSession(await createSession(bytes.slice().buffer), x);
    expect(fromBuffer[0]!.shape).toEqual([1, 4]);
    expect(Array.from(fromBuffer[0]!.data)).toEqual(Array.from(fromView[0]!.data));
  });

  for (const [label, f, words] of [
    [
      'createSession(null)',
      () => createSession(null as never),
      /model must be ONNX bytes.*found null/,
    ],
    [
      'createSession(undefined)',
      () => createSession(undefined as never),
      /model must be ONNX bytes.*found undefined/,
    ],
    [
      'createSession(42)',
      () => createSession(42 as never),
      /model must be ONNX bytes.*found number 42/,
    ],
    [
      'createSession({})',
      () => createSession({} as never),
      /model must be ONNX bytes.*found Object with keys \[\]/,
    ],
    [
      'createSession(bytes, null)',
      () => createSession(new Uint8Array(8), null as never),
      /options must be an object.*found null/,
    ],
    [
      'toOnnx(spec, weights, null)',
      () => toOnnx(spec, weights, null as never),
      /toOnnx: options must be an object.*found null/,
    ],
    [
      'runSession(null, x)',
      () => runSession(null as never, x),
      /session must be an InferenceSession.*found null/,
    ],
    [
      'runSession({}, x)',
      () => runSession({} as never, x),
      /session must be an InferenceSession.*found Object/,
    ],
  ] as const) {
    it(`${label}: ARGUMENT_INVALID naming the argument`, async () => {
      const e = await refusal(f);
      expect(
        isKwError(e, 'ARGUMENT_INVALID'),
        `${label}: ${String((e as Error)?.message ?? JSON.stringify(e))}`,
      ).toBe(true);
      expect((e as Error).message).toMatch(words);
    });
  }
});
