/**
 * A minimal protobuf wire-format writer and reader: enough for ONNX ModelProto. Zero
 * dependencies. Varints are written from JS numbers (int64 fields stay below 2^53 here).
 */
import { KwError } from '@kernelwarehouse/core';

/** Accumulates one message. Nested messages are written with {@link Writer.message}. */
export class Writer {
  private chunks: Uint8Array[] = [];
  private size = 0;

  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.size += b.length;
  }

  private varint(v: number): void {
    if (!Number.isSafeInteger(v))
      throw new KwError('ARGUMENT_INVALID', `protobuf varint out of range: ${v}`);
    const out: number[] = [];
    if (v < 0) {
      // two's complement 64-bit (negative int64): 10 bytes
      let lo = v >>> 0;
      let hi = Math.floor(v / 4294967296) >>> 0;
      for (let i = 0; i < 9; i++) {
        out.push((lo & 0x7f) | 0x80);
        lo = ((lo >>> 7) | (hi << 25)) >>> 0;
        hi >>>= 7;
      }
      out.push(1);
    } else {
      while (v > 0x7f) {
        out.push((v % 128) | 0x80);
        v = Math.floor(v / 128);
      }
      out.push(v);
    }
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** int32 / int64 / enum / bool field. */
  int(field: number, v: number): this {
    this.tag(field, 0);
    this.varint(v);
    return this;
  }

  /** 32-bit float field. */
  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }

  /** Length-delimited bytes. */
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.varint(b.length);
    this.push(b);
    return this;
  }

  /** UTF-8 string field. */
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  /** Nested message field. */
  message(field: number, m: Writer): this {
    return this.bytes(field, m.finish());
  }

  /** Packed repeated varints. */
  packedInts(field: number, vs: readonly number[]): this {
    const w = new Writer();
    for (const v of vs) w.varint(v);
    return this.bytes(field, w.finish());
  }

  /** Packed repeated floats. */
  packedFloats(field: number, vs: readonly number[]): this {
    const b = new Uint8Array(vs.length * 4);
    const dv = new DataView(b.buffer);
    vs.forEach((v, i) => {
      dv.setFloat32(i * 4, v, true);
    });
    return this.bytes(field, b);
  }

  /** The encoded message. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** One decoded field: varint value, fixed bytes, or a length-delimited slice. */
export interface Field {
  field: number;
  wire: number;
  /**
   * varint (read as a signed int64: ONNX int32 / int64 / enum), fixed32 or fixed64 value, as a JS
   * number (int64 beyond 2^53 loses precision).
   */
  value: number;
  /** length-delimited payload. */
  bytes: Uint8Array | undefined;
}

/**
 * Decode the fields of one message. Throws KwError('ONNX_INVALID') on truncation or an
 * unknown wire type, naming the offset.
 */
export function readFields(buf: Uint8Array, what = 'message'): Field[] {
  const fields: Field[] = [];
  let p = 0;
  const bad = (msg: string): never => {
    throw new KwError('ONNX_INVALID', `${what}: ${msg} at byte ${p} of ${buf.length}`);
  };
  // A varint is at most 10 bytes and 64 bits: the 10th byte may only carry bit 63. Its value is
  // read as a signed int64 (two's complement), which is what ONNX's int32 / int64 / enum fields
  // mean: a dim of -1 arrives as 2^64 - 1 and is read back as -1, not 18446744073709552000.
  const varint = (): number => {
    let lo = 0; // bits 0..27
    let hi = 0n; // bits 28..63
    for (let i = 0; i < 10; i++) {
      if (p >= buf.length) bad('truncated varint');
      const b = buf[p++]!;
      if (i < 4) lo += (b & 0x7f) * 2 ** (7 * i);
      else hi |= BigInt(b & 0x7f) << BigInt(7 * i - 28);
      if (b < 0x80) {
        if (i === 9 && b > 1) bad('varint above 2^64');
        return hi === 0n ? lo : Number(BigInt.asIntN(64, (hi << 28n) | BigInt(lo)));
      }
    }
    return bad('varint longer than 10 bytes');
  };
  while (p < buf.length) {
    const key = varint();
    if (key < 0 || key >= 2 ** 32) bad('field key above 32 bits');
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) bad('field number 0');
    if (wire === 0) fields.push({ field, wire, value: varint(), bytes: undefined });
    else if (wire === 1) {
      if (p + 8 > buf.length) bad('truncated fixed64');
      fields.push({
        field,
        wire,
        value: new DataView(buf.buffer, buf.byteOffset + p, 8).getFloat64(0, true),
        bytes: undefined,
      });
      p += 8;
    } else if (wire === 5) {
      if (p + 4 > buf.length) bad('truncated fixed32');
      fields.push({
        field,
        wire,
        value: new DataView(buf.buffer, buf.byteOffset + p, 4).getFloat32(0, true),
        bytes: undefined,
      });
      p += 4;
    } else if (wire === 2) {
      const len = varint();
      if (len < 0 || len > buf.length - p) bad(`length ${len} runs past the end`);
      fields.push({ field, wire, value: len, bytes: buf.subarray(p, p + len) });
      p += len;
    } else bad(`unknown wire type ${wire}`);
  }
  return fields;
}
