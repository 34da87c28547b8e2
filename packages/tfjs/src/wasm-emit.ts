/**
 * A minimal WebAssembly binary writer: enough of the instruction set (i32 arithmetic, loads and
 * stores, control flow, f32 loads, stores and adds, 128-bit SIMD loads, stores, f32x4
 * arithmetic, f64x2 adds and multiplies of promoted f32 lanes, lanes and shuffles) to write small
 * numeric kernels as code here, with no compiler and no binary file in the package. A module built with
 * {@link wasmModule} imports one memory (`env.mem`) and exports its functions, whose
 * parameters are all i32 and which return nothing.
 */

function uleb(n: number): number[] {
  const out: number[] = [];
  let v = n >>> 0;
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  let v = n | 0;
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

/** An ASCII name (import and export names here are ASCII). */
function name(s: string): number[] {
  const bytes = [...s].map((ch) => {
    const c = ch.charCodeAt(0);
    if (c > 0x7e) throw new Error(`wasm names here are ASCII: ${s}`);
    return c;
  });
  return [...uleb(bytes.length), ...bytes];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function vector(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

/** Value types of locals. */
export const I32 = 0x7f;
export const V128 = 0x7b;

/** Byte lanes of `i8x16.shuffle` that pick f32 lanes `lanes` (0-3: first operand, 4-7: second). */
export function f32Lanes(lanes: readonly number[]): number[] {
  return lanes.flatMap((l) => [0, 1, 2, 3].map((b) => 4 * l + b));
}

/**
 * A function body under construction: each method appends one instruction (or a few) and
 * returns `this`, so code reads in stack order, e.g. `c.get(a).get(b).add().set(s)`.
 */
export class WasmCode {
  readonly bytes: number[] = [];
  private op(...b: number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  get(i: number): this {
    return this.op(0x20, ...uleb(i));
  }
  set(i: number): this {
    return this.op(0x21, ...uleb(i));
  }
  tee(i: number): this {
    return this.op(0x22, ...uleb(i));
  }
  i32(v: number): this {
    return this.op(0x41, ...sleb(v));
  }
  add(): this {
    return this.op(0x6a);
  }
  sub(): this {
    return this.op(0x6b);
  }
  mul(): this {
    return this.op(0x6c);
  }
  divU(): this {
    return this.op(0x6e);
  }
  eqz(): this {
    return this.op(0x45);
  }
  ltS(): this {
    return this.op(0x48);
  }
  ltU(): this {
    return this.op(0x49);
  }
  gtS(): this {
    return this.op(0x4a);
  }
  and(): this {
    return this.op(0x71);
  }
  /** `cond ? a : b` with the stack `a b cond`. */
  select(): this {
    return this.op(0x1b);
  }
  block(): this {
    return this.op(0x02, 0x40);
  }
  loop(): this {
    return this.op(0x03, 0x40);
  }
  if(): this {
    return this.op(0x04, 0x40);
  }
  else(): this {
    return this.op(0x05);
  }
  end(): this {
    return this.op(0x0b);
  }
  br(depth: number): this {
    return this.op(0x0c, ...uleb(depth));
  }
  brIf(depth: number): this {
    return this.op(0x0d, ...uleb(depth));
  }
  private simd(code: number, ...rest: number[]): this {
    return this.op(0xfd, ...uleb(code), ...rest);
  }
  /** `v128.load` at address + offset (bytes). */
  vLoad(offset = 0): this {
    return this.simd(0x00, 4, ...uleb(offset));
  }
  /** `v128.store` with the stack `address value`. */
  vStore(offset = 0): this {
    return this.simd(0x0b, 4, ...uleb(offset));
  }
  /** One f32 loaded into all four lanes. */
  vLoadSplat32(offset = 0): this {
    return this.simd(0x09, 2, ...uleb(offset));
  }
  vZero(): this {
    return this.simd(0x0c, ...new Array<number>(16).fill(0));
  }
  /** `v128.const` with `value` (as float32) in all four lanes. */
  vSplatConst(value: number): this {
    const view = new DataView(new ArrayBuffer(4));
    view.setFloat32(0, value, true); // wasm is little-endian
    const lane = [0, 1, 2, 3].map((i) => view.getUint8(i));
    return this.simd(0x0c, ...lane, ...lane, ...lane, ...lane);
  }
  /** `i8x16.shuffle` of the two v128 on the stack by byte lanes (see {@link f32Lanes}). */
  shuffle(byteLanes: readonly number[]): this {
    if (byteLanes.length !== 16) throw new Error('shuffle needs 16 byte lanes');
    return this.simd(0x0d, ...byteLanes);
  }
  /** `i32.load` at address + offset (bytes). */
  i32Load(offset = 0): this {
    return this.op(0x28, 2, ...uleb(offset));
  }
  /** `i32.store` with the stack `address value`. */
  i32Store(offset = 0): this {
    return this.op(0x36, 2, ...uleb(offset));
  }
  /** `f32.load` at address + offset (bytes). */
  f32Load(offset = 0): this {
    return this.op(0x2a, 2, ...uleb(offset));
  }
  /** `f32.store` with the stack `address value`. */
  f32Store(offset = 0): this {
    return this.op(0x38, 2, ...uleb(offset));
  }
  f32Add(): this {
    return this.op(0x92);
  }
  /** Lane `lane` (0-3) of the f32x4 on the stack, as an f32. */
  f32x4ExtractLane(lane: number): this {
    return this.simd(0x1f, lane);
  }
  f32x4Neg(): this {
    return this.simd(0xe1);
  }
  f32x4Add(): this {
    return this.simd(0xe4);
  }
  f32x4Sub(): this {
    return this.simd(0xe5);
  }
  f32x4Mul(): this {
    return this.simd(0xe6);
  }
  f32x4Div(): this {
    return this.simd(0xe7);
  }
  f32x4Sqrt(): this {
    return this.simd(0xe3);
  }
  /** The two low f32 lanes of the f32x4 on the stack, as an f64x2. */
  f64x2PromoteLow(): this {
    return this.simd(0x5f);
  }
  f64x2Add(): this {
    return this.simd(0xf0);
  }
  f64x2Mul(): this {
    return this.simd(0xf2);
  }
  /**
   * Relaxed SIMD `f32x4.relaxed_madd` with the stack `a b c`: a·b + c, fused or not as the
   * hardware does it (an engine without relaxed SIMD refuses the module).
   */
  f32x4RelaxedMadd(): this {
    return this.simd(0x105);
  }
}

/** One exported function: `params` i32 parameters, then `i32Locals` and `v128Locals`. */
export interface WasmFunction {
  name: string;
  params: number;
  i32Locals: number;
  v128Locals: number;
  code: WasmCode;
}

/** Module bytes: one imported memory `env.mem`, the functions, each exported by name. */
export function wasmModule(fns: readonly WasmFunction[]): Uint8Array {
  const types = fns.map((f) => [
    0x60,
    ...uleb(f.params),
    ...new Array<number>(f.params).fill(I32),
    0,
  ]);
  const imports = vector([[...name('env'), ...name('mem'), 0x02, 0x00, ...uleb(1)]]);
  const funcs = vector(fns.map((_, i) => uleb(i)));
  const exports = vector(fns.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]));
  const bodies = vector(
    fns.map((f) => {
      const locals = vector([
        [...uleb(f.i32Locals), I32],
        [...uleb(f.v128Locals), V128],
      ]);
      const body = [...locals, ...f.code.bytes, 0x0b];
      return [...uleb(body.length), ...body];
    }),
  );
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vector(types)),
    ...section(2, imports),
    ...section(3, funcs),
    ...section(7, exports),
    ...section(10, bodies),
  ]);
}

/** Locals of one function: parameters first, then i32 locals, then v128 locals. */
export class Frame {
  private n: number;
  private v128Start = -1;
  constructor(readonly params: number) {
    this.n = params;
  }
  i32(): number {
    if (this.v128Start >= 0) throw new Error('i32 locals must come before v128 locals');
    return this.n++;
  }
  /** i32 locals by name, in order. */
  i32s<K extends string>(names: readonly K[]): Record<K, number> {
    const out = {} as Record<K, number>;
    for (const n of names) out[n] = this.i32();
    return out;
  }
  v128(): number {
    if (this.v128Start < 0) this.v128Start = this.n;
    return this.n++;
  }
  fn(name: string, code: WasmCode): WasmFunction {
    const v = this.v128Start < 0 ? this.n : this.v128Start;
    return { name, params: this.params, i32Locals: v - this.params, v128Locals: this.n - v, code };
  }
}

/** Consecutive indices from `start`, by name (parameters of a function, in order). */
export function indices<K extends string>(names: readonly K[], start: number): Record<K, number> {
  const out = {} as Record<K, number>;
  names.forEach((n, i) => {
    out[n] = start + i;
  });
  return out;
}
