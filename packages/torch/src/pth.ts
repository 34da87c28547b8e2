/**
 * torch.save files: a zip of `<archive>/data.pkl` (the pickled object), `<archive>/data/<key>`
 * (one raw storage per key) and a few small records (`version`, `byteorder`). Tensors are
 * rebuilt from their storages (dtype, sizes, strides, storage offset) into fresh typed arrays;
 * every other object the pickle would have constructed stays an inert {@link PickleObject}.
 */
import { bf16ToF32, f16ToF32, KwError, type StoredTensor } from '@kernelwarehouse/core';
import { bytesArgument, integerOption, optionsObject } from './options.js';
import {
  checkUnpickleLimits,
  PickleGlobal,
  PickleObject,
  typeName,
  type UnpickleLimits,
  unpickle,
} from './pickle.js';
import { looksLikeZip, refuseCompressed, scanZip, type ZipEntry } from './zip.js';

/** Storage classes torch.save names, with the dtype (safetensors spelling) and element size. */
export const TORCH_STORAGE_DTYPES: Readonly<Record<string, { dtype: string; bytes: number }>> = {
  FloatStorage: { dtype: 'F32', bytes: 4 },
  DoubleStorage: { dtype: 'F64', bytes: 8 },
  HalfStorage: { dtype: 'F16', bytes: 2 },
  BFloat16Storage: { dtype: 'BF16', bytes: 2 },
  LongStorage: { dtype: 'I64', bytes: 8 },
  IntStorage: { dtype: 'I32', bytes: 4 },
  ShortStorage: { dtype: 'I16', bytes: 2 },
  CharStorage: { dtype: 'I8', bytes: 1 },
  ByteStorage: { dtype: 'U8', bytes: 1 },
  BoolStorage: { dtype: 'BOOL', bytes: 1 },
};

/** A tensor rebuilt from a torch storage: floats as Float32Array (F64 as Float64Array). */
export class TorchTensor implements StoredTensor {
  constructor(
    /** Stored dtype (`F32`, `F16`, `BF16`, `F64`, `I64`, ...). */
    readonly dtype: string,
    readonly shape: number[],
    readonly data: StoredTensor['data'],
    /** The storage key in the archive (tensors that share a storage share the key). */
    readonly storage: string,
  ) {}
}

/**
 * A tensor that is kept but not decoded: a sparse, meta or quantized tensor, or one on a storage
 * type the reader does not support (complex, float8, ...). {@link extractStateDict} refuses it
 * with PTH_TENSOR, naming its key, only when it sits in the state_dict taken; anywhere else
 * (optimizer state, extra entries) it is listed like any other value.
 */
export class UnreadTensor {
  constructor(
    /** Why it was not read. */
    readonly kind: 'sparse' | 'meta' | 'quantized' | 'storage',
    /** What it is, for messages: `a sparse tensor (torch.sparse_coo, shape [3, 4])`. */
    readonly what: string,
    /** What to do instead, for messages: `save t.to_dense() with torch.save`. */
    readonly hint: string,
  ) {}
}

/** Options of {@link readPth}. */
export interface ReadPthOptions {
  /**
   * Most bytes all rebuilt tensors together may take: an integer >= 0 (0 admits only empty
   * tensors). Default: 4 x the file size + 64 MiB (float16 doubles on decoding; a view can only
   * repeat storage elements so far).
   */
  maxTensorBytes?: number;
  /** Bounds of the unpickler (stack, MARK nesting, memo), each an integer >= 1. */
  limits?: UnpickleLimits;
}

/** What {@link readPth} found. */
export interface PthFile {
  /**
   * The unpickled object: Map for dicts, TorchTensor for tensors, UnreadTensor for sparse / meta
   * tensors and unsupported storage types, PickleObject for the rest.
   */
  root: unknown;
  /** The archive folder inside the zip (torch.save uses the file's stem). */
  archive: string;
  /** Tensors rebuilt. */
  tensors: number;
  /** Globals that became inert placeholders, with how often each was constructed. */
  placeholders: Map<string, number>;
}

interface StorageRef {
  kind: 'storage';
  key: string;
  /** The storage class when the reader cannot decode it (`ComplexFloatStorage`), else null. */
  unsupported: string | null;
  dtype: string;
  bytes: number;
  numel: number;
  data: Uint8Array;
}

const tensorFail = (msg: string, details: Record<string, unknown> = {}): never => {
  throw new KwError('PTH_TENSOR', msg, details);
};

const isIndex = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Why `v` is not an index: past 2^53 - 1 (a bigint or a huge float) or not an integer >= 0. */
const indexProblem = (v: unknown): string =>
  (typeof v === 'bigint' && v > 0n) || (typeof v === 'number' && v > Number.MAX_SAFE_INTEGER)
    ? `${String(v)} is beyond what the reader supports (at most 2^53 - 1)`
    : `${typeof v === 'string' ? JSON.stringify(v) : String(v)} is not an integer >= 0`;

/** `[3, 4]` from a pickled size tuple (whatever it holds). */
const shapeText = (v: unknown): string =>
  Array.isArray(v) ? `[${v.map((x) => String(x)).join(', ')}]` : typeName(v);

/** Rebuild functions of tensors the reader keeps as {@link UnreadTensor}s. */
function unreadTensor(q: string, args: readonly unknown[]): UnreadTensor | undefined {
  switch (q) {
    case 'torch._utils._rebuild_sparse_tensor':
    case 'torch._utils._rebuild_sparse_csr_tensor': {
      // (layout, (indices, values, size)) or, older, (layout, (crow, col, values, size))
      const layout = args[0] instanceof PickleObject ? args[0].args[0] : undefined;
      const data = Array.isArray(args[1]) ? args[1] : [];
      const size = data[data.length - 1];
      return new UnreadTensor(
        'sparse',
        `a sparse tensor (${typeof layout === 'string' ? `${layout}, ` : ''}shape ${shapeText(size)})`,
        'save it dense (t.to_dense()) with torch.save',
      );
    }
    case 'torch._utils._rebuild_meta_tensor_no_storage':
      // (dtype, size, stride, requires_grad)
      return new UnreadTensor(
        'meta',
        `a meta tensor (${args[0] instanceof PickleGlobal ? `${args[0].qualified}, ` : ''}shape ${shapeText(args[1])}: it holds no data)`,
        'materialize it (load or initialize real weights on the CPU) before torch.save',
      );
    case 'torch._utils._rebuild_qtensor':
      return new UnreadTensor(
        'quantized',
        `a quantized tensor (shape ${shapeText(args[2])})`,
        'save t.dequantize() with torch.save',
      );
    default:
      return undefined;
  }
}

/**
 * Read a torch.save checkpoint without running any of its code. Throws PTH_FORMAT for legacy or
 * non-torch files, PTH_ZIP for a damaged container, PTH_PICKLE / PTH_UNSAFE_GLOBAL / PTH_LIMIT
 * for the pickle, PTH_TENSOR for tensors that do not fit their storage, ARGUMENT_INVALID for
 * options out of range (`maxTensorBytes` not an integer >= 0, a limit not an integer >= 1).
 *
 * @example
 * const file = readPth(new Uint8Array(readFileSync('checkpoint.pth')));
 * const sd = extractStateDict(file.root, { key: 'model_ema' });
 */
export function readPth(bytes: Uint8Array, options: ReadPthOptions = {}): PthFile {
  bytesArgument('readPth bytes', bytes);
  const opts = optionsObject('readPth options', options) as ReadPthOptions;
  const maxTensorBytes = integerOption(
    'readPth options.maxTensorBytes',
    opts.maxTensorBytes,
    0,
    4 * bytes.length + 64 * 2 ** 20,
  );
  const limits = checkUnpickleLimits(opts.limits, 'readPth options.limits');
  if (!looksLikeZip(bytes)) {
    const legacy = bytes.length >= 2 && bytes[0] === 0x80 && bytes[1]! <= 5;
    throw new KwError(
      'PTH_FORMAT',
      legacy
        ? 'this is the legacy torch.save format (a bare pickle stream, written before PyTorch 1.6 or with _use_new_zipfile_serialization=False); re-save it with a current torch.save'
        : `not a torch.save zip file (starts with ${[...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ')})`,
    );
  }
  const entries = scanZip(bytes);
  // TorchScript (torch.jit.save) writes data.pkl too, beside constants.pkl and compressed code/
  if (entries.some((e) => /^[^/]+\/(constants\.pkl$|code\/)/.test(e.name)))
    throw new KwError(
      'PTH_FORMAT',
      'this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; load it in Python (torch.jit.load) and save model.state_dict() with torch.save',
    );
  refuseCompressed(entries);
  const pkl = entries.find((e) => e.name.endsWith('/data.pkl') && e.name.split('/').length === 2);
  if (!pkl) {
    throw new KwError(
      'PTH_FORMAT',
      `the zip has no <archive>/data.pkl (entries: ${entries
        .slice(0, 5)
        .map((e) => e.name)
        .join(', ')}${entries.length > 5 ? ', ...' : ''})`,
    );
  }
  const archive = pkl.name.slice(0, -'/data.pkl'.length);
  const byName = new Map<string, ZipEntry>(entries.map((e) => [e.name, e]));
  const order = byName.get(`${archive}/byteorder`);
  const orderText = order ? new TextDecoderLite().decode(order.data) : 'little';
  if (orderText !== 'little' && orderText !== 'big')
    throw new KwError('PTH_FORMAT', `byteorder record says "${orderText.slice(0, 20)}"`);
  const little = orderText === 'little';
  const budget = maxTensorBytes;
  let spent = 0;
  let tensors = 0;
  const placeholders = new Map<string, number>();
  const storages = new Map<string, StorageRef>();

  const persistentLoad = (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length !== 5)
      throw new KwError(
        'PTH_PICKLE',
        `persistent id is not ('storage', type, key, location, numel)`,
      );
    const [, type, key, , numel] = pid as unknown[];
    if (!(type instanceof PickleGlobal) || type.module !== 'torch')
      tensorFail(`storage type ${typeName(type)} is not a torch storage class`);
    const storageClass = (type as PickleGlobal).name;
    const t = TORCH_STORAGE_DTYPES[storageClass];
    // another torch storage class (complex, float8, quantized, ...) is refused only if a tensor
    // of the state_dict taken needs it (UnreadTensor); a name that is no storage class at all is not
    if (!t && !/^\w+Storage$/.test(storageClass))
      tensorFail(`storage type torch.${storageClass} is not a torch storage class`);
    if (typeof key !== 'string' || !/^[\w.-]{1,64}$/.test(key))
      tensorFail(`storage key ${typeName(key)} is not a plain name`);
    if (!isIndex(numel))
      tensorFail(`storage ${key as string}: element count ${indexProblem(numel)}`);
    const cached = storages.get(key as string);
    if (cached) {
      if (cached.dtype !== (t?.dtype ?? storageClass) || cached.numel !== numel)
        tensorFail(`storage ${key as string} is named twice with different dtype or size`);
      return cached;
    }
    let data: Uint8Array = new Uint8Array(0);
    if (t) {
      const entry = byName.get(`${archive}/data/${key as string}`);
      if (!entry)
        tensorFail(`storage ${key as string} has no ${archive}/data/${key as string} entry`);
      const need = (numel as number) * t.bytes;
      // torch reads numel x element size bytes: a storage viewed as a wider dtype (10 uint8
      // bytes as 2 float32) leaves a tail shorter than one element, which is ignored
      const have = entry!.data.length;
      if (have < need || have - need >= t.bytes)
        tensorFail(
          `storage ${key as string}: ${numel} ${t.dtype} elements need ${need} bytes${have > need ? ` (and less than ${t.bytes} more)` : ''}, the entry has ${have}`,
          { storage: key, expected: need, actual: have },
        );
      data = entry!.data.subarray(0, need);
    }
    const ref: StorageRef = {
      kind: 'storage',
      key: key as string,
      unsupported: t ? null : storageClass,
      dtype: t?.dtype ?? storageClass,
      bytes: t?.bytes ?? 0,
      numel: numel as number,
      data,
    };
    storages.set(ref.key, ref);
    return ref;
  };

  const rebuild = (args: readonly unknown[]): TorchTensor | UnreadTensor => {
    const [storage, offset, size, stride] = args;
    if (!(storage && (storage as StorageRef).kind === 'storage'))
      tensorFail(`_rebuild_tensor_v2 gets a ${typeName(storage)}, not a storage`);
    const s = storage as StorageRef;
    if (s.unsupported)
      return new UnreadTensor(
        'storage',
        `a tensor on torch.${s.unsupported} (shape ${shapeText(size)})`,
        `save it in a supported dtype (float32 / float16 / bfloat16 / float64 / int64 / int32 / int16 / int8 / uint8 / bool; complex as torch.view_as_real(t)) with torch.save`,
      );
    if (!isIndex(offset)) tensorFail(`storage ${s.key}: offset ${indexProblem(offset)}`);
    if (!Array.isArray(size) || !Array.isArray(stride) || size.length !== stride.length)
      tensorFail(`storage ${s.key}: sizes and strides are not tuples of one length`);
    const shape = size as unknown[];
    const strides = stride as unknown[];
    if (shape.length > 16) tensorFail(`storage ${s.key}: rank ${shape.length} > 16`);
    let numel = 1;
    let last = offset as number;
    for (let i = 0; i < shape.length; i++) {
      const d = shape[i];
      const st = strides[i];
      if (!isIndex(d)) tensorFail(`storage ${s.key}: size of dim ${i}: ${indexProblem(d)}`);
      if (!isIndex(st)) tensorFail(`storage ${s.key}: stride of dim ${i}: ${indexProblem(st)}`);
      numel *= d as number;
      if (!Number.isSafeInteger(numel))
        tensorFail(
          `storage ${s.key}: the element count of a [${shape.join(', ')}] view is beyond what the reader supports (at most 2^53 - 1)`,
        );
      if ((d as number) > 0) last += ((d as number) - 1) * (st as number);
    }
    if (numel > 0 && last >= s.numel)
      tensorFail(
        `storage ${s.key}: a [${shape.join(', ')}] view with strides [${strides.join(', ')}] at offset ${offset} reaches element ${last}, the storage has ${s.numel}`,
        { storage: s.key },
      );
    const outBytes = numel * (s.dtype === 'F16' || s.dtype === 'BF16' ? 4 : s.bytes);
    spent += outBytes;
    if (spent > budget)
      throw new KwError(
        'PTH_LIMIT',
        `rebuilt tensors would take more than ${budget} bytes (the limit for a file of ${bytes.length} bytes; raise maxTensorBytes for expanded views)`,
        { limit: budget },
      );
    tensors++;
    return new TorchTensor(
      s.dtype,
      shape as number[],
      materialize(s, offset as number, shape as number[], strides as number[], numel, little),
      s.key,
    );
  };

  const reduce = (g: PickleGlobal, args: readonly unknown[]): unknown => {
    // protocol 2 (torch.save's default) names Python 2's module for the builtins
    const q = g.module === '__builtin__' ? `builtins.${g.name}` : g.qualified;
    const unread = unreadTensor(q, args);
    if (unread) return unread;
    switch (q) {
      case 'torch._utils._rebuild_tensor_v2':
      case 'torch._utils._rebuild_tensor':
        return rebuild(args);
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state':
        if (!(args[0] instanceof TorchTensor || args[0] instanceof UnreadTensor))
          tensorFail('a Parameter wraps no tensor');
        return args[0];
      case 'collections.OrderedDict':
      case 'builtins.dict': {
        const m = new Map();
        if (Array.isArray(args[0]))
          for (const kv of args[0]) if (Array.isArray(kv) && kv.length === 2) m.set(kv[0], kv[1]);
        return m;
      }
      case 'builtins.set':
      case 'builtins.frozenset':
        return new Set(Array.isArray(args[0]) ? args[0] : []);
      case 'builtins.bytearray':
        // protocol 3+: bytearray(b'..'); protocol 2: bytearray('..', 'latin-1')
        if (args[0] instanceof Uint8Array) return args[0].slice();
        if (typeof args[0] === 'string' && args[1] === 'latin-1')
          return Uint8Array.from(args[0], (c) => c.charCodeAt(0) & 0xff);
        if (args.length === 0) return new Uint8Array(0);
        placeholders.set(g.qualified, (placeholders.get(g.qualified) ?? 0) + 1);
        return undefined;
      case 'builtins.list':
        return Array.isArray(args[0]) ? [...args[0]] : [];
      case 'builtins.tuple':
      case 'torch.Size':
        return Object.freeze(Array.isArray(args[0]) ? [...args[0]] : []);
      case '_codecs.encode':
        if (typeof args[0] === 'string')
          return Uint8Array.from(args[0], (c) => c.charCodeAt(0) & 0xff);
        return undefined;
      default:
        placeholders.set(g.qualified, (placeholders.get(g.qualified) ?? 0) + 1);
        return undefined;
    }
  };

  const root = unpickle(pkl.data, { persistentLoad, reduce }, limits);
  return { root, archive, tensors, placeholders };
}

class TextDecoderLite {
  decode(b: Uint8Array): string {
    let s = '';
    for (let i = 0; i < Math.min(b.length, 64); i++) s += String.fromCharCode(b[i]!);
    return s.trim();
  }
}

function contiguous(shape: number[], strides: number[]): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i]! !== 1 && strides[i]! !== expect) return false;
    expect *= shape[i]!;
  }
  return true;
}

/** Copy a strided view of a storage into a fresh, contiguous typed array. */
function materialize(
  s: StorageRef,
  offset: number,
  shape: number[],
  strides: number[],
  numel: number,
  little: boolean,
): StoredTensor['data'] {
  const dv = new DataView(s.data.buffer, s.data.byteOffset, s.data.byteLength);
  const floatOut = s.dtype === 'F32' || s.dtype === 'F16' || s.dtype === 'BF16';
  const out: StoredTensor['data'] = floatOut
    ? new Float32Array(numel)
    : s.dtype === 'F64'
      ? new Float64Array(numel)
      : s.dtype === 'I64'
        ? new BigInt64Array(numel)
        : s.dtype === 'I32'
          ? new Int32Array(numel)
          : s.dtype === 'I16'
            ? new Int16Array(numel)
            : s.dtype === 'I8'
              ? new Int8Array(numel)
              : new Uint8Array(numel);
  if (numel === 0) return out;
  const b = s.bytes;
  if (
    little &&
    contiguous(shape, strides) &&
    (s.dtype === 'F32' ||
      s.dtype === 'F64' ||
      b === 1 ||
      s.dtype === 'I64' ||
      s.dtype === 'I32' ||
      s.dtype === 'I16')
  ) {
    const raw = s.data.slice(offset * b, (offset + numel) * b);
    new Uint8Array(out.buffer).set(raw);
    return out;
  }
  const read: (at: number) => number | bigint =
    s.dtype === 'F32'
      ? (at) => dv.getFloat32(at * 4, little)
      : s.dtype === 'F64'
        ? (at) => dv.getFloat64(at * 8, little)
        : s.dtype === 'F16'
          ? (at) => f16ToF32(dv.getUint16(at * 2, little))
          : s.dtype === 'BF16'
            ? (at) => bf16ToF32(dv.getUint16(at * 2, little))
            : s.dtype === 'I64'
              ? (at) => dv.getBigInt64(at * 8, little)
              : s.dtype === 'I32'
                ? (at) => dv.getInt32(at * 4, little)
                : s.dtype === 'I16'
                  ? (at) => dv.getInt16(at * 2, little)
                  : s.dtype === 'I8'
                    ? (at) => dv.getInt8(at)
                    : (at) => dv.getUint8(at);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let at = offset;
  const w = out as unknown as { [i: number]: number | bigint };
  for (let i = 0; i < numel; i++) {
    w[i] = read(at);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      at += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      at -= idx[d]! * strides[d]!;
      idx[d] = 0;
    }
  }
  return out;
}
