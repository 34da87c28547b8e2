/**
 * safetensors: 8-byte little-endian header length N, N bytes of JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`, then
 * the data buffer (offsets relative to its start). Every bound is checked before any
 * allocation, no code runs on load, and names live in a Map (no prototype pollution).
 */
import { describeValue, KwError } from '../errors.js';
import type { Tensor, WeightMap } from '../tensor.js';

// The web-platform text codecs (Node, browsers, Deno, Bun all have them); reached through
// globalThis so core compiles without DOM or Node type libraries.
const codecs = globalThis as unknown as {
  TextEncoder: new () => { encode(s: string): Uint8Array };
  TextDecoder: new (label: string, o: { fatal: boolean }) => { decode(b: Uint8Array): string };
};

/**
 * dtypes this reader knows, with their byte sizes. A null-prototype object: a dtype named
 * `toString` or `__proto__` is unknown, not an inherited function.
 */
export const SAFETENSORS_DTYPES: Readonly<Record<string, number>> = Object.freeze(
  Object.assign(Object.create(null) as Record<string, number>, {
    F64: 8,
    F32: 4,
    F16: 2,
    BF16: 2,
    I64: 8,
    I32: 4,
    I16: 2,
    I8: 1,
    U8: 1,
    BOOL: 1,
  }),
);

/** Byte size of a known dtype, undefined for any other string (own keys only). */
function dtypeSize(dtype: unknown): number | undefined {
  return typeof dtype === 'string' && Object.hasOwn(SAFETENSORS_DTYPES, dtype)
    ? SAFETENSORS_DTYPES[dtype]
    : undefined;
}

/**
 * Deepest JSON nesting a header may have. A valid header is 3 deep (object, tensor entry, shape
 * list); the limit refuses hostile nesting (10^5 levels) before anything recursive sees it.
 */
export const MAX_HEADER_DEPTH = 64;

/**
 * One pass over header text that JSON.parse accepted: refuses nesting deeper than
 * {@link MAX_HEADER_DEPTH} and a key given twice in one object (JSON.parse keeps the last one
 * silently; the Rust reference refuses). Iterative: no recursion on hostile depth.
 */
function scanHeader(text: string): void {
  // per open container: null for an array, the keys seen so far for an object
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: find its end, honouring escapes
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22)
        j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const keys = stack[stack.length - 1]!;
        if (keys.has(key))
          throw new KwError(
            'SAFETENSORS_HEADER',
            `header gives the key ${describeValue(key)} twice in one object (a reader would silently keep one)`,
            { key },
          );
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      stack.push(c === 0x7b ? new Set() : null);
      if (stack.length > MAX_HEADER_DEPTH)
        throw new KwError(
          'SAFETENSORS_HEADER',
          `header JSON is nested deeper than ${MAX_HEADER_DEPTH} levels (a valid header has 3)`,
          { expected: `<= ${MAX_HEADER_DEPTH}` },
        );
      expectKey = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== null;
    }
  }
}

/** Largest header we accept (the reference implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A tensor as stored: float dtypes decoded to Float32Array, integer dtypes kept as typed arrays. */
export interface StoredTensor {
  dtype: string;
  shape: number[];
  data:
    | Float32Array
    | Float64Array
    | BigInt64Array
    | Int32Array
    | Int16Array
    | Int8Array
    | Uint8Array;
}

/** Decoded file: tensors in header order and the `__metadata__` strings. */
export interface SafetensorsFile {
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

/** IEEE half -> float. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** bfloat16 -> float: the high 16 bits of a float32. */
export function bf16ToF32(h: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, h << 16, true);
  return dv.getFloat32(0, true);
}

/**
 * Parse safetensors bytes. Throws SAFETENSORS_TRUNCATED, SAFETENSORS_HEADER, SAFETENSORS_OFFSETS
 * or SAFETENSORS_DTYPE naming the tensor and the expected and found values.
 */
export function readSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (!(bytes instanceof Uint8Array))
    throw new KwError('ARGUMENT_INVALID', 'readSafetensors takes a Uint8Array');
  if (bytes.length < 8)
    throw new KwError(
      'SAFETENSORS_TRUNCATED',
      `file has ${bytes.length} bytes, fewer than the 8-byte header length`,
    );
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) {
    throw new KwError(
      'SAFETENSORS_TRUNCATED',
      `header claims ${n64} bytes but only ${bytes.length - 8} follow the length field`,
      {
        expected: String(n64),
        actual: bytes.length - 8,
      },
    );
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES)
    throw new KwError(
      'SAFETENSORS_HEADER',
      `header of ${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`,
    );
  let header: unknown;
  let text: string;
  try {
    text = new codecs.TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
    header = JSON.parse(text);
  } catch (e) {
    throw new KwError(
      'SAFETENSORS_HEADER',
      `header is not valid UTF-8 JSON: ${(e as Error).message}`,
    );
  }
  scanHeader(text);
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new KwError('SAFETENSORS_HEADER', 'header must be a JSON object of tensor entries');
  }
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  // null prototype: a key "__proto__" is a key like any other
  const metadata: Record<string, string> = Object.create(null);
  const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] =
    [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
        throw new KwError('SAFETENSORS_HEADER', '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string')
          throw new KwError(
            'SAFETENSORS_HEADER',
            `__metadata__.${k} must be a string, found ${typeof v}`,
          );
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor ${describeValue(name)}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new KwError('SAFETENSORS_HEADER', `${where}: entry must be an object`);
    const e = raw as Record<string, unknown>;
    const size = dtypeSize(e.dtype);
    if (size === undefined) {
      throw new KwError(
        'SAFETENSORS_DTYPE',
        `${where}: unknown dtype ${describeValue(e.dtype)}; known: ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`,
      );
    }
    if (
      !Array.isArray(e.shape) ||
      e.shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
    ) {
      throw new KwError(
        'SAFETENSORS_HEADER',
        `${where}: shape must be a list of non-negative integers, found ${describeValue(e.shape)}`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      off.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
    ) {
      throw new KwError(
        'SAFETENSORS_OFFSETS',
        `${where}: data_offsets must be [begin, end] non-negative integers, found ${describeValue(off)}`,
      );
    }
    const [begin, end] = off as [number, number];
    if (begin > end || end > dataLen) {
      throw new KwError(
        'SAFETENSORS_OFFSETS',
        `${where}: data_offsets [${begin}, ${end}] outside the ${dataLen}-byte data buffer`,
      );
    }
    const numel = (e.shape as number[]).reduce((a, b) => a * b, 1);
    const want = numel * size;
    if (end - begin !== want) {
      throw new KwError(
        'SAFETENSORS_OFFSETS',
        `${where}: ${e.dtype} shape [${(e.shape as number[]).join(', ')}] needs ${want} bytes, data_offsets span ${end - begin}`,
      );
    }
    entries.push({ name, dtype: e.dtype as string, shape: e.shape as number[], begin, end });
  }
  // ranges must tile the data buffer: no overlap, no gap, nothing trailing
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of sorted) {
    if (e.begin < pos)
      throw new KwError(
        'SAFETENSORS_OFFSETS',
        `tensor "${e.name}": data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (ends at ${pos})`,
      );
    if (e.begin > pos)
      throw new KwError(
        'SAFETENSORS_OFFSETS',
        `tensor "${e.name}": gap of ${e.begin - pos} bytes before it in the data buffer`,
      );
    pos = e.end;
  }
  if (pos !== dataLen)
    throw new KwError(
      'SAFETENSORS_OFFSETS',
      `data buffer has ${dataLen - pos} bytes not covered by any tensor`,
    );
  const tensors = new Map<string, StoredTensor>();
  for (const e of entries)
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: e.shape,
      data: decode(bytes, dataStart + e.begin, e.end - e.begin, e.dtype),
    });
  return { tensors, metadata };
}

function decode(bytes: Uint8Array, at: number, len: number, dtype: string): StoredTensor['data'] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + at, len);
  const count = len / dtypeSize(dtype)!;
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    }
    case 'F16': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = bf16ToF32(dv.getUint16(i * 2, true));
      return out;
    }
    case 'F64': {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    }
    case 'I64': {
      const out = new BigInt64Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getBigInt64(i * 8, true);
      return out;
    }
    case 'I32': {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(i * 4, true);
      return out;
    }
    case 'I16': {
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(i * 2, true);
      return out;
    }
    case 'I8':
      return new Int8Array(bytes.slice(at, at + len).buffer);
    default:
      return bytes.slice(at, at + len); // U8, BOOL
  }
}

/**
 * Encode tensors (float32, or stored tensors of any known dtype) as safetensors. Output is
 * deterministic: names sorted, header padded with spaces to a multiple of 8, so
 * save -> load -> save is byte-identical.
 *
 * Writes only what {@link readSafetensors} reads back unchanged: shapes of non-negative safe
 * integers (WEIGHTS_SHAPE otherwise), string metadata values (ARGUMENT_INVALID), and values the
 * dtype holds exactly in range (WEIGHTS_DTYPE naming the tensor, the element and the value):
 * integers in range for I64 / I32 / U8, 0 or 1 for BOOL, numbers for F32 / F64, and no finite
 * value that would overflow to infinity as F32 (1e300). NaN and infinities are representable in
 * F32 / F64 and written as they are, as the reader reads them (checkWeights refuses them on load).
 */
export function writeSafetensors(
  tensors: Map<string, Tensor | StoredTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  if (!(tensors instanceof Map))
    throw new KwError(
      'ARGUMENT_INVALID',
      `writeSafetensors: tensors must be a Map<string, tensor>, found ${describeValue(tensors)}`,
    );
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))
    throw new KwError(
      'ARGUMENT_INVALID',
      `writeSafetensors: metadata must be an object of strings, found ${describeValue(metadata)}`,
    );
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string')
      throw new KwError(
        'ARGUMENT_INVALID',
        `writeSafetensors: metadata ${describeValue(k)} must be a string (safetensors __metadata__ holds strings only), found ${describeValue(v)}`,
        { field: `metadata.${k}`, actual: v },
      );
  }
  const names = [...tensors.keys()].sort();
  // null prototype: a tensor named "__proto__" is written like any other
  const header: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length)
    header.__metadata__ = Object.fromEntries(
      Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : 1)),
    );
  const blobs: Uint8Array[] = [];
  let off = 0;
  for (const name of names) {
    if (name === '__metadata__')
      throw new KwError('ARGUMENT_INVALID', 'a tensor cannot be named "__metadata__"');
    const t = tensors.get(name)!;
    if (typeof t !== 'object' || t === null)
      throw new KwError(
        'ARGUMENT_INVALID',
        `tensor ${describeValue(name)}: expected { shape, data }, found ${describeValue(t)}`,
      );
    const dtype = 'dtype' in t ? t.dtype : 'F32';
    const blob = encode(name, t, dtype);
    header[name] = { dtype, shape: [...t.shape], data_offsets: [off, off + blob.length] };
    blobs.push(blob);
    off += blob.length;
  }
  let json = JSON.stringify(header);
  const raw = new codecs.TextEncoder().encode(json);
  json += ' '.repeat((8 - ((raw.length + 8) % 8)) % 8);
  const head = new codecs.TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let p = 8 + head.length;
  for (const b of blobs) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}

/** True on little-endian platforms (all current ones): Float32Array bytes are safetensors bytes. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Integer ranges of the integer dtypes the writer supports. */
const INT_RANGES: Readonly<Record<string, readonly [bigint, bigint]>> = {
  I64: [-(2n ** 63n), 2n ** 63n - 1n],
  I32: [-(2n ** 31n), 2n ** 31n - 1n],
  U8: [0n, 255n],
  BOOL: [0n, 1n],
};

function encode(name: string, t: Tensor | StoredTensor, dtype: string): Uint8Array {
  const where = `tensor ${describeValue(name)}`;
  const shape: unknown = t.shape;
  if (!Array.isArray(shape))
    throw new KwError(
      'WEIGHTS_SHAPE',
      `${where}: shape must be a list, found ${describeValue(shape)}`,
      {
        name,
        actual: shape,
      },
    );
  for (let i = 0; i < shape.length; i++) {
    const dim: unknown = shape[i];
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0)
      throw new KwError(
        'WEIGHTS_SHAPE',
        `${where}: shape[${i}] must be a non-negative integer, found ${describeValue(dim)} (shape ${describeValue(shape)})`,
        { name, index: i, actual: dim },
      );
  }
  const d: unknown = t.data;
  if (!Array.isArray(d) && !(ArrayBuffer.isView(d) && !(d instanceof DataView)))
    throw new KwError(
      'WEIGHTS_DTYPE',
      `${where}: data must be a typed array or an array, found ${describeValue(d)}`,
      { name },
    );
  const data = d as ArrayLike<number | bigint>;
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  if (data.length !== numel)
    throw new KwError(
      'WEIGHTS_SHAPE',
      `${where}: shape [${shape.join(', ')}] needs ${numel} values, data has ${data.length}`,
    );
  const size = dtypeSize(dtype);
  if (!size)
    throw new KwError('SAFETENSORS_DTYPE', `${where}: cannot write dtype ${describeValue(dtype)}`);
  const bad = (i: number, v: unknown, why: string): never => {
    throw new KwError(
      'WEIGHTS_DTYPE',
      `${where}: element ${i} is ${typeof v === 'bigint' ? `${v}n` : describeValue(v)}, ${why}`,
      { name, dtype, index: i, actual: typeof v === 'bigint' ? String(v) : v },
    );
  };
  const out = new Uint8Array(numel * size);
  const dv = new DataView(out.buffer);
  if (dtype === 'F32' || dtype === 'F64') {
    if (dtype === 'F32' && data instanceof Float32Array) {
      // already float32: every value (NaN and infinities too) is exactly representable
      if (LITTLE_ENDIAN) out.set(new Uint8Array(data.buffer, data.byteOffset, numel * 4));
      else for (let i = 0; i < numel; i++) dv.setFloat32(i * 4, data[i]!, true);
      return out;
    }
    const typed = data instanceof Float32Array || data instanceof Float64Array;
    for (let i = 0; i < numel; i++) {
      const v = data[i];
      if (!typed && typeof v !== 'number') bad(i, v, `not a number (${dtype})`);
      const x = v as number;
      if (dtype === 'F64') dv.setFloat64(i * 8, x, true);
      else {
        const f = Math.fround(x);
        // a finite value beyond float32's range would be written as infinity
        if (f - f !== 0 && x - x === 0)
          bad(
            i,
            x,
            'beyond the F32 range (|x| <= 3.4028234663852886e38): it would be written as infinity',
          );
        dv.setFloat32(i * 4, f, true);
      }
    }
    return out;
  }
  const range = INT_RANGES[dtype];
  if (!range)
    throw new KwError(
      'SAFETENSORS_DTYPE',
      `${where}: writing ${dtype} is not supported (write F32, F64, I64, I32, U8 or BOOL)`,
    );
  const [lo, hi] = range;
  for (let i = 0; i < numel; i++) {
    const v = data[i];
    let n: bigint;
    if (typeof v === 'bigint') n = v;
    else if (typeof v === 'number' && Number.isInteger(v)) n = BigInt(v);
    else if (dtype === 'BOOL' && typeof v === 'boolean') n = v ? 1n : 0n;
    else return bad(i, v, `not an integer (${dtype} holds integers in [${lo}, ${hi}])`);
    if (n < lo || n > hi) bad(i, v, `outside ${dtype}'s range [${lo}, ${hi}]`);
    if (dtype === 'I64') dv.setBigInt64(i * 8, n, true);
    else if (dtype === 'I32') dv.setInt32(i * 4, Number(n), true);
    else dv.setUint8(i, Number(n));
  }
  return out;
}

/**
 * Decode a safetensors file into float32 weights (F32/F16/BF16/F64 converted; integer tensors
 * such as BatchNorm's `num_batches_tracked` dropped), keyed by name.
 */
export function safetensorsToWeights(file: SafetensorsFile): WeightMap {
  const out: WeightMap = new Map();
  for (const [name, t] of file.tensors) {
    if (t.data instanceof Float32Array) out.set(name, { shape: t.shape, data: t.data });
    else if (t.data instanceof Float64Array)
      out.set(name, { shape: t.shape, data: Float32Array.from(t.data) });
  }
  return out;
}
