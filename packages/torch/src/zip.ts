/**
 * The zip container torch.save writes (PyTorchStreamWriter: every entry stored uncompressed,
 * data aligned to 64 bytes, zip64 records when needed). This reader takes only what that writer
 * emits: stored entries, no encryption. Every offset and size is checked against the file before
 * it is used, entries may not overlap (the overlapping-entry "zip bomb" is refused), and entries
 * are returned as views into the input, never copied.
 */
import { KwError } from '@kernelwarehouse/core';
import { bytesArgument } from './options.js';

/** One stored entry: its name and a view of its bytes. */
export interface ZipEntry {
  name: string;
  data: Uint8Array;
}

/** Most entries a checkpoint may hold (one per storage plus a handful). */
export const MAX_ZIP_ENTRIES = 1_000_000;

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

const fail = (msg: string, details: Record<string, unknown> = {}): never => {
  throw new KwError('PTH_ZIP', msg, details);
};

function u64(dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${v} is beyond any file size`);
  return Number(v);
}

/** True when the bytes start like a zip file (a local header or an empty archive). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b;
}

/**
 * Read the central directory of a stored (uncompressed) zip. Throws PTH_ZIP naming the record
 * and the offending value for anything out of bounds, inconsistent, compressed or encrypted.
 *
 * @example
 * const names = readZip(bytes).map((e) => e.name);
 */
export function readZip(bytes: Uint8Array): ZipEntry[] {
  bytesArgument('readZip bytes', bytes);
  const entries = scanZip(bytes);
  refuseCompressed(entries);
  return entries.map(({ name, data }) => ({ name, data }));
}

/** A zip entry as found, compressed or not (`data` is then the compressed bytes). */
export interface ScannedZipEntry extends ZipEntry {
  /** Compression method: 0 for stored. */
  method: number;
}

/** PTH_ZIP for the first compressed entry (torch.save never compresses). */
export function refuseCompressed(entries: readonly ScannedZipEntry[]): void {
  const c = entries.find((e) => e.method !== 0);
  if (c)
    fail(
      `entry "${c.name}" is compressed (method ${c.method}); torch.save stores entries uncompressed`,
      { entry: c.name, method: c.method },
    );
}

/**
 * The checks of {@link readZip} except that compressed entries are listed (with their method)
 * rather than refused, so a caller can first tell what kind of archive it is (TorchScript
 * compresses its code entries).
 */
export function scanZip(bytes: Uint8Array): ScannedZipEntry[] {
  const n = bytes.length;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (n < 22) fail(`file of ${n} bytes is shorter than a zip end record (22 bytes)`);
  // the end record sits in the last 22 + 65535 (comment) bytes
  let eocd = -1;
  for (let i = n - 22; i >= Math.max(0, n - 22 - 0xffff); i--) {
    if (dv.getUint32(i, true) === EOCD && i + 22 + dv.getUint16(i + 20, true) === n) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) fail('no zip end-of-central-directory record at the end of the file');
  let count = dv.getUint16(eocd + 10, true);
  let cdSize = dv.getUint32(eocd + 12, true);
  let cdOffset = dv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || dv.getUint32(loc, true) !== EOCD64_LOCATOR)
      fail('zip64 sizes are flagged but there is no zip64 locator');
    const rec = u64(dv, loc + 8, 'zip64 end record offset');
    if (rec + 56 > loc || dv.getUint32(rec, true) !== EOCD64)
      fail(`zip64 end record offset ${rec} does not point at a zip64 end record`);
    count = u64(dv, rec + 32, 'zip64 entry count');
    cdSize = u64(dv, rec + 40, 'zip64 central directory size');
    cdOffset = u64(dv, rec + 48, 'zip64 central directory offset');
  }
  if (count > MAX_ZIP_ENTRIES) fail(`${count} entries exceed the limit of ${MAX_ZIP_ENTRIES}`);
  if (cdOffset + cdSize > eocd || count * 46 > cdSize)
    fail(
      `central directory [${cdOffset}, ${cdOffset + cdSize}) of ${count} entries does not fit before the end record at ${eocd}`,
    );
  const entries: { name: string; method: number; start: number; begin: number; end: number }[] = [];
  const names = new Set<string>();
  let p = cdOffset;
  const cdEnd = cdOffset + cdSize;
  const decoder = new (
    globalThis as unknown as { TextDecoder: new (l: string) => { decode(b: Uint8Array): string } }
  ).TextDecoder('utf-8');
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdEnd || dv.getUint32(p, true) !== CENTRAL)
      fail(`central directory entry ${k} at ${p} is not a central header`);
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    let csize = dv.getUint32(p + 20, true);
    let usize = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let local = dv.getUint32(p + 42, true);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdEnd) fail(`central directory entry ${k} runs past the directory`);
    const name = decoder.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    if (flags & 1) fail(`entry "${name}" is encrypted`);
    // zip64 extended information: the 0xffffffff fields, in order usize, csize, offset
    if (usize === 0xffffffff || csize === 0xffffffff || local === 0xffffffff) {
      let q = p + 46 + nameLen;
      const xEnd = q + extraLen;
      let found = false;
      while (q + 4 <= xEnd) {
        const id = dv.getUint16(q, true);
        const len = dv.getUint16(q + 2, true);
        if (q + 4 + len > xEnd) fail(`entry "${name}": extra field runs past its record`);
        if (id === 1) {
          let r = q + 4;
          const take = (what: string) => {
            if (r + 8 > q + 4 + len) fail(`entry "${name}": zip64 field lacks ${what}`);
            const v = u64(dv, r, `entry "${name}" zip64 ${what}`);
            r += 8;
            return v;
          };
          if (usize === 0xffffffff) usize = take('size');
          if (csize === 0xffffffff) csize = take('compressed size');
          if (local === 0xffffffff) local = take('offset');
          found = true;
          break;
        }
        q += 4 + len;
      }
      if (!found) fail(`entry "${name}" flags zip64 sizes but has no zip64 extra field`);
    }
    if (method === 0 && csize !== usize)
      fail(`stored entry "${name}" claims ${usize} bytes but stores ${csize}`, {
        entry: name,
        expected: usize,
        actual: csize,
      });
    if (local + 30 > cdOffset || dv.getUint32(local, true) !== LOCAL)
      fail(`entry "${name}": local header offset ${local} does not point at a local header`);
    const begin = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    const end = begin + csize;
    if (end > cdOffset)
      fail(
        `entry "${name}": data [${begin}, ${end}) runs into the central directory at ${cdOffset}`,
        {
          entry: name,
        },
      );
    if (names.has(name)) fail(`entry "${name}" appears twice`);
    names.add(name);
    entries.push({ name, method, start: local, begin, end });
    p = next;
  }
  const sorted = [...entries].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.start < sorted[i - 1]!.end)
      fail(`entries "${sorted[i - 1]!.name}" and "${sorted[i]!.name}" overlap`);
  }
  return entries.map((e) => ({
    name: e.name,
    method: e.method,
    data: bytes.subarray(e.begin, e.end),
  }));
}
