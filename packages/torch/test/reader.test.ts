// The .pth reader on its own: exact decoding of every storage dtype and of strided views
// (fixtures written by torch.save), and a corpus of hostile files built here by hand or by seeded
// edits of a valid file, each refused with a named KwError: never another error, never a hang.
import { readFileSync } from 'node:fs';
import {
  isKwError,
  KwError,
  type KwErrorCode,
  tensor,
  writeSafetensors,
} from '@kernelwarehouse/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  describe as describeValue,
  detectNaming,
  extractStateDict,
  formatFromName,
  isUnsafeGlobal,
  loadCheckpoint,
  PickleGlobal,
  PickleObject,
  readPth,
  readZip,
  stripModulePrefix,
  TorchTensor,
  UnreadTensor,
  unpickle,
} from '../src/index.js';

const dir = new URL('./fixtures/', import.meta.url);
const bytes = (name: string) => new Uint8Array(readFileSync(new URL(name, dir)));

// fast-check settings as in core/test/fuzz.ts: a fixed CI seed and run count; KW_FUZZ_SCALE and
// KW_FUZZ_SEED for longer local hunts
const scale = Number(process.env.KW_FUZZ_SCALE ?? 1);
const fuzz = (seed: number, runs: number) => ({
  seed: process.env.KW_FUZZ_SEED === undefined ? seed : Number(process.env.KW_FUZZ_SEED),
  numRuns: Math.max(1, Math.round(runs * scale)),
});

/** A stored zip (the layout torch.save writes) from entries, optionally with hand-set fields. */
function zip(
  entries: [string, Uint8Array][],
  patch: { method?: number; usize?: number; offsetOf?: Record<string, string> } = {},
): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  const offsets = new Map<string, number>();
  let at = 0;
  for (const [name, data] of entries) {
    const n = enc.encode(name);
    const h = new Uint8Array(30 + n.length);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(8, patch.method ?? 0, true);
    dv.setUint32(18, data.length, true);
    dv.setUint32(22, data.length, true);
    dv.setUint16(26, n.length, true);
    h.set(n, 30);
    offsets.set(name, at);
    parts.push(h, data);
    at += h.length + data.length;
  }
  for (const [name, data] of entries) {
    const n = enc.encode(name);
    const c = new Uint8Array(46 + n.length);
    const dv = new DataView(c.buffer);
    dv.setUint32(0, 0x02014b50, true);
    dv.setUint16(10, patch.method ?? 0, true);
    dv.setUint32(20, data.length, true);
    dv.setUint32(24, patch.usize ?? data.length, true);
    dv.setUint16(28, n.length, true);
    dv.setUint32(42, offsets.get(patch.offsetOf?.[name] ?? name)!, true);
    c.set(n, 46);
    central.push(c);
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const end = new Uint8Array(22);
  const dv = new DataView(end.buffer);
  dv.setUint32(0, 0x06054b50, true);
  dv.setUint16(8, entries.length, true);
  dv.setUint16(10, entries.length, true);
  dv.setUint32(12, cdSize, true);
  dv.setUint32(16, at, true);
  const all = [...parts, ...central, end];
  const out = new Uint8Array(all.reduce((a, p) => a + p.length, 0));
  let p = 0;
  for (const part of all) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

/** Pickle bytes from opcodes written as numbers, strings (raw latin1) and byte arrays. */
function pk(...parts: (number | string | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === 'number') out.push(p);
    else if (typeof p === 'string') for (const ch of p) out.push(ch.charCodeAt(0));
    else out.push(...p);
  }
  return new Uint8Array(out);
}
const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const str = (s: string) => pk(0x58, u32(s.length), s); // BINUNICODE
const glob = (m: string, n: string) => pk('c', `${m}\n${n}\n`);

/**
 * A one-tensor checkpoint `{'w': tensor}` with a float32 storage of `numel` elements and the
 * given view; storage bytes from `data`.
 */
function tensorPth(o: {
  numel: number;
  offset: number;
  size: (number | bigint)[];
  stride: (number | bigint)[];
  data?: Uint8Array;
  storageType?: string;
}): Uint8Array {
  // ints as BININT, bigints as an 8-byte LONG1
  const int = (x: number | bigint) =>
    typeof x === 'bigint'
      ? [0x8a, 8, ...new Uint8Array(new BigInt64Array([x]).buffer)]
      : [0x4a, ...u32(x)];
  const tuple = (xs: (number | bigint)[]) => pk(0x28, ...xs.flatMap(int), 0x74);
  const p = pk(
    0x80,
    2,
    0x7d, // EMPTY_DICT
    str('w'),
    glob('torch._utils', '_rebuild_tensor_v2'),
    0x28, // MARK (args tuple)
    0x28, // MARK (persistent id)
    str('storage'),
    glob('torch', o.storageType ?? 'FloatStorage'),
    str('0'),
    str('cpu'),
    0x4a,
    u32(o.numel),
    0x74, // TUPLE
    0x51, // BINPERSID
    0x4a,
    u32(o.offset),
    tuple(o.size),
    tuple(o.stride),
    0x89, // False
    glob('collections', 'OrderedDict'),
    0x29,
    0x52,
    0x74, // TUPLE (args)
    0x52, // REDUCE
    0x73, // SETITEM
    0x2e,
  );
  return zip([
    ['archive/data.pkl', p],
    ['archive/data/0', o.data ?? new Uint8Array(o.numel * 4)],
  ]);
}

/** Expect a KwError with this code (and the message to match). */
function refuses(f: () => unknown, code: KwErrorCode, message?: RegExp) {
  try {
    f();
  } catch (e) {
    expect(isKwError(e), String(e)).toBe(true);
    expect((e as KwError).code).toBe(code);
    if (message) expect((e as KwError).message).toMatch(message);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

describe('decoding what torch.save writes', () => {
  it('every storage dtype, offsets, transposed / sliced / expanded views, shared storages', () => {
    const file = readPth(bytes('dtypes.pth'));
    const want = JSON.parse(readFileSync(new URL('dtypes.json', dir), 'utf8')) as Record<
      string,
      { dtype: string; shape: number[]; values: number[] }
    >;
    const tensors = (file.root as Map<string, unknown>).get('tensors') as Map<string, TorchTensor>;
    expect([...tensors.keys()].sort()).toEqual(Object.keys(want).sort());
    const dt: Record<string, string> = {
      'torch.float32': 'F32',
      'torch.float64': 'F64',
      'torch.float16': 'F16',
      'torch.bfloat16': 'BF16',
      'torch.int64': 'I64',
      'torch.int32': 'I32',
      'torch.uint8': 'U8',
      'torch.bool': 'BOOL',
    };
    for (const [k, w] of Object.entries(want)) {
      const t = tensors.get(k)!;
      expect(t).toBeInstanceOf(TorchTensor);
      expect(t.dtype, k).toBe(dt[w.dtype]);
      expect(t.shape, k).toEqual(w.shape);
      // every value is exactly representable in each dtype, so equality is exact
      expect(Array.from(t.data, Number), k).toEqual(w.values);
    }
    expect(tensors.get('f32_shared_a')!.storage).toBe(tensors.get('f32')!.storage);
    expect((file.root as Map<string, unknown>).get('nested')).toEqual([
      1,
      [2.5, null],
      new Map([['k', true]]),
    ]);
    expect(file.placeholders.size).toBe(0);
  });

  it('a checkpoint dict: args stay an inert argparse.Namespace with its fields as data', () => {
    const file = readPth(bytes('kw_resnet10_w00625_1x_ckpt.pth'));
    const root = file.root as Map<string, unknown>;
    const args = root.get('args') as PickleObject;
    expect(args).toBeInstanceOf(PickleObject);
    expect(args.global.qualified).toBe('argparse.Namespace');
    expect((args.state as Map<string, unknown>).get('save_ckpt_num')).toBe(3);
    expect(root.get('epoch')).toBe(7);
    expect((root.get('scaler') as Map<string, unknown>).get('scale')).toBe(65536);
    const opt = root.get('optimizer') as Map<string, unknown>;
    expect([...opt.keys()]).toEqual(['state', 'param_groups']);
    const sd = extractStateDict(root, { key: 'model_ema' });
    expect(sd.key).toBe('model_ema');
    // a bare state_dict has no entries to pick, and the message says so
    const bare = readPth(bytes('kw_resnet10_w00625_1x_ddp.pth')).root;
    refuses(
      () => extractStateDict(bare, { key: 'model' }),
      'PTH_NO_STATE_DICT',
      /is a bare state_dict \(\d+ tensors at its top level, e\.g\. module\..*\), with no entry "model" to pick/,
    );
    refuses(
      () => extractStateDict(root, { key: 'nope' }),
      'PTH_NO_STATE_DICT',
      /keys: model, optimizer/,
    );
  });

  it('tensors sliced from one storage and non-contiguous views are copied out correctly', () => {
    // storage 0..11 as float32; a [2, 3] view at offset 1 with strides [1, 4] (transposed-like)
    const data = new Uint8Array(new Float32Array(Array.from({ length: 12 }, (_, i) => i)).buffer);
    const f = readPth(tensorPth({ numel: 12, offset: 1, size: [2, 3], stride: [1, 4], data }));
    const w = (f.root as Map<string, TorchTensor>).get('w')!;
    expect(Array.from(w.data as Float32Array)).toEqual([1, 5, 9, 2, 6, 10]);
  });
});

describe('hostile files are refused by name', () => {
  it('the legacy format and other non-zip files', () => {
    refuses(() => readPth(bytes('legacy.pth')), 'PTH_FORMAT', /legacy torch\.save format/);
    refuses(
      () => readPth(new TextEncoder().encode('hello world')),
      'PTH_FORMAT',
      /not a torch\.save zip/,
    );
    refuses(
      () =>
        readPth(
          zip([
            ['m/constants.pkl', pk(0x4e, 0x2e)],
            ['m/code/x.py', pk()],
          ]),
        ),
      'PTH_FORMAT',
      /TorchScript/,
    );
  });

  it('pickles naming os.system, builtins.eval, subprocess; nothing runs', () => {
    refuses(() => readPth(bytes('hostile_os_system.pth')), 'PTH_UNSAFE_GLOBAL', /posix\.system/);
    for (const [m, n] of [
      ['builtins', 'eval'],
      ['builtins', 'exec'],
      ['__builtin__', 'getattr'],
      ['subprocess', 'Popen'],
      ['os', 'system'],
      ['nt', 'system'],
      ['torch', 'load'],
      ['collections', '__class__'],
    ] as const) {
      expect(isUnsafeGlobal(m, n), `${m}.${n}`).toBe(true);
      refuses(() => unpickle(pk(glob(m, n), str('x'), 0x85, 0x52, 0x2e)), 'PTH_UNSAFE_GLOBAL');
    }
    expect(isUnsafeGlobal('argparse', 'Namespace')).toBe(false);
    expect(isUnsafeGlobal('torch._utils', '_rebuild_tensor_v2')).toBe(false);
  });

  it('unknown opcodes, truncation, missing memo, bad stack use', () => {
    refuses(() => unpickle(pk(0x80, 2, 0xff)), 'PTH_PICKLE', /opcode 0xff/);
    refuses(() => unpickle(pk(0x80, 2, 0x58, u32(1000), 'ab')), 'PTH_PICKLE', /needs 1000 bytes/);
    refuses(() => unpickle(pk(0x80, 2, 0x68, 5, 0x2e)), 'PTH_PICKLE', /memo 5/);
    refuses(() => unpickle(pk(0x80, 2, 0x52)), 'PTH_PICKLE', /stack empty/);
    refuses(() => unpickle(pk(0x80, 2, 0x4e)), 'PTH_PICKLE', /without STOP/);
    refuses(() => unpickle(pk(0x29, 0x4e, 0x61, 0x2e)), 'PTH_PICKLE', /tuple, not a list/);
    refuses(() => unpickle(pk(0x4b, 1, 0x29, 0x52, 0x2e)), 'PTH_PICKLE', /not a global/);
  });

  it('deep nesting and huge stacks hit a bound, not the JS stack', () => {
    refuses(() => unpickle(new Uint8Array(5000).fill(0x28)), 'PTH_LIMIT', /1000 open MARKs/);
    refuses(() => unpickle(new Uint8Array(200_000).fill(0x5d)), 'PTH_LIMIT', /stack exceeds/);
    // a list that holds itself (cycles are legal pickle) is read, not walked forever
    const cyc = unpickle(pk(0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e)) as unknown[];
    expect(cyc[0]).toBe(cyc);
    refuses(() => extractStateDict(cyc), 'PTH_NO_STATE_DICT');
  });

  it('zip bombs: overlapping entries, compressed entries, lying sizes, bad offsets', () => {
    const a = new Uint8Array(64);
    refuses(
      () =>
        readZip(
          zip(
            [
              ['x/a', a],
              ['x/b', a],
            ],
            { offsetOf: { 'x/b': 'x/a' } },
          ),
        ),
      'PTH_ZIP',
      /overlap/,
    );
    refuses(() => readZip(zip([['x/a', a]], { method: 8 })), 'PTH_ZIP', /compressed \(method 8\)/);
    refuses(
      () => readZip(zip([['x/a', a]], { usize: 1 << 30 })),
      'PTH_ZIP',
      /claims 1073741824 bytes/,
    );
    const ok = zip([['x/a', a]]);
    const bad = ok.slice();
    new DataView(bad.buffer).setUint32(bad.length - 6, 0x7fffffff, true); // central directory offset
    refuses(() => readZip(bad), 'PTH_ZIP', /does not fit/);
    refuses(() => readZip(ok.subarray(0, ok.length - 3)), 'PTH_ZIP', /end-of-central-directory/);
    refuses(
      () =>
        readZip(
          zip([
            ['x/a', a],
            ['x/a', a],
          ]),
        ),
      'PTH_ZIP',
      /twice/,
    );
  });

  it('tensors that reach outside their storage or would expand past the byte budget', () => {
    refuses(
      () => readPth(tensorPth({ numel: 4, offset: 2, size: [4], stride: [1] })),
      'PTH_TENSOR',
      /reaches element 5, the storage has 4/,
    );
    // the storage entry is shorter than its element count says
    const lying = tensorPth({
      numel: 4,
      offset: 0,
      size: [4],
      stride: [1],
      data: new Uint8Array(8),
    });
    refuses(() => readPth(lying), 'PTH_TENSOR', /need 16 bytes, the entry has 8/);
    // a stride-0 view of one element asking for 2^31 elements
    refuses(
      () => readPth(tensorPth({ numel: 1, offset: 0, size: [2 ** 31 - 1], stride: [0] })),
      'PTH_LIMIT',
      /rebuilt tensors would take more than/,
    );
  });

  it('seeded byte edits and truncations of a real checkpoint only ever give KwErrors', () => {
    const good = bytes('dtypes.pth');
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ at: fc.nat({ max: good.length - 1 }), v: fc.integer({ min: 0, max: 255 }) }),
          {
            minLength: 1,
            maxLength: 8,
          },
        ),
        fc.nat({ max: good.length }),
        (edits, cut) => {
          const b = good.slice(0, Math.max(cut, good.length - 64 * edits.length));
          for (const e of edits) if (e.at < b.length) b[e.at] = e.v;
          try {
            readPth(b);
          } catch (e) {
            if (!(e instanceof KwError)) throw e;
          }
        },
      ),
      fuzz(13, 400),
    );
  });

  it('random opcode streams only ever give KwErrors (or a value)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), (b) => {
        try {
          readPth(zip([['a/data.pkl', pk(0x80, 2, b, 0x2e)]]));
        } catch (e) {
          if (!(e instanceof KwError)) throw e;
        }
      }),
      fuzz(14, 2000),
    );
  });

  it('random sequences of the opcodes torch.save uses (tensors, storages, memo) only give KwErrors', () => {
    const ops: Uint8Array[] = [
      pk(0x28),
      pk(0x29),
      pk(0x5d),
      pk(0x7d),
      pk(0x4e),
      pk(0x88),
      pk(0x89),
      pk(0x4b, 2),
      pk(0x4b, 0),
      pk(0x4a, u32(0xffffffff)),
      pk(0x8a, 1, 0xff),
      str('0'),
      str('storage'),
      str('cpu'),
      str('w'),
      pk(0x71, 1),
      pk(0x68, 1),
      pk(0x71, 2),
      pk(0x68, 2),
      pk(0x94),
      pk(0x61),
      pk(0x65),
      pk(0x73),
      pk(0x75),
      pk(0x74),
      pk(0x85),
      pk(0x86),
      pk(0x87),
      pk(0x52),
      pk(0x62),
      pk(0x81),
      pk(0x51),
      pk(0x30),
      pk(0x31),
      pk(0x32),
      pk(0x8f),
      pk(0x90),
      pk(0x91),
      pk(0x93),
      glob('torch._utils', '_rebuild_tensor_v2'),
      glob('torch', 'FloatStorage'),
      glob('torch', 'HalfStorage'),
      glob('collections', 'OrderedDict'),
      glob('argparse', 'Namespace'),
      glob('torch._utils', '_rebuild_parameter'),
      glob('_codecs', 'encode'),
    ];
    const storage = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
    fc.assert(
      fc.property(fc.array(fc.nat({ max: ops.length - 1 }), { maxLength: 60 }), (picks) => {
        const body = picks.map((i) => ops[i]!);
        const p = pk(0x80, 2, ...body, 0x2e);
        try {
          const f = readPth(
            zip([
              ['a/data.pkl', p],
              ['a/data/0', storage],
              ['a/data/2', storage],
            ]),
          );
          extractStateDict(f.root);
        } catch (e) {
          if (!(e instanceof KwError)) throw e;
        }
      }),
      fuzz(15, 3000),
    );
  });
});

describe('what real torch.save / torch.jit.save files hold (scripts/torch-fixtures/make_edge_fixtures.py)', () => {
  it('a TorchScript archive is named as such, not as a compressed zip', () => {
    refuses(
      () => readPth(bytes('edge_torchscript.pth')),
      'PTH_FORMAT',
      /TorchScript archive \(torch\.jit\.save\).*torch\.jit\.load.*model\.state_dict\(\) with torch\.save/,
    );
    // TorchScript writes data.pkl too, and compresses code/ entries
    const ts = zip(
      [
        ['m/data.pkl', pk(0x4e, 0x2e)],
        ['m/code/__torch__/m.py', pk()],
      ],
      { method: 8 },
    );
    refuses(() => readPth(ts), 'PTH_FORMAT', /TorchScript/);
    // a compressed entry of a torch.save archive is still refused by name
    refuses(
      () => readPth(zip([['m/data.pkl', pk(0x4e, 0x2e)]], { method: 8 })),
      'PTH_ZIP',
      /entry "m\/data\.pkl" is compressed \(method 8\)/,
    );
  });

  it('tensors beside a pickled nn.Module are not taken as the state_dict', () => {
    const root = readPth(bytes('edge_model_object.pth')).root as Map<string, unknown>;
    expect(root.get('best_acc')).toBeInstanceOf(TorchTensor);
    refuses(
      () => extractStateDict(root),
      'PTH_NO_STATE_DICT',
      /key "model" holds a pickled nn\.Module \(torch\.nn\.modules\.linear\.Linear object, not constructed\) beside the tensors "best_acc"; .*save model\.state_dict\(\)/,
    );
    refuses(
      () => extractStateDict(root, { key: 'model' }),
      'PTH_NO_STATE_DICT',
      /no state_dict under "model" \(it holds a torch\.nn\.modules\.linear\.Linear object.*save model\.state_dict\(\)/,
    );
    // a model of a project's own class is known by its Module state (_parameters, _modules)
    const net = new PickleObject(new PickleGlobal('models.kw_resnet', 'KW_ResNet'), []);
    net.state = new Map([['_modules', new Map()]]);
    refuses(
      () =>
        extractStateDict(
          new Map<string, unknown>([
            ['net', net],
            ['acc', root.get('best_acc')],
          ]),
        ),
      'PTH_NO_STATE_DICT',
      /key "net" holds a pickled nn\.Module \(models\.kw_resnet\.KW_ResNet object/,
    );
    // other inert objects beside tensors still leave a bare state_dict
    const other = new PickleObject(new PickleGlobal('argparse', 'Namespace'), []);
    const sd = extractStateDict(
      new Map<string, unknown>([
        ['args', other],
        ['w', root.get('best_acc')],
      ]),
    );
    expect([...sd.tensors.keys()]).toEqual(['w']);
  });

  it('sparse and meta tensors of the state_dict are refused by name; elsewhere they are listed', () => {
    const file = readPth(bytes('edge_sparse_meta.pth'));
    const root = file.root as Map<string, unknown>;
    refuses(
      () => extractStateDict(root),
      'PTH_TENSOR',
      /tensor "fc\.weight" is a sparse tensor \(torch\.sparse_coo, shape \[3, 4\]\); the reader does not support it: save it dense \(t\.to_dense\(\)\)/,
    );
    const noSparse = new Map([...root].filter(([k]) => k !== 'fc.weight'));
    refuses(
      () => extractStateDict(new Map([['model', noSparse]])),
      'PTH_TENSOR',
      /tensor "emb\.weight" \(under checkpoint key "model"\) is a meta tensor \(torch\.float32, shape \[5, 2\]: it holds no data\).*materialize it/,
    );
    const ok = new Map([['fc.bias', root.get('fc.bias')]]);
    const sd = extractStateDict(
      new Map<string, unknown>([
        ['model', ok],
        ['raw', root],
      ]),
    );
    expect(Array.from(sd.tensors.get('fc.bias')!.data as Float32Array)).toEqual([1, 2, 3]);
    expect(sd.skipped).toEqual(['raw (dict of 3)']);
    expect(describeValue(root.get('fc.weight'))).toBe(
      'sparse tensor (torch.sparse_coo, shape [3, 4]), not read',
    );
    expect(root.get('emb.weight')).toBeInstanceOf(UnreadTensor);
  });

  it('an unsupported storage type (complex64 in the optimizer) only matters where it is needed', () => {
    const root = readPth(bytes('edge_complex_optimizer.pth')).root as Map<string, unknown>;
    const sd = extractStateDict(root);
    expect(sd.key).toBe('model');
    expect(Array.from(sd.tensors.get('fc.weight')!.data as Float32Array)).toEqual(
      Array.from({ length: 12 }, (_, i) => i),
    );
    const state = (root.get('optimizer') as Map<string, Map<number, Map<string, unknown>>>)
      .get('state')!
      .get(0)!;
    refuses(
      () => extractStateDict(new Map([['model', state]])),
      'PTH_TENSOR',
      /tensor "exp_avg" \(under checkpoint key "model"\) is a tensor on torch\.ComplexFloatStorage \(shape \[2\]\); the reader does not support it/,
    );
    // a persistent id naming no storage class at all is still refused at once
    refuses(
      () =>
        readPth(tensorPth({ numel: 1, offset: 0, size: [1], stride: [1], storageType: 'Tensor' })),
      'PTH_TENSOR',
      /storage type torch\.Tensor is not a torch storage class/,
    );
  });

  it('protocol 2 builtins (__builtin__.set, frozenset, bytearray) are rebuilt like builtins.*', () => {
    const file = readPth(bytes('edge_proto2_builtins.pth'));
    const root = file.root as Map<string, unknown>;
    expect(root.get('tags')).toEqual(new Set([1, 2]));
    expect(root.get('frozen')).toEqual(new Set(['a']));
    expect(root.get('buf')).toEqual(new Uint8Array([0x78, 0x79]));
    expect((root.get('z') as PickleObject).global.qualified).toBe('__builtin__.complex');
    expect([...file.placeholders.keys()]).toEqual(['__builtin__.complex']);
    // and the code-running builtins stay refused under either module name
    for (const m of ['__builtin__', 'builtins'])
      for (const n of ['eval', 'exec', '__import__', 'open', 'getattr', 'compile']) {
        expect(isUnsafeGlobal(m, n), `${m}.${n}`).toBe(true);
        refuses(() => unpickle(pk(glob(m, n), str('x'), 0x85, 0x52, 0x2e)), 'PTH_UNSAFE_GLOBAL');
      }
  });

  it('protocol 0 / 1 text opcodes: LONG, INT, FLOAT, UNICODE', () => {
    const file = readPth(bytes('edge_proto1_long.pth'));
    const root = file.root as Map<string, unknown>;
    expect(root.get('step')).toBe(2 ** 31);
    expect(root.get('neg')).toBe(-(2 ** 40));
    const w = (root.get('model') as Map<string, TorchTensor>).get('w')!;
    expect(Array.from(w.data as Float32Array)).toEqual([1.5, -2]);
    // pickle.dumps({'a': [1.5, 2**70, -3, 'x\\y\né€\x80'], 'b': -inf, 'c': 1e-300}, 0)
    const p0 = pk(
      '(dp0\nVa\np1\n(lp2\nF1.5\naL1180591620717411303424L\naI-3\naVx\\u005cy\\u000a\xe9\\u20ac\x80\np3\nasVb\np4\nF-inf\nsVc\np5\nF1e-300\ns.',
    );
    expect(unpickle(p0)).toEqual(
      new Map<string, unknown>([
        ['a', [1.5, 1180591620717411303424n, -3, 'x\\y\né€\x80']],
        ['b', Number.NEGATIVE_INFINITY],
        ['c', 1e-300],
      ]),
    );
    expect(unpickle(pk('Fnan\n.'))).toBeNaN();
    expect(unpickle(pk('L-12\n.'))).toBe(-12);
    expect(unpickle(pk('V\\U0001f600\\\\u0041\n.'))).toBe('😀\\\\u0041');
    refuses(() => unpickle(pk('L12x\n.')), 'PTH_PICKLE', /LONG "12x".*not an integer/);
    refuses(() => unpickle(pk(`L${'9'.repeat(200)}\n.`)), 'PTH_LIMIT', /200 digits/);
    refuses(() => unpickle(pk('F1.2.3\n.')), 'PTH_PICKLE', /FLOAT "1\.2\.3".*not a number/);
    refuses(() => unpickle(pk('V\\u12\n.')), 'PTH_PICKLE', /bad \\u escape/);
    refuses(
      () => unpickle(pk("S'abc'\n.")),
      'PTH_PICKLE',
      /opcode STRING \(0x53\) at offset 0 is a protocol 0\/1 text opcode/,
    );
  });

  it('a storage a little longer than its elements (a uint8 storage viewed as float32) is read', () => {
    const file = readPth(bytes('edge_uneven_storage.pth'));
    const w = (file.root as Map<string, TorchTensor>).get('w')!;
    const want = new Float32Array(new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]).buffer);
    expect(w.shape).toEqual([2]);
    expect(Array.from(w.data as Float32Array)).toEqual(Array.from(want));
    // a whole element or more beyond the count is still refused
    refuses(
      () =>
        readPth(
          tensorPth({ numel: 2, offset: 0, size: [2], stride: [1], data: new Uint8Array(12) }),
        ),
      'PTH_TENSOR',
      /2 F32 elements need 8 bytes \(and less than 4 more\), the entry has 12/,
    );
    expect(
      readPth(tensorPth({ numel: 2, offset: 0, size: [2], stride: [1], data: new Uint8Array(11) }))
        .tensors,
    ).toBe(1);
  });

  it('sizes, strides and offsets past 2^53 are named as beyond what the reader supports', () => {
    refuses(
      () => readPth(tensorPth({ numel: 1, offset: 0, size: [2n ** 60n], stride: [0] })),
      'PTH_TENSOR',
      /size of dim 0: 1152921504606846976 is beyond what the reader supports \(at most 2\^53 - 1\)/,
    );
    refuses(
      () => readPth(tensorPth({ numel: 1, offset: 0, size: [1], stride: [2n ** 60n] })),
      'PTH_TENSOR',
      /stride of dim 0: 1152921504606846976 is beyond what the reader supports/,
    );
    refuses(
      () =>
        readPth(
          tensorPth({ numel: 1, offset: 0, size: [2 ** 30, 2 ** 30, 2 ** 30], stride: [0, 0, 0] }),
        ),
      'PTH_TENSOR',
      /element count of a \[1073741824, 1073741824, 1073741824\] view is beyond what the reader supports/,
    );
    refuses(
      () => readPth(tensorPth({ numel: 1, offset: 0, size: [-1n], stride: [1] })),
      'PTH_TENSOR',
      /size of dim 0: -1 is not an integer >= 0/,
    );
  });
});

describe('options are checked where they enter', () => {
  /** PROTO 2; foo.Bar() (an inert PickleObject); MARK; n x `item`; `op`; STOP (no spreads). */
  const manyItems = (n: number, item: number, op: number) => {
    const head = pk(0x80, 2, glob('foo', 'Bar'), 0x29, 0x52, 0x28);
    const out = new Uint8Array(head.length + n + 2);
    out.set(head);
    out.fill(item, head.length, head.length + n);
    out[head.length + n] = op;
    out[head.length + n + 1] = 0x2e;
    return out;
  };

  it('a raised stack limit builds 200 000 APPENDS / SETITEMS items, never overflows the JS stack', () => {
    const limits = { maxStack: 1_000_000 };
    const appended = unpickle(manyItems(200_000, 0x4e, 0x65), {}, limits) as PickleObject;
    expect(appended).toBeInstanceOf(PickleObject);
    expect(appended.items.length).toBe(200_000);
    const set = unpickle(manyItems(400_000, 0x88, 0x75), {}, limits) as PickleObject;
    expect(set.items.length).toBe(400_000);
    // the default limit still refuses the same pickle by name
    refuses(() => unpickle(manyItems(200_000, 0x4e, 0x65)), 'PTH_LIMIT', /stack exceeds 100000/);
    // and so does readPth with the limit passed through
    const file = zip([['a/data.pkl', manyItems(200_000, 0x4e, 0x65)]]);
    expect((readPth(file, { limits }).root as PickleObject).items.length).toBe(200_000);
  });

  it('NaN, Infinity, zero, negative, fractional or non-number limits are refused, not ignored', () => {
    const p = manyItems(10, 0x4e, 0x65);
    const file = zip([['a/data.pkl', p]]);
    for (const name of ['maxStack', 'maxMarks', 'maxMemo'] as const) {
      for (const [v, shown] of [
        [Number.NaN, 'NaN'],
        [Number.POSITIVE_INFINITY, 'Infinity'],
        [0, '0'],
        [-1, '-1'],
        [1.5, '1.5'],
        ['10', '"10"'],
      ] as const) {
        const found = new RegExp(
          `unpickle limits\\.${name} must be an integer >= 1.*found ${shown}$`,
        );
        refuses(() => unpickle(p, {}, { [name]: v }), 'ARGUMENT_INVALID', found);
        refuses(
          () => readPth(file, { limits: { [name]: v } }),
          'ARGUMENT_INVALID',
          new RegExp(`readPth options\\.limits\\.${name} must be an integer >= 1.*found ${shown}$`),
        );
      }
    }
    refuses(
      () => unpickle(p, {}, 5 as never),
      'ARGUMENT_INVALID',
      /unpickle limits must be an object/,
    );
    refuses(() => readPth(file, { limits: null as never }), 'ARGUMENT_INVALID', /found null/);
    // valid limits still work, and still bound
    expect(
      (unpickle(p, {}, { maxStack: 11, maxMarks: 1, maxMemo: 1 }) as PickleObject).items.length,
    ).toBe(10);
    refuses(() => unpickle(p, {}, { maxStack: 9 }), 'PTH_LIMIT', /stack exceeds 9 values/);
  });

  it('maxTensorBytes must be an integer >= 0: NaN no longer switches the byte budget off', () => {
    const file = tensorPth({ numel: 4, offset: 0, size: [4], stride: [1] });
    for (const [v, shown] of [
      [Number.NaN, 'NaN'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [-1, '-1'],
      [0.5, '0.5'],
      ['1e9', '"1e9"'],
    ] as const)
      refuses(
        () => readPth(file, { maxTensorBytes: v as number }),
        'ARGUMENT_INVALID',
        new RegExp(`readPth options\\.maxTensorBytes must be an integer >= 0.*found ${shown}$`),
      );
    refuses(() => readPth(file, { maxTensorBytes: 0 }), 'PTH_LIMIT', /more than 0 bytes/);
    expect(readPth(file, { maxTensorBytes: 16 }).tensors).toBe(1);
    refuses(
      () => readPth(file, 'fast' as never),
      'ARGUMENT_INVALID',
      /readPth options must be an object/,
    );
  });

  it('hooks, bytes and the options of the other public functions are checked too', () => {
    const p = pk(0x4e, 0x2e);
    refuses(
      () => unpickle(p, { reduce: 5 } as never),
      'ARGUMENT_INVALID',
      /hooks\.reduce must be a function/,
    );
    refuses(
      () => unpickle(p, { persistentLoad: 'x' } as never),
      'ARGUMENT_INVALID',
      /hooks\.persistentLoad must be a function/,
    );
    refuses(
      () => unpickle([0x4e, 0x2e] as never),
      'ARGUMENT_INVALID',
      /unpickle bytes must be a Uint8Array/,
    );
    refuses(
      () => readPth('x.pth' as never),
      'ARGUMENT_INVALID',
      /readPth bytes must be a Uint8Array/,
    );
    refuses(
      () => readZip(null as never),
      'ARGUMENT_INVALID',
      /readZip bytes must be a Uint8Array, found null/,
    );
    const pth = bytes('kw_resnet10_w00625_1x_ckpt.pth');
    refuses(
      () => loadCheckpoint({}, pth, { format: 'onnx' as never }),
      'ARGUMENT_INVALID',
      /options\.format must be one of "pth", "safetensors".*found "onnx"/,
    );
    refuses(
      () => loadCheckpoint({}, pth, { ema: 'yes' as never }),
      'ARGUMENT_INVALID',
      /options\.ema must be true or false.*found "yes"/,
    );
    refuses(
      () => loadCheckpoint({}, pth, { key: 5 as never }),
      'ARGUMENT_INVALID',
      /options\.key must be a string.*found 5/,
    );
    refuses(() => loadCheckpoint({}, 'w.pth' as never), 'ARGUMENT_INVALID', /loadCheckpoint bytes/);
    // a safetensors file has no entries to pick: the message names the option that asked for one
    const st = writeSafetensors(new Map([['w', tensor([2], [1, 2])]]));
    refuses(
      () => loadCheckpoint({}, st, { ema: true }),
      'ARGUMENT_INVALID',
      /one state_dict; the key "model_ema" \(options\.ema; kw's --ema\) picks an entry of a \.pth/,
    );
    refuses(
      () => loadCheckpoint({}, st, { key: 'teacher' }),
      'ARGUMENT_INVALID',
      /one state_dict; the key "teacher" \(options\.key; kw's --key\) picks an entry of a \.pth/,
    );
    const root = readPth(pth).root;
    refuses(
      () => extractStateDict(root, { key: 0 as never }),
      'ARGUMENT_INVALID',
      /extractStateDict options\.key must be a string.*found 0/,
    );
    refuses(() => stripModulePrefix({} as never), 'ARGUMENT_INVALID', /must be a Map/);
    refuses(
      () => detectNaming(5 as never),
      'ARGUMENT_INVALID',
      /detectNaming names must be an iterable/,
    );
    refuses(() => formatFromName(5 as never), 'ARGUMENT_INVALID', /name must be a string, found 5/);
    refuses(() => isUnsafeGlobal(undefined as never, 'x'), 'ARGUMENT_INVALID', /two strings/);
  });
});
