// safetensors: exact decoding, deterministic round trips, the official-name table, and a corpus
// of hostile files (built here from a valid file by seeded edits) that must each fail with a named
// KwError, never another error, never a hang.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bf16ToF32,
  checkWeights,
  exportOfficialStateDict,
  f16ToF32,
  fromOfficialName,
  importOfficialStateDict,
  initWeights,
  KwError,
  type KwErrorCode,
  loadWeights,
  readSafetensors,
  saveWeights,
  toOfficialName,
  writeSafetensors,
} from '../src/index.js';
import { Rng, tinyKwSpec } from '../src/testing.js';
import { fuzz } from './fuzz.js';
import { kwErrorOf } from './kw-error.js';

/** A file from a raw header object and a data buffer. */
function file(
  header: unknown,
  data: Uint8Array = new Uint8Array(0),
  lengthOverride?: bigint,
): Uint8Array {
  const h = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe('decoding', () => {
  it('F16 and BF16 bit patterns decode exactly (normals, subnormals, zeros, inf, nan)', () => {
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0xc000)).toBe(-2);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0x0400)).toBe(2 ** -14);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x7c00)).toBe(Number.POSITIVE_INFINITY);
    expect(f16ToF32(0x7e00)).toBeNaN();
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc049)).toBeCloseTo(-3.140625, 10);
    expect(bf16ToF32(0xff80)).toBe(Number.NEGATIVE_INFINITY);
    const data = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f]);
    const f = readSafetensors(
      file(
        {
          a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
          b: { dtype: 'BF16', shape: [1], data_offsets: [4, 6] },
        },
        data,
      ),
    );
    expect(Array.from(f.tensors.get('a')!.data as Float32Array)).toEqual([1, -2]);
    expect(Array.from(f.tensors.get('b')!.data as Float32Array)).toEqual([1]);
  });

  it('reads unaligned offsets and integer dtypes (official num_batches_tracked is I64)', () => {
    const data = new Uint8Array(11);
    const dv = new DataView(data.buffer);
    data[0] = 7;
    dv.setFloat32(1, 1.5, true);
    dv.setFloat32(5, -2.25, true);
    dv.setInt16(9, -3, true);
    const f = readSafetensors(
      file(
        {
          u: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
          x: { dtype: 'F32', shape: [2], data_offsets: [1, 9] },
          i: { dtype: 'I16', shape: [], data_offsets: [9, 11] },
          __metadata__: { k: 'v' },
        },
        data,
      ),
    );
    expect(Array.from(f.tensors.get('x')!.data as Float32Array)).toEqual([1.5, -2.25]);
    expect(Array.from(f.tensors.get('i')!.data as Int16Array)).toEqual([-3]);
    expect(f.metadata).toEqual({ k: 'v' });
  });
});

describe('spec-aware save and load', () => {
  const spec = tinyKwSpec({ budget: 1, kwClassifier: true });
  const w = initWeights(spec, { seed: 4 });

  it('save -> load -> save is byte-identical, and values survive exactly', () => {
    const a = saveWeights(spec, w);
    const loaded = loadWeights(spec, a);
    const b = saveWeights(spec, loaded);
    // Buffer.compare, not toEqual: a deep equality over ~10^5 array elements took 65 s on a loaded
    // machine (issue 15); comparing the bytes is one memcmp and says the same thing
    expect(Buffer.compare(b, a)).toBe(0);
    const bytesOf = (d: Float32Array) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    for (const [k, t] of w) {
      const got = loaded.get(k)!.data as Float32Array;
      expect(got.length, k).toBe(t.data.length);
      expect(Buffer.compare(bytesOf(got), bytesOf(t.data as Float32Array)), k).toBe(0);
    }
    expect((a.length - 8) % 8).toBe(0);
    expect(readSafetensors(a).metadata.spec).toBe(spec.name);
  });

  it('refuses files that do not fit the spec, naming the tensor', () => {
    const other = tinyKwSpec({ budget: 2, kwClassifier: true });
    expect(() => loadWeights(other, saveWeights(spec, w))).toThrow(
      /"warehouses.stage0": expected shape \[\d+, 8, 4, 1, 1\]/,
    );
    const missing = new Map(w);
    missing.delete('fc.bias');
    expect(() => loadWeights(spec, writeSafetensors(missing))).toThrow(/missing: fc.bias/);
    const nan = new Map(w);
    nan.set('fc.bias', { shape: [4], data: new Float32Array([0, Number.NaN, 0, 0]) });
    expect(() => loadWeights(spec, writeSafetensors(nan))).toThrow(/"fc.bias": element 1 is NaN/);
    const extra = new Map(w).set('zzz', { shape: [1], data: new Float32Array(1) });
    expect(() => loadWeights(spec, writeSafetensors(extra))).toThrow(/not part of spec.*zzz/);
    expect(loadWeights(spec, writeSafetensors(extra), { allowExtra: true }).has('zzz')).toBe(false);
  });
});

describe('checkWeights on malformed maps', () => {
  const spec = tinyKwSpec({ budget: 1, kwClassifier: true });
  const w = initWeights(spec, { seed: 4 });
  it('a null tensor, a tensor without a shape and a non-Map give a KwError naming the tensor', () => {
    kwErrorOf(
      () => checkWeights(spec, new Map(w).set('fc.bias', null as never)),
      'WEIGHTS_DTYPE',
      /tensor "fc.bias": expected \{ shape, data: Float32Array \}, found null/,
    );
    kwErrorOf(
      () => checkWeights(spec, new Map(w).set('fc.bias', { data: new Float32Array(4) } as never)),
      'WEIGHTS_SHAPE',
      /tensor "fc.bias": expected shape \[4\], found undefined/,
    );
    kwErrorOf(
      () => checkWeights(spec, Object.fromEntries(w) as never),
      'ARGUMENT_INVALID',
      /weights must be a Map/,
    );
  });

  it('a negative BatchNorm running variance is refused, naming the tensor, index and value', () => {
    const neg = (name: string, i: number, v: number) => {
      const t = w.get(name)!;
      const data = Float32Array.from(t.data);
      data[i] = v;
      return new Map(w).set(name, { shape: t.shape, data });
    };
    // stem BatchNorm, and a method-declared one (the KW attention's norm)
    const err = kwErrorOf(
      () => checkWeights(spec, neg('stem_bn.running_var', 2, -0.5)),
      'WEIGHTS_NOT_FINITE',
      /tensor "stem_bn.running_var": element 2 is -0.5, expected >= 0 \(a BatchNorm running variance/,
    );
    expect(err.details).toMatchObject({ name: 'stem_bn.running_var', index: 2, value: -0.5 });
    const attn = [...w.keys()].find((k) => k.endsWith('attention.norm1.running_var'))!;
    kwErrorOf(
      () => checkWeights(spec, neg(attn, 0, -1e-3)),
      'WEIGHTS_NOT_FINITE',
      `tensor "${attn}": element 0 is`,
    );
    // the loaders go through the same check
    expect(() => loadWeights(spec, writeSafetensors(neg('stem_bn.running_var', 0, -1)))).toThrow(
      /"stem_bn.running_var": element 0 is -1, expected >= 0/,
    );
    // zero is a valid variance, and other tensors may be negative
    expect(() => checkWeights(spec, neg('stem_bn.running_var', 0, 0))).not.toThrow();
    expect(() => checkWeights(spec, neg('stem_bn.running_mean', 0, -3))).not.toThrow();
    expect(() => checkWeights(spec, neg('fc.bias', 0, -3))).not.toThrow();
  });
});

describe('official state_dict names', () => {
  const spec = tinyKwSpec({ budget: 1, kwClassifier: true });
  it('maps warehouses, the KWLinear .conv. infix and num_batches_tracked, both ways', () => {
    expect(toOfficialName(spec, 'warehouses.stage1')).toBe('warehouse_manager.weights.1');
    expect(toOfficialName(spec, 'fc.attention.fc2.weight')).toBe('fc.conv.attention.fc2.weight');
    expect(toOfficialName(spec, 'fc.bias')).toBe('fc.conv.bias');
    expect(toOfficialName(spec, 'block.conv1.attention.fc1.weight')).toBe(
      'block.conv1.attention.fc1.weight',
    );
    expect(fromOfficialName(spec, 'warehouse_manager.weights.2')).toBe('warehouses.head');
    expect(fromOfficialName(spec, 'fc.conv.attention.norm1.running_var')).toBe(
      'fc.attention.norm1.running_var',
    );
    expect(fromOfficialName(spec, 'stem_bn.num_batches_tracked')).toBeUndefined();
    expect(() => fromOfficialName(spec, 'warehouse_manager.weights.9')).toThrow(/3 warehouses/);
  });

  it('export -> safetensors -> import round-trips, reshaping size-1 dims', () => {
    const w = initWeights(spec, { seed: 2 });
    const official = exportOfficialStateDict(spec, w);
    expect(official.get('stem_bn.num_batches_tracked')!.dtype).toBe('I64');
    expect(official.has('warehouse_manager.weights.0')).toBe(true);
    const back = importOfficialStateDict(spec, readSafetensors(writeSafetensors(official)).tensors);
    for (const [k, t] of w) expect(back.get(k)!.data).toEqual(t.data);
    // a [1, C, 1, 1] tensor for a [C] parameter is accepted (ConvNeXt-KW layer scale)
    const bent = new Map(official);
    bent.set('stem_bn.weight', {
      dtype: 'F32',
      shape: [1, 8, 1, 1],
      data: w.get('stem_bn.weight')!.data,
    });
    expect(importOfficialStateDict(spec, bent).get('stem_bn.weight')!.shape).toEqual([8]);
    bent.set('ghost.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    expect(() => importOfficialStateDict(spec, bent)).toThrow(/"ghost.weight".*not part of spec/);
  });
  it('refuses two state_dict names for one weight, naming both and the target', () => {
    const official = exportOfficialStateDict(spec, initWeights(spec, { seed: 2 }));
    const wh = official.get('warehouse_manager.weights.0')!;
    const ours = new Map(official).set('warehouses.stage0', { ...wh });
    const e = kwErrorOf(
      () => importOfficialStateDict(spec, ours),
      'WEIGHTS_UNEXPECTED',
      /"warehouse_manager.weights.0" and "warehouses.stage0" both map to "warehouses.stage0"/,
    );
    expect(e.details).toEqual({
      names: ['warehouse_manager.weights.0', 'warehouses.stage0'],
      target: 'warehouses.stage0',
    });
    kwErrorOf(
      () =>
        importOfficialStateDict(spec, new Map(official).set('warehouse_manager.weights.00', wh)),
      'WEIGHTS_UNEXPECTED',
      /"warehouse_manager.weights.0" and "warehouse_manager.weights.00" both map to "warehouses.stage0"/,
    );
    const bias = official.get('fc.conv.bias')!;
    kwErrorOf(
      () => importOfficialStateDict(spec, new Map(official).set('fc.bias', bias)),
      'WEIGHTS_UNEXPECTED',
      /"fc.conv.bias" and "fc.bias" both map to "fc.bias"/,
    );
  });

  it('a non-Map, a null tensor or a tensor without a shape give a KwError, not a TypeError', () => {
    const official = exportOfficialStateDict(spec, initWeights(spec, { seed: 2 }));
    for (const bad of [null, 5, 'x', Object.fromEntries(official)])
      kwErrorOf(
        () => importOfficialStateDict(spec, bad as never),
        'ARGUMENT_INVALID',
        /tensors must be a Map/,
      );
    kwErrorOf(
      () => importOfficialStateDict(spec, new Map(official).set('stem.weight', null as never)),
      'WEIGHTS_DTYPE',
      /official tensor "stem.weight": expected \{ shape, data \}, found null/,
    );
    const data = official.get('stem.weight')!.data;
    kwErrorOf(
      () => importOfficialStateDict(spec, new Map(official).set('stem.weight', { data } as never)),
      'WEIGHTS_SHAPE',
      /official tensor "stem.weight": expected a shape array, found undefined/,
    );
  });
});

describe('writing', () => {
  const write = (t: unknown, meta?: unknown) =>
    writeSafetensors(new Map([['a', t as never]]), meta as never);

  it('refuses shapes and metadata the reader would refuse', () => {
    kwErrorOf(
      () => write({ shape: [-1, -1], data: new Float32Array(1) }),
      'WEIGHTS_SHAPE',
      /tensor "a": shape\[0\] must be a non-negative integer, found -1/,
    );
    kwErrorOf(
      () => write({ shape: [2, 2.5], data: new Float32Array(5) }),
      'WEIGHTS_SHAPE',
      /shape\[1\] .* found 2.5/,
    );
    kwErrorOf(() => write({ data: new Float32Array(1) }), 'WEIGHTS_SHAPE', /shape must be a list/);
    kwErrorOf(() => write(null), 'ARGUMENT_INVALID', /tensor "a": expected \{ shape, data \}/);
    kwErrorOf(() => write({ shape: [1], data: null }), 'WEIGHTS_DTYPE', /data must be/);
    kwErrorOf(
      () => write({ shape: [1], data: new Float32Array(1) }, { x: 5 }),
      'ARGUMENT_INVALID',
      /metadata "x" must be a string .* found 5/,
    );
    kwErrorOf(() => writeSafetensors({} as never), 'ARGUMENT_INVALID', /must be a Map/);
  });

  it('refuses values the dtype cannot hold, naming the tensor, the element and the value', () => {
    const cases: [string, unknown[], RegExp][] = [
      ['U8', [1, 300], /element 1 is 300, outside U8's range \[0, 255\]/],
      ['U8', [-1], /element 0 is -1, outside U8's range/],
      ['I32', [1e10], /element 0 is 10000000000, outside I32's range \[-2147483648, 2147483647\]/],
      ['I32', [1.5], /element 0 is 1.5, not an integer/],
      ['BOOL', [1, 0, 2], /element 2 is 2, outside BOOL's range \[0, 1\]/],
      ['I64', [Number.NaN], /element 0 is NaN, not an integer/],
      ['I64', [2n ** 63n], /element 0 is 9223372036854775808n, outside I64's range/],
      ['F32', ['1'], /element 0 is "1", not a number/],
    ];
    for (const [dtype, data, pattern] of cases)
      kwErrorOf(
        () => write({ dtype, shape: [data.length], data }),
        'WEIGHTS_DTYPE',
        /^\[WEIGHTS_DTYPE\] tensor "a": /,
        pattern,
      );
    // a finite float64 beyond float32's range would be written as infinity
    kwErrorOf(
      () => write({ shape: [2], data: new Float64Array([1, 1e300]) }),
      'WEIGHTS_DTYPE',
      /tensor "a": element 1 is 1e\+300, beyond the F32 range/,
    );
  });

  it('writes what it can represent exactly, and reads it back unchanged', () => {
    const f = readSafetensors(
      writeSafetensors(
        new Map<string, never>([
          ['b', { dtype: 'BOOL', shape: [2], data: [0, 1] } as never],
          ['f', { shape: [3], data: new Float32Array([1.5, Number.NaN, -0]) } as never],
          [
            'g',
            { shape: [2], data: new Float64Array([3.4e38, Number.POSITIVE_INFINITY]) } as never,
          ],
          ['i', { dtype: 'I64', shape: [2], data: [-(2 ** 53), 7n] } as never],
          ['u', { dtype: 'U8', shape: [], data: new Uint8Array([255]) } as never],
        ]),
        { k: 'v' },
      ),
    );
    expect(Array.from(f.tensors.get('b')!.data as Uint8Array)).toEqual([0, 1]);
    expect(Array.from(f.tensors.get('f')!.data as Float32Array)).toEqual([1.5, Number.NaN, -0]);
    expect(Array.from(f.tensors.get('g')!.data as Float32Array)).toEqual([
      Math.fround(3.4e38),
      Number.POSITIVE_INFINITY,
    ]);
    expect(Array.from(f.tensors.get('i')!.data as BigInt64Array)).toEqual([-(2n ** 53n), 7n]);
    expect(Array.from(f.tensors.get('u')!.data as Uint8Array)).toEqual([255]);
    expect(f.metadata).toEqual({ k: 'v' });
  });
});

describe('hostile safetensors corpus', () => {
  const spec = tinyKwSpec({ budget: 1 });
  const good = saveWeights(spec, initWeights(spec, { seed: 1 }));
  const four = new Uint8Array(4);
  const corpus: [string, Uint8Array, KwErrorCode, RegExp][] = [
    ['empty', new Uint8Array(0), 'SAFETENSORS_TRUNCATED', /fewer than the 8-byte/],
    ['7 bytes', new Uint8Array(7), 'SAFETENSORS_TRUNCATED', /7 bytes/],
    [
      'header length beyond file',
      file({}, new Uint8Array(0), 1000n),
      'SAFETENSORS_TRUNCATED',
      /claims 1000 bytes/,
    ],
    [
      'header length 2^64-1',
      file({}, new Uint8Array(0), 0xffffffffffffffffn),
      'SAFETENSORS_TRUNCATED',
      /claims 18446744073709551615/,
    ],
    ['truncated data', good.slice(0, good.length - 3), 'SAFETENSORS_OFFSETS', /outside the/],
    ['header not JSON', file('{"a": '), 'SAFETENSORS_HEADER', /not valid UTF-8 JSON/],
    ['header invalid UTF-8', file('\xff'), 'SAFETENSORS_HEADER', /UTF-8/],
    ['header is an array', file([]), 'SAFETENSORS_HEADER', /must be a JSON object/],
    [
      'entry not an object',
      file({ a: 3 }),
      'SAFETENSORS_HEADER',
      /tensor "a": entry must be an object/,
    ],
    [
      'unknown dtype',
      file({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
      'SAFETENSORS_DTYPE',
      /tensor "a": unknown dtype "F8"/,
    ],
    [
      'negative shape',
      file({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, four),
      'SAFETENSORS_HEADER',
      /non-negative integers/,
    ],
    [
      'float shape',
      file({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, four),
      'SAFETENSORS_HEADER',
      /\[1.5\]/,
    ],
    [
      'offsets missing',
      file({ a: { dtype: 'F32', shape: [1] } }, four),
      'SAFETENSORS_OFFSETS',
      /data_offsets must be/,
    ],
    [
      'offsets reversed',
      file({ a: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, four),
      'SAFETENSORS_OFFSETS',
      /\[4, 0\] outside/,
    ],
    [
      'offsets out of range',
      file({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, four),
      'SAFETENSORS_OFFSETS',
      /outside the 4-byte/,
    ],
    [
      'numel mismatch',
      file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, four),
      'SAFETENSORS_OFFSETS',
      /needs 8 bytes, data_offsets span 4/,
    ],
    [
      'overlap',
      file(
        {
          a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
        },
        four,
      ),
      'SAFETENSORS_OFFSETS',
      /overlap/,
    ],
    [
      'gap',
      file({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
      'SAFETENSORS_OFFSETS',
      /gap of 4 bytes/,
    ],
    [
      'trailing bytes',
      file({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(6)),
      'SAFETENSORS_OFFSETS',
      /2 bytes not covered/,
    ],
    [
      'metadata not strings',
      file({ __metadata__: { a: 1 } }),
      'SAFETENSORS_HEADER',
      /__metadata__.a must be a string/,
    ],
    [
      '__proto__ entry',
      file('{"__proto__": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', four),
      'WEIGHTS_MISSING',
      /missing/,
    ],
    // issue 15: depth, duplicate keys, dtypes and keys named like Object.prototype members
    [
      'JSON nested 10^5 deep in a shape',
      file(
        `{"a":{"dtype":"F32","shape":${'['.repeat(1e5)}${']'.repeat(1e5)},"data_offsets":[0,4]}}`,
        four,
      ),
      'SAFETENSORS_HEADER',
      /nested deeper than 64 levels/,
    ],
    [
      'JSON nested 10^4 deep in __metadata__',
      file(`{"__metadata__":{"k":${'{"a":'.repeat(1e4)}1${'}'.repeat(1e4)}}}`),
      'SAFETENSORS_HEADER',
      /nested deeper than 64 levels/,
    ],
    [
      'JSON nested 65 deep (one past the limit) in data_offsets',
      file(
        `{"a":{"dtype":"F32","shape":[1],"data_offsets":${'['.repeat(63)}${']'.repeat(63)}}}`,
        four,
      ),
      'SAFETENSORS_HEADER',
      /nested deeper than 64/,
    ],
    [
      'JSON nested 64 deep is read (and refused for its form, not its depth)',
      file(
        `{"a":{"dtype":"F32","shape":[1],"data_offsets":${'['.repeat(62)}${']'.repeat(62)}}}`,
        four,
      ),
      'SAFETENSORS_OFFSETS',
      /data_offsets must be/,
    ],
    [
      'a tensor given twice (JSON.parse would keep the last)',
      file(
        '{"fc.bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"fc.bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        four,
      ),
      'SAFETENSORS_HEADER',
      /key "fc.bias" twice/,
    ],
    [
      'a key given twice inside an entry',
      file('{"a":{"dtype":"F8","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
      'SAFETENSORS_HEADER',
      /key "dtype" twice/,
    ],
    [
      'a key given twice, once escaped',
      file('{"__metadata__":{"k":"1","\\u006b":"2"}}'),
      'SAFETENSORS_HEADER',
      /key "k" twice/,
    ],
    [
      '__metadata__ given twice',
      file('{"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}}'),
      'SAFETENSORS_HEADER',
      /key "__metadata__" twice/,
    ],
    ...['toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf'].map(
      (d) =>
        [
          `dtype ${d}`,
          file(`{"a":{"dtype":"${d}","shape":[1],"data_offsets":[0,4]}}`, four),
          'SAFETENSORS_DTYPE',
          new RegExp(`unknown dtype "${d}"`),
        ] as [string, Uint8Array, KwErrorCode, RegExp],
    ),
    [
      'int dtype for a float param',
      file({ 'fc.bias': { dtype: 'I32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(16)),
      'WEIGHTS_DTYPE',
      /"fc.bias": the spec needs floats, the file stores I32/,
    ],
  ];
  for (const [label, bytes, code, pattern] of corpus) {
    it(label, () => {
      let err: unknown;
      try {
        loadWeights(spec, bytes);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KwError);
      expect((err as KwError).code).toBe(code);
      expect((err as KwError).message).toMatch(pattern);
    });
  }

  it('seeded random byte edits and truncations of a valid file: a consistent result or a KwError, nothing else', () => {
    let refused = 0;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.option(fc.nat({ max: good.length }), { nil: undefined }),
        (edits, cut) => {
          const b = good.slice(0, cut ?? good.length);
          for (const [i, v] of edits) if (i < b.length) b[i] = v;
          try {
            const f = readSafetensors(b);
            for (const t of f.tensors.values())
              expect(t.data.length).toBe(t.shape.reduce((x, y) => x * y, 1));
          } catch (e) {
            if (!(e instanceof KwError)) throw new Error(`non-KwError: ${String(e)}`);
            refused++;
          }
        },
      ),
      fuzz(77, 400),
    );
    expect(refused).toBeGreaterThan(fuzz(77, 400).numRuns / 8); // most edits break the file
  });

  it('keys named like Object.prototype members stay keys: __metadata__ and tensor names', () => {
    const t = { shape: [1], data: new Float32Array([2.5]) };
    const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];
    const meta = Object.fromEntries([
      ['__proto__', 'p'],
      ['constructor', 'c'],
    ]);
    const bytes = writeSafetensors(new Map(names.map((n) => [n, t])), meta);
    const f = readSafetensors(bytes);
    expect([...f.tensors.keys()].sort()).toEqual([...names].sort());
    for (const n of names)
      expect(Array.from(f.tensors.get(n)!.data as Float32Array)).toEqual([2.5]);
    expect(Object.entries(f.metadata)).toEqual([
      ['__proto__', 'p'],
      ['constructor', 'c'],
    ]);
    // and from a header written by hand
    const g = readSafetensors(file('{"__metadata__":{"__proto__":"x","toString":"y"}}'));
    expect(Object.keys(g.metadata)).toEqual(['__proto__', 'toString']);
    expect(g.metadata.toString).toBe('y');
  });

  it('random JSON nesting up to 2000 deep in any header field: a result or a KwError', () => {
    let deepRefused = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.boolean(),
        fc.constantFrom('shape', 'data_offsets', 'dtype', 'extra', 'meta'),
        (depth, arrays, field) => {
          const v = arrays
            ? `${'['.repeat(depth)}${']'.repeat(depth)}`
            : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
          const entry: Record<string, string> = {
            dtype: '"F32"',
            shape: '[1]',
            data_offsets: '[0,4]',
          };
          if (field !== 'meta') entry[field] = v;
          const body = Object.entries(entry)
            .map(([k, x]) => `"${k}":${x}`)
            .join(',');
          const header = `{${field === 'meta' ? `"__metadata__":{"k":${v}},` : ''}"a":{${body}}}`;
          try {
            readSafetensors(file(header, four));
          } catch (e) {
            if (!(e instanceof KwError))
              throw new Error(`non-KwError at depth ${depth}: ${String(e)}`);
            if (/nested deeper/.test(e.message)) deepRefused++;
          }
        },
      ),
      fuzz(15, 200),
    );
    expect(deepRefused).toBeGreaterThan(0);
  });

  it('a random header never makes the reader allocate beyond the file', () => {
    const rng = new Rng(5);
    for (let i = 0; i < 50; i++) {
      const shape = [rng.int(1, 1e6), rng.int(1, 1e6)];
      const bytes = file(
        { a: { dtype: 'F32', shape, data_offsets: [0, shape[0]! * shape[1]! * 4] } },
        new Uint8Array(16),
      );
      expect(() => readSafetensors(bytes)).toThrow(/outside the 16-byte data buffer/);
    }
  });
});
