// Hostile ONNX bytes and names (issue 15): signed int64 dims, varints above 2^64, op types and
// opset domains that are Object.prototype's names, weights held in Constant nodes, Triton model
// names that would leave the repository. Each gives a correct result or a named KwError.
import { initWeights, isKwError, KwError, SpecBuilder } from '@kernelwarehouse/core';
import { tinyKwSpec } from '@kernelwarehouse/core/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { onnxInfo, toOnnx, tritonConfig } from './index.js';
import { readFields, Writer } from './protobuf.js';

/** A ModelProto with the given nodes (op type, domain), opset domains, initializers, I/O dims. */
function model(o: {
  ops?: [string, string?][];
  opsets?: [string, number][];
  constants?: number[];
  inits?: number;
  dims?: number[];
}): Uint8Array {
  const g = new Writer();
  for (const [op, domain] of o.ops ?? []) {
    const n = new Writer().string(1, 'x').string(2, 'y').string(4, op);
    if (domain) n.string(7, domain);
    g.message(1, n);
  }
  for (const bytes of o.constants ?? []) {
    const t = new Writer().int(2, 1).bytes(9, new Uint8Array(bytes));
    const a = new Writer().string(1, 'value').message(5, t).int(20, 4);
    g.message(1, new Writer().string(2, 'c').string(4, 'Constant').message(5, a));
  }
  for (let i = 0; i < (o.inits ?? 0); i++)
    g.message(5, new Writer().int(2, 1).string(8, `w${i}`).bytes(9, new Uint8Array(8)));
  const shape = new Writer();
  for (const d of o.dims ?? [1]) shape.message(1, new Writer().int(1, d));
  const type = new Writer().message(1, new Writer().int(1, 1).message(2, shape));
  g.message(11, new Writer().string(1, 'input').message(2, type));
  g.message(12, new Writer().string(1, 'output').message(2, type));
  const m = new Writer().int(1, 8).message(7, g);
  for (const [d, v] of o.opsets ?? [['', 17]]) m.message(8, new Writer().string(1, d).int(2, v));
  return m.finish();
}

describe('ONNX int64 and varints', () => {
  it('a dim of -1 (int64, ten-byte varint) reads as -1, not 18446744073709552000', () => {
    const info = onnxInfo(model({ dims: [-1, 3, -7, 2 ** 40] }));
    expect(info.inputs[0]!.shape).toEqual([-1, 3, -7, 2 ** 40]);
    expect(info.outputs[0]!.shape).toEqual([-1, 3, -7, 2 ** 40]);
  });

  it('varints of 10 bytes whose value passes 2^64, and of 11 bytes, are refused', () => {
    // field 1 (ir_version), wire 0, then a varint: nine 0xff bytes and a last byte of 0x02
    const above = Uint8Array.from([0x08, ...Array(9).fill(0xff), 0x02]);
    const eleven = Uint8Array.from([0x08, ...Array(10).fill(0x80), 0x00]);
    for (const [bytes, words] of [
      [above, /varint above 2\^64/],
      [eleven, /varint longer than 10 bytes/],
    ] as const) {
      let err: unknown;
      try {
        readFields(bytes, 'ModelProto');
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'ONNX_INVALID'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(words);
    }
    // the largest 10-byte varint (2^64 - 1) is -1 as an int64
    const max = Uint8Array.from([0x08, ...Array(9).fill(0xff), 0x01]);
    expect(readFields(max)[0]!.value).toBe(-1);
  });

  it('a length-delimited field whose length is negative or past the end is refused', () => {
    const neg = Uint8Array.from([0x3a, ...Array(9).fill(0xff), 0x01]);
    expect(() => readFields(neg)).toThrow(/runs past the end/);
  });
});

describe('untrusted names as keys', () => {
  it('op types and opset domains named like Object.prototype members are counted and kept', () => {
    const info = onnxInfo(
      model({
        ops: [['constructor'], ['__proto__'], ['__proto__'], ['toString'], ['hasOwnProperty']],
        opsets: [
          ['', 17],
          ['__proto__', 3],
          ['constructor', 2],
        ],
      }),
    );
    expect(info.ops.constructor).toBe(1);
    expect(Object.getOwnPropertyDescriptor(info.ops, '__proto__')?.value).toBe(2);
    expect(info.ops.toString).toBe(1);
    expect(info.ops.hasOwnProperty).toBe(1);
    expect(Object.keys(info.ops).sort()).toEqual(
      ['__proto__', 'constructor', 'hasOwnProperty', 'toString'].sort(),
    );
    expect(info.nodes).toBe(5);
    expect(Object.entries(info.opsets)).toEqual([
      ['', 17],
      ['__proto__', 3],
      ['constructor', 2],
    ]);
    // JSON output (kw onnx-info --json) keeps them too
    expect(
      Object.getOwnPropertyDescriptor(JSON.parse(JSON.stringify(info)).ops, '__proto__')?.value,
    ).toBe(2);
  });
});

describe('weights as Constant nodes', () => {
  it('counts Constant nodes and their bytes next to initializers', () => {
    const c = onnxInfo(model({ constants: [16, 40] }));
    expect([c.initializers, c.initializerBytes, c.constants, c.constantBytes]).toEqual([
      0, 0, 2, 56,
    ]);
    const i = onnxInfo(model({ inits: 3 }));
    expect([i.initializers, i.initializerBytes, i.constants, i.constantBytes]).toEqual([
      3, 24, 0, 0,
    ]);
  });
});

describe('Triton model names become folders', () => {
  const bytes = model({ dims: [-1, 3] });

  it.each([['..'], ['.'], ['a/b'], ['../x'], [''], ['x'.repeat(256)], ['a\nb']])(
    'refuses %j',
    (name) => {
      let err: unknown;
      try {
        tritonConfig(bytes, { name, maxBatchSize: 0 });
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'ARGUMENT_INVALID'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/not "\." or "\.\."/);
    },
  );

  it('takes names with dots that are not . or .., and escapes I/O names in the config', () => {
    expect(tritonConfig(bytes, { name: '..a', maxBatchSize: 0 })).toMatch(/^name: "\.\.a"/);
    const g = new Writer();
    const shape = new Writer().message(1, new Writer().string(2, 'N'));
    const type = new Writer().message(1, new Writer().int(1, 1).message(2, shape));
    g.message(11, new Writer().string(1, 'in"put\n}').message(2, type));
    g.message(12, new Writer().string(1, 'out').message(2, type));
    const m = new Writer().int(1, 8).message(7, g).finish();
    const text = tritonConfig(m, { name: 'm' });
    expect(text).toContain('name: "in\\"put\\n}"');
    expect(text.split('\n').filter((l) => l === '}').length).toBe(1); // only dynamic_batching's
  });
});

describe('sizes', () => {
  it('a layer that fit the old 2^31 - 1 limit but no typed array: SPEC_SHAPE before any allocation', () => {
    const b = new SpecBuilder('big', [16]);
    b.output(b.linear('fc', b.input, 2 ** 26)); // 2^30 weights: passed, then a RangeError in toOnnx
    let err: unknown;
    try {
      toOnnx(b.build(), new Map());
    } catch (e) {
      err = e;
    }
    expect(isKwError(err, 'SPEC_SHAPE'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/parameter "fc.weight".*at most 2\^29 - 1/);
  });
});

/** fast-check settings: the CI seed and run count unless KW_FUZZ_SEED / KW_FUZZ_SCALE say otherwise. */
function fuzz(ciSeed: number, ciRuns: number): { seed: number; numRuns: number } {
  const scale = Number(process.env.KW_FUZZ_SCALE ?? 1);
  const seed = process.env.KW_FUZZ_SEED;
  return {
    seed: seed === undefined ? ciSeed : Number(seed),
    numRuns: Math.max(1, Math.round(ciRuns * scale)),
  };
}

describe('control-flow bodies', () => {
  /** A graph of one Relu, one 8-byte initializer and, below `depth` 1, a Scan whose body nests. */
  function body(depth: number): Writer {
    const g = new Writer();
    g.message(1, new Writer().string(1, 'x').string(2, 'y').string(4, 'Relu'));
    g.message(5, new Writer().int(2, 1).string(8, `b${depth}`).bytes(9, new Uint8Array(8)));
    if (depth > 1) {
      const a = new Writer()
        .string(1, 'body')
        .message(6, body(depth - 1))
        .int(20, 5);
      g.message(1, new Writer().string(1, 'x').string(2, 'z').string(4, 'Scan').message(5, a));
    }
    return g;
  }
  function nested(depth: number): Uint8Array {
    const a = new Writer().string(1, 'body').message(6, body(depth)).int(20, 5);
    const g = new Writer().message(
      1,
      new Writer().string(1, 'x').string(2, 'y').string(4, 'Scan').message(5, a),
    );
    return new Writer().int(1, 8).message(7, g).finish();
  }

  it('counts the ops and initializer bytes of nested bodies apart from the graph', () => {
    const info = onnxInfo(nested(3));
    expect(info.ops).toEqual({ Scan: 1 });
    expect({ ...info.subgraphOps }).toEqual({ Relu: 3, Scan: 2 });
    expect([info.initializerBytes, info.subgraphInitializerBytes]).toEqual([0, 24]);
  });

  it('refuses bodies nested deeper than 64 with a KwError, not a stack overflow', () => {
    expect(onnxInfo(nested(64)).subgraphOps.Relu).toBe(64);
    for (const depth of [65, 5000]) {
      let err: unknown;
      try {
        onnxInfo(nested(depth));
      } catch (e) {
        err = e;
      }
      expect(isKwError(err) && err.code).toBe('ONNX_INVALID');
      expect(String(err)).toMatch(/subgraphs nested more than 64 deep/);
    }
  });
});

describe('ONNX fuzz', () => {
  const spec = tinyKwSpec({ budget: 1 });
  const good = toOnnx(spec, initWeights(spec));

  it('random byte edits (varint bytes set to 0xff/0x80 included) and cuts: onnxInfo and tritonConfig return or throw a KwError', () => {
    let refused = 0;
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.nat({ max: good.length - 1 }),
            fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0xff, 0x80, 0x7f, 0x01)),
          ),
          { minLength: 1, maxLength: 8 },
        ),
        fc.option(fc.nat({ max: good.length }), { nil: undefined }),
        (edits, cut) => {
          const b = good.slice(0, cut ?? good.length);
          for (const [i, v] of edits) if (i < b.length) b[i] = v;
          try {
            const info = onnxInfo(b);
            tritonConfig(info, { name: 'm', maxBatchSize: 0 });
          } catch (e) {
            if (!(e instanceof KwError)) throw new Error(`non-KwError: ${String(e)}`);
            refused++;
          }
        },
      ),
      fuzz(23, 400),
    );
    expect(refused).toBeGreaterThan(0);
  });
});
