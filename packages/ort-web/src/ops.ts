/**
 * The ONNX implementation of core's op seam: each op appends standard ONNX nodes (opset 17) to a
 * {@link GraphBuilder}. Values are lazy: parameters and constants stay data until a node needs
 * them (so reshapes, transposes and products of constants fold at export), and a `linear` stays
 * pending until read, so an inference BatchNorm right after it folds into its weights. The batch
 * dimension stays dynamic (`-1` in reshapes) unless the export fixes it, in which case the
 * per-sample conv runs as one grouped `Conv`.
 */
import {
  type ConvAttrs,
  KW_CELLS_TO_OIHW,
  KwError,
  type MixTapsAttrs,
  type Ops,
  ReferenceOps,
  type SampleBias,
  simplifyTranspose,
  type Tensor,
} from '@kernelwarehouse/core';
import {
  addSampleBias,
  type ConvNode,
  foldBnRows,
  gapNC,
  im2col,
  type SampleBias as OnnxSampleBias,
  perSampleConv,
  sampleConv,
  scanSamples,
} from './methods.js';
import { type GraphBuilder, onnxPads } from './onnx.js';

/** A value of the graph being built. */
export interface OnnxValue {
  /** Its graph name once emitted. */
  name?: string;
  /** Constant data (parameters, constants and what folds from them). */
  data?: Float32Array;
  shape?: number[];
  /** Readable initializer prefix. */
  label?: string;
  /** Shared initializers (warehouses) are stored once per key. */
  sharedKey?: string;
  /** The shared tensor (by name) a constant view of it (reshape, transpose) comes from. */
  base?: string;
  /** A pending `x W^T + b`. */
  gemm?: { x: OnnxValue; w: OnnxValue; b: OnnxValue | undefined };
  /** A pending product of a runtime value and a constant matrix (see {@link PendingProduct}). */
  product?: PendingProduct;
  /** A KW conv's mixed taps, pixel-major (see {@link PendingMix}). */
  mix?: PendingMix;
}

/**
 * Core's `mixTaps` image `[N, G_out·n·c_in, H', W']` held as the graph value `z` laid out
 * `[N, G_out, L, c_in, n]` (L = H'·W' output pixels): the 1x1 product that follows in core
 * (`sharedGroupsConv1x1`, or a 1x1 `conv2d` at G_out = 1) then runs as one GEMM whose rows are
 * every sample's pixels and whose right operand is the warehouse (a constant onnxruntime packs
 * once), and only its output is transposed.
 */
export interface PendingMix {
  z: string;
  gOut: number;
  n: number;
  ci: number;
  ho: number;
  wo: number;
}

/**
 * `a [.., K] @ w [K, Nc]` with `a` a runtime value and `w` constant, kept pending so that a
 * reshape and a transpose after it fold into the product: KW's kernel assembly
 * (`alpha @ warehouse`, split into cells, permuted into the conv's `[O, I/g, kh, kw]` order) then
 * becomes ONE broadcast MatMul whose output is already in the permuted order, with the warehouse
 * viewed in its order (a Transpose of the initializer that onnxruntime folds at load: no runtime
 * Transpose of the kernels; only the small attention tensor is permuted).
 */
export interface PendingProduct {
  a: OnnxValue;
  w: OnnxValue & { data: Float32Array; shape: number[] };
  /** Split of the output by a reshape: `[-1, ...aDims, ...wDims]`, the row dims of `a` (after
   * the batch) then the column dims of `w`; undefined until reshaped. */
  aDims?: number[];
  wDims?: number[];
}

/** A per-sample conv as {@link OnnxOps.perSampleConv} receives it, for the forms it may take. */
interface PerSampleCall {
  x: OnnxValue;
  kernels: OnnxValue;
  conv: ConvNode;
  bias?: SampleBias<OnnxValue>;
  kernelPerm?: number[];
}

/** What the ONNX seam of one layer needs to know. */
export interface OnnxOpsOptions {
  g: GraphBuilder;
  /** Node id (names, error messages). */
  id: string;
  /** Canonical input / output shapes without the batch. */
  inShape: number[];
  outShape: number[];
  /** Fixed batch size, or undefined for a dynamic one. */
  batch: number | undefined;
  /** Batch 1 on one thread: products with the warehouse on the right (see `batchOneProduct`). */
  wideAssembly?: boolean;
  /** KW convs tap by tap (`tapMajorConv`): true wherever it applies, false never, undefined
   * where it pays. */
  tapMajor?: boolean;
  /** KW convs in the mixed form (`mixTaps`): true wherever it applies, false never, undefined
   * where it pays ({@link tapMixingPays}). */
  tapMixing?: boolean;
  /** At a dynamic batch, per-sample convs as a Scan of plain Convs ({@link perSampleConv}). */
  scanBatch?: boolean;
  /** With `scanBatch`, KW kernels assembled a sample at a time in the `Scan` body
   * ({@link OnnxOps.scanAssembledConv}); false: for the whole batch before the `Scan`. */
  scanAssembly?: boolean;
  /** Where constants made by ops (an im2col's one-hot kernel) go: the outer graph of a `Scan`
   * body (the body reads them from there). Default: `g`. */
  consts?: GraphBuilder;
  /** Every tensor of the model by full name. */
  weight: (name: string) => Tensor | undefined;
}

const isConst = (v: OnnxValue): v is OnnxValue & { data: Float32Array; shape: number[] } =>
  v.data !== undefined && v.gemm === undefined;

/** {@link Ops} over {@link OnnxValue}, bound to one layer. Inference only. */
export class OnnxOps implements Ops<OnnxValue> {
  readonly training = false;
  private readonly o: OnnxOpsOptions;
  /** Constant folding runs on the reference ops. */
  private readonly fold = new ReferenceOps({ param: () => undefined, training: false });

  constructor(options: OnnxOpsOptions) {
    this.o = options;
  }

  /** The graph name of `v`, emitting what it needs. */
  v(v: OnnxValue): string {
    if (v.name !== undefined) return v.name;
    const g = this.o.g;
    if (v.product) {
      const { a, w, aDims, wDims } = v.product;
      const y = g.op('MatMul', [this.v(a), this.v(w)]);
      v.name = aDims ? g.op('Reshape', [y, g.int64('shape', [-1, ...aDims, ...wDims!])]) : y;
    } else if (v.mix) {
      // core reads the mixed taps only through the 1x1 product after them (kw.ts)
      throw new KwError(
        'BACKEND_UNSUPPORTED',
        `${this.o.id}: the mixed taps are read by the 1x1 product after them only`,
      );
    } else if (v.gemm) {
      const { x, w, b } = v.gemm;
      const w2 = this.reshape(w, [w.shape![0]!, -1]);
      const inputs = [this.v(x), this.v(w2)];
      if (b) inputs.push(this.v(b));
      v.name = g.op('Gemm', inputs, { transB: 1 });
    } else if (isConst(v)) {
      const make = () => g.float(v.label ?? 'const', v.shape, v.data);
      v.name = v.sharedKey ? g.shared(v.sharedKey, make) : make();
    } else {
      throw new KwError('BACKEND_UNSUPPORTED', `${this.o.id}: an ONNX value has no definition`);
    }
    return v.name;
  }

  private t(v: OnnxValue & { data: Float32Array; shape: number[] }): Tensor {
    return { shape: v.shape, data: v.data };
  }

  private c(t: Tensor, label?: string): OnnxValue {
    return { data: t.data, shape: [...t.shape], label };
  }

  private op(type: string, inputs: OnnxValue[], attrs = {}): OnnxValue {
    return {
      name: this.o.g.op(
        type,
        inputs.map((i) => this.v(i)),
        attrs,
      ),
    };
  }

  private ints(values: number[]): OnnxValue {
    return { name: this.o.g.int64('i', values) };
  }

  private scalar(v: number): OnnxValue {
    return { name: this.o.g.scalar('s', v) };
  }

  param(name: string): OnnxValue {
    const full = `${this.o.id}.${name}`;
    const t = this.o.weight(full);
    if (!t)
      throw new KwError('WEIGHTS_MISSING', `toOnnx: missing tensor "${full}"`, { name: full });
    return { data: t.data, shape: [...t.shape], label: full };
  }

  shared(name: string): OnnxValue {
    const t = this.o.weight(name);
    if (!t) throw new KwError('WEIGHTS_MISSING', `toOnnx: missing tensor "${name}"`, { name });
    return {
      data: t.data,
      shape: [...t.shape],
      label: name,
      sharedKey: `shared:${name}`,
      base: name,
    };
  }

  constant(data: Float32Array, shape: number[]): OnnxValue {
    return { data, shape: [...shape], label: `${this.o.id}.const` };
  }

  reshape(x: OnnxValue, shape: number[]): OnnxValue {
    if (isConst(x)) {
      const r = this.fold.reshape(this.t(x), shape);
      // a shared constant keeps its key: its reshaped view is stored once too
      return {
        data: r.data,
        shape: [...r.shape],
        label: x.label,
        sharedKey: x.sharedKey && `${x.sharedKey}:${r.shape.join('x')}`,
        base: x.base,
      };
    }
    const p = x.name === undefined ? x.product : undefined;
    if (p && !p.aDims && shape[0] === -1 && shape.slice(1).every((d) => d >= 1)) {
      // the shortest suffix holding w's columns; the dims between the batch and it are a's rows
      const nc = p.w.shape[1]!;
      let prod = 1;
      let k = shape.length;
      while (k > 1 && prod < nc) prod *= shape[--k]!;
      if (prod === nc && k >= 1) {
        return { product: { ...p, aDims: shape.slice(1, k), wDims: shape.slice(k) } };
      }
    }
    return this.op('Reshape', [x, this.ints(shape)]);
  }

  transpose(x: OnnxValue, perm: number[]): OnnxValue {
    if (isConst(x)) {
      // (a view of a shared tensor remembers it: the mixed form reads the warehouse as stored)
      return { ...this.c(this.fold.transpose(this.t(x), perm), x.label), base: x.base };
    }
    const p = x.name === undefined ? x.product : undefined;
    if (p?.aDims) {
      const fused =
        this.batchOneProduct(p as Required<PendingProduct>, perm) ??
        this.permutedProduct(p as Required<PendingProduct>, perm);
      if (fused) return fused;
    }
    return this.op('Transpose', [x], { perm });
  }

  /**
   * At a fixed batch of 1 on one thread (`wideAssembly`), `transpose(reshape(a @ w, [-1,
   * ...aDims, ...wDims]), perm)` as the plain product `a [rows, K] @ w [K, Nc]`, the
   * warehouse-sized constant `w` on the right (onnxruntime packs a constant right operand once,
   * at session creation, and the product is wide), then the permutation as two Transposes: a
   * 2-D one for the leading row dims that `perm` puts last (a kernel's taps), then one over what
   * is left, which moves contiguous runs (G_in > 1). `permutedProduct`'s broadcast
   * product has the taps as its 9 columns, which fill a 16-wide SIMD tile half
   * (`bench:ort-assembly`). Undefined otherwise.
   */
  private batchOneProduct(p: Required<PendingProduct>, perm: number[]): OnnxValue | undefined {
    if (!this.o.wideAssembly || this.o.batch !== 1 || perm[0] !== 0) return undefined;
    const dims = [...p.aDims, ...p.wDims];
    const q = perm.slice(1).map((d) => d - 1); // over `dims`
    if (q.length !== dims.length || [...q].sort((x, y) => x - y).some((d, i) => d !== i))
      return undefined;
    const prod = (ds: number[]) => ds.reduce((acc, d) => acc * d, 1);
    // the longest run of leading dims 0..j-1 that ends `q`, in order
    let j = 0;
    for (let t = Math.min(p.aDims.length, q.length - 1); t > 0; t--) {
      if (q.slice(q.length - t).every((d, i) => d === i)) {
        j = t;
        break;
      }
    }
    const lead = prod(dims.slice(0, j));
    const order = [...dims.keys()];
    if (lead > 1) order.push(...order.splice(0, j));
    const rest = simplifyTranspose(
      order.map((d) => dims[d]!),
      q.map((d) => order.indexOf(d)),
    );
    // only where both Transposes are needed (G_in > 1, the input channels split over cells):
    // with the 2-D one alone,
    // onnxruntime's optimizer merges it with the Reshapes after it into a 4-D Transpose that runs
    // ~2x slower, and the broadcast product wins (KW 1x ResNet18 224x224, batch 1, one thread:
    // products 52 -> 35 ms but Transposes 0 -> 23 ms, the run 201 -> 206 ms; KW 1/2x, whose 3x3
    // layers all have G_in = 2: 264 -> 220 ms)
    if (lead === 1 || rest.perm.every((axis, i) => axis === i)) return undefined;
    const kDim = p.w.shape[0]!;
    const a = this.op('Reshape', [p.a, this.ints([prod(p.aDims), kDim])]);
    const y = this.op('MatMul', [a, p.w]); // [rows, Nc]: dims in `dims` order
    const mat = this.op('Reshape', [y, this.ints([lead, prod(dims) / lead])]);
    const t = this.op('Reshape', [
      this.op('Transpose', [mat], { perm: [1, 0] }),
      this.ints(rest.shape),
    ]);
    const z = this.op('Transpose', [t], { perm: rest.perm });
    return this.op('Reshape', [z, this.ints([-1, ...q.map((d) => dims[d]!)])]);
  }

  /**
   * `transpose(reshape(a @ w, [-1, ...aDims, ...wDims]), perm)` as one broadcast MatMul. The
   * output dims, in `perm` order, end with a run of dims from one side (the product's columns)
   * after a run from the other (its rows); every dim before them (the batch first) is a batch dim
   * of the MatMul, broadcast (size 1) on the side it does not come from. The runtime side `a`
   * gets one Transpose (attention-sized), the constant side `w` is permuted at export. Returns
   * undefined when the permutation has no such form.
   */
  private permutedProduct(p: Required<PendingProduct>, perm: number[]): OnnxValue | undefined {
    const { aDims, wDims } = p;
    const ka = aDims.length;
    const kDim = p.w.shape[0]!;
    const rank = 1 + ka + wDims.length;
    if (perm.length !== rank || perm[0] !== 0) return undefined;
    const side = (d: number) => (d === 0 ? 'n' : d <= ka ? 'a' : 'w');
    const sizeOf = (d: number) => (d <= ka ? aDims[d - 1]! : wDims[d - 1 - ka]!);
    // size-1 dims belong to neither side (a 1x1 kernel's kh, kw): leaving them out keeps the
    // product's columns wide instead of a matrix-vector product per sample
    const ones = perm.filter((d) => d > 0 && sizeOf(d) === 1);
    const kept = perm.filter((d) => d === 0 || sizeOf(d) !== 1);
    const r2 = kept.length;
    let j = r2 - 1;
    if (r2 < 3) return undefined;
    const last = side(kept[j]!);
    while (j > 0 && side(kept[j]!) === last) j--;
    const cols = kept.slice(j + 1);
    const rowSide = side(kept[j]!);
    if (rowSide === 'n' || rowSide === last) return undefined;
    while (j > 0 && side(kept[j]!) === rowSide) j--;
    const rows = kept.slice(j + 1, r2 - cols.length);
    const batch = kept.slice(1, j + 1);
    const aLeft = last === 'w'; // a gives the rows (left operand) or the columns (right)
    const prod = (ds: number[]) => ds.reduce((acc, d) => acc * sizeOf(d), 1);
    const aMat = aLeft ? rows : cols;
    const wMat = aLeft ? cols : rows;
    // runtime side: [N, ...aDims, K] -> [N, batch dims of a, rows, K] or [N, batch, K, cols]
    const aBatch = batch.filter((d) => side(d) === 'a');
    const aOnes = ones.filter((d) => side(d) === 'a');
    const aSrc = [0, ...aOnes, ...aBatch, ...(aLeft ? [...aMat, ka + 1] : [ka + 1, ...aMat])];
    let av: OnnxValue = this.op('Reshape', [p.a, this.ints([-1, ...aDims, kDim])]);
    if (aSrc.some((d, i) => d !== i)) av = this.op('Transpose', [av], { perm: aSrc });
    const bShape = batch.map((d) => (side(d) === 'a' ? sizeOf(d) : 1));
    av = this.op('Reshape', [
      av,
      this.ints([-1, ...bShape, ...(aLeft ? [prod(aMat), kDim] : [kDim, prod(aMat)])]),
    ]);
    // constant side: [K, ...wDims] -> [1, batch dims of w (1 elsewhere), rows, K] or [.., K, cols]
    const wBatch = batch.filter((d) => side(d) === 'w');
    const wAxis = (d: number) => d - ka; // axis of dim d in [K, ...wDims]
    const wPerm = [
      ...ones.filter((d) => side(d) === 'w').map(wAxis),
      ...wBatch.map(wAxis),
      ...(aLeft ? [0, ...wMat.map(wAxis)] : [...wMat.map(wAxis), 0]),
    ];
    const wShape = [
      1,
      ...batch.map((d) => (side(d) === 'w' ? sizeOf(d) : 1)),
      ...(aLeft ? [kDim, prod(wMat)] : [prod(wMat), kDim]),
    ];
    // The warehouse is stored once, as it is ([K, Nc]: the wide products of `tapMajorConv` and
    // `batchOneProduct` read it so, as onnxruntime's packed right operand); this layer's order is
    // a Transpose and Reshape of the initializer, which onnxruntime folds at session creation, so
    // no kernel is permuted at run time and the file holds each warehouse once. The view is made
    // once per warehouse and layout: layers with the same cells share it, so onnxruntime folds it
    // into one tensor, not one per layer. (Until 2026-11-27 the file stored the warehouse laid
    // out as [...wDims, K] at a dynamic batch: the same bytes, one layout fewer to fold at load,
    // but a second copy in the file as soon as one layer of it runs tap by tap.)
    const g = this.o.consts ?? this.o.g; // a Scan body reads the view from the outer graph
    const view = () => {
      let wName = g.op('Reshape', [this.v(p.w), g.int64('shape', [kDim, ...wDims])]);
      if (wPerm.some((axis, i) => axis !== i)) wName = g.op('Transpose', [wName], { perm: wPerm });
      return g.op('Reshape', [wName, g.int64('shape', wShape)]);
    };
    const key =
      p.w.sharedKey &&
      `${p.w.sharedKey}:view:${[kDim, ...wDims].join('x')}:${wPerm.join(',')}:${wShape.join('x')}`;
    const wv: OnnxValue = { name: key ? g.shared(key, view) : view() };
    const y = this.op('MatMul', aLeft ? [av, wv] : [wv, av]);
    // the MatMul's element order is the permuted one; give it the permuted shape
    return this.op('Reshape', [y, this.ints([-1, ...perm.slice(1).map(sizeOf)])]);
  }

  slice(x: OnnxValue, axis: number, start: number, end: number): OnnxValue {
    if (isConst(x)) return this.c(this.fold.slice(this.t(x), axis, start, end), x.label);
    return this.op('Slice', [x, this.ints([start]), this.ints([end]), this.ints([axis])]);
  }

  concat(xs: OnnxValue[], axis: number): OnnxValue {
    if (xs.length === 1) return xs[0]!;
    return this.op('Concat', xs, { axis });
  }

  private binary(type: 'Add' | 'Mul' | 'Div', a: OnnxValue, b: OnnxValue): OnnxValue {
    if (isConst(a) && isConst(b)) {
      const f = type === 'Add' ? 'add' : type === 'Mul' ? 'mul' : 'div';
      return this.c(this.fold[f](this.t(a), this.t(b)), a.label);
    }
    return this.op(type, [a, b]);
  }

  add(a: OnnxValue, b: OnnxValue): OnnxValue {
    return this.binary('Add', a, b);
  }

  mul(a: OnnxValue, b: OnnxValue): OnnxValue {
    return this.binary('Mul', a, b);
  }

  div(a: OnnxValue, b: OnnxValue): OnnxValue {
    return this.binary('Div', a, b);
  }

  addScalar(x: OnnxValue, s: number): OnnxValue {
    return this.op('Add', [x, this.scalar(s)]);
  }

  mulScalar(x: OnnxValue, s: number): OnnxValue {
    return this.op('Mul', [x, this.scalar(s)]);
  }

  abs(x: OnnxValue): OnnxValue {
    return this.op('Abs', [x]);
  }

  relu(x: OnnxValue): OnnxValue {
    return this.op('Relu', [x]);
  }

  /** `z / t` unless t = 1 (the reference divides too, so the rounding matches). */
  private tempered(x: OnnxValue, t: number): OnnxValue {
    return t === 1 ? x : this.op('Div', [x, this.scalar(t)]);
  }

  sigmoid(x: OnnxValue, temperature = 1): OnnxValue {
    return this.op('Sigmoid', [this.tempered(x, temperature)]);
  }

  softmax(x: OnnxValue, temperature = 1): OnnxValue {
    return this.op('Softmax', [this.tempered(x, temperature)], { axis: -1 });
  }

  sum(x: OnnxValue, axis: number, keepDims: boolean): OnnxValue {
    return this.op('ReduceSum', [x, this.ints([axis])], { keepdims: keepDims ? 1 : 0 });
  }

  matMul(a: OnnxValue, b: OnnxValue, transB = false): OnnxValue {
    if (transB) {
      if (isConst(b)) {
        const r = b.shape.length;
        const perm = b.shape.map((_, i) => i);
        [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
        b = this.transpose(b, perm);
      } else {
        throw new KwError(
          'BACKEND_UNSUPPORTED',
          `${this.o.id}: ONNX matMul with a transposed non-constant operand needs its rank`,
        );
      }
    }
    if (isConst(b) && !isConst(a) && b.shape.length === 2) return { product: { a, w: b } };
    // two constants (a KW layer's kernel at tau = 1: one-hot cells x warehouse) fold at export
    if (isConst(a) && isConst(b)) return this.c(this.fold.matMul(this.t(a), this.t(b)), a.label);
    return this.op('MatMul', [a, b]);
  }

  linear(x: OnnxValue, weight: OnnxValue, bias?: OnnxValue): OnnxValue {
    return { gemm: { x, w: weight, b: bias } };
  }

  batchNorm(x: OnnxValue, prefix: string, eps: number, _momentum: number): OnnxValue {
    const p = (n: string) => this.param(`${prefix}.${n}`).data!;
    const bn = {
      gamma: p('weight'),
      beta: p('bias'),
      mean: p('running_mean'),
      variance: p('running_var'),
    };
    const gm = x.name === undefined ? x.gemm : undefined;
    if (gm && isConst(gm.w) && (gm.b === undefined || isConst(gm.b))) {
      // inference BatchNorm folded into the linear layer before it
      const rows = gm.w.shape[0]!;
      const f = foldBnRows(gm.w.data, gm.b?.data, rows, bn, eps);
      return {
        gemm: {
          x: gm.x,
          w: { data: f.weight, shape: gm.w.shape, label: gm.w.label },
          b: { data: f.bias, shape: [rows], label: `${this.o.id}.${prefix}.folded_bias` },
        },
      };
    }
    const c = bn.gamma.length;
    const k = (d: Float32Array, n: string) => ({
      data: d,
      shape: [c],
      label: `${this.o.id}.${prefix}.${n}`,
    });
    return this.op(
      'BatchNormalization',
      [x, k(bn.gamma, 'weight'), k(bn.beta, 'bias'), k(bn.mean, 'mean'), k(bn.variance, 'var')],
      { epsilon: { float: eps } },
    );
  }

  layerNorm(x: OnnxValue, prefix: string, eps: number): OnnxValue {
    return this.op(
      'LayerNormalization',
      [x, this.param(`${prefix}.weight`), this.param(`${prefix}.bias`)],
      {
        axis: -1,
        epsilon: { float: eps },
      },
    );
  }

  globalAvgPool(x: OnnxValue): OnnxValue {
    return { name: gapNC(this.o.g, this.v(x), this.o.inShape.length) };
  }

  conv2d(x: OnnxValue, weight: OnnxValue, bias: OnnxValue | undefined, a: ConvAttrs): OnnxValue {
    const w = weight.shape!;
    const pointwise = a.groups === 1 && w[2] === 1 && w[3] === 1 && a.stride.every((s) => s === 1);
    if (x.name === undefined && x.mix && pointwise && a.padding.every((p) => p === 0)) {
      // the mixed form's 1x1 product at G_out = 1 (kw.ts's kwMixedConv)
      return this.sharedGroupsConv1x1(x, this.reshape(weight, [w[0]!, w[1]!]), 1, bias);
    }
    const inputs = [x, weight];
    if (bias) inputs.push(bias);
    return this.op('Conv', inputs, {
      kernel_shape: [w[2]!, w[3]!],
      strides: a.stride,
      pads: onnxPads(a.padding),
      dilations: a.dilation,
      group: a.groups,
    });
  }

  perSampleConv(
    x: OnnxValue,
    kernels: OnnxValue,
    a: ConvAttrs & { outChannels: number; kernelSize: [number, number] },
    bias?: SampleBias<OnnxValue>,
    kernelPerm?: number[],
  ): OnnxValue {
    const conv = { op: 'dynamicConv2d', id: this.o.id, ...a } as unknown as ConvNode;
    const call = { x, kernels, conv, bias, kernelPerm };
    const scanned = this.scanAssembledConv(call);
    if (scanned) return scanned;
    const tap = this.tapMajorConv(call);
    if (tap) return tap;
    if (kernelPerm) kernels = this.transpose(kernels, kernelPerm);
    const name = perSampleConv(
      this.o.g,
      this.v(x),
      this.o.id,
      conv,
      this.v(kernels),
      this.o.inShape,
      this.o.outShape,
      this.o.batch,
      this.sampleBias(bias),
      this.o.scanBatch,
    );
    return { name };
  }

  /**
   * At a dynamic batch in the `Scan` form (`scanBatch`, unless `scanAssembly` is false), a KW
   * conv whose kernel is still its pending assembly product is assembled and convolved a sample
   * at a time in one `Scan`, whose body reads the sample, its attention rows
   * `[kh·kw·G_out·G_in, n]`, and the warehouse from the outer graph (stored once: onnxruntime's
   * packed constant operand there too). The body is what a fixed batch of 1 exports on one
   * thread: the layer tap by tap where {@link tapMajorConv} applies, else the kernel in the
   * conv's layout (the wide product and two Transposes where `batchOneProduct` takes it,
   * G_in > 1; else the broadcast product), then the sample's `Conv`. So one sample's kernel is
   * held at a time (9.4 MB for a 512x512 3x3 layer of KW 1/2x, where a batch of 8 assembled
   * before the `Scan` wrote 75 MB): it is written and read while in cache. KW ResNet18 224x224
   * (`bench:ort` runs 13-13c, batch 1 and 8, one and two threads): median 0.94x (KW 1/2x) and
   * 0.97x (KW 1x, 1/4x) the time of the kernels assembled before the `Scan`; not faster in every
   * run. Undefined where the kernel is not a pending KW assembly.
   */
  private scanAssembledConv(call: PerSampleCall): OnnxValue | undefined {
    const { x, kernels, conv, bias, kernelPerm } = call;
    if (!this.o.scanBatch || this.o.scanAssembly === false || this.o.batch !== undefined)
      return undefined;
    const p = kernels.name === undefined ? kernels.product : undefined;
    if (!p?.aDims || !kernelPerm) return undefined;
    const tap = this.tapMajorPlan(kernels, conv, kernelPerm) !== undefined;
    const g = this.o.g;
    const rows = p.aDims.reduce((acc, d) => acc * d, 1);
    const kDim = p.w.shape[0]!;
    const w = { ...p.w, name: this.v(p.w) }; // the outer graph's initializer
    const cells = g.op('Reshape', [this.v(p.a), g.int64('shape', [-1, rows, kDim])]);
    const [kh, kw] = conv.kernelSize;
    const o = conv.outChannels;
    const cg = this.o.inShape[0]! / conv.groups;
    const y = scanSamples(
      g,
      this.o.id,
      [
        { value: this.v(x), dims: this.o.inShape, prefix: 'sample' },
        { value: cells, dims: [rows, kDim], prefix: 'cells' },
      ],
      this.o.outShape,
      (body, [xi, ai]) => {
        const inner = new OnnxOps({
          ...this.o,
          g: body,
          batch: 1,
          wideAssembly: true,
          scanBatch: false,
          consts: this.o.consts ?? g,
        });
        const k: OnnxValue = { product: { ...p, a: { name: ai }, w } };
        if (tap) {
          const x1 = { name: body.op('Unsqueeze', [xi!, body.int64('axes', [0])]) };
          return inner.v(inner.tapMajorConv({ x: x1, kernels: k, conv, kernelPerm })!);
        }
        const kernel = inner.reshape(inner.transpose(k, kernelPerm), [o, cg, kh, kw]);
        return sampleConv(body, xi!, inner.v(kernel), conv);
      },
    );
    return { name: addSampleBias(g, y, this.o.id, o, this.sampleBias(bias)) };
  }

  /**
   * A KW conv tap by tap instead of on an assembled OIHW kernel: at any batch, fixed or
   * dynamic, where the kernel assembly costs much next to the conv (few output pixels:
   * ResNet18's stage 4 at 224x224; {@link tapMajorPays}), or wherever it applies with
   * `tapMajor: true`. The assembly
   * `a [N·kh·kw·G_out·G_in, n] @ w [n, c_out·c_in]` then keeps the taps as its rows, with the
   * warehouse (as stored) as onnxruntime's packed constant right operand: a wide product, where
   * the OIHW order makes the taps its 9 columns (0.3-0.65x the conv's rate at batch 1,
   * `bench:ort-assembly`). The conv follows the kernel's order instead of the other way round:
   * the input's im2col patches (`[C·kh·kw, L]`, small at these layers) are transposed tap-major,
   * one batched MatMul applies each (tap, G_out, G_in) cell to its patches, and a ReduceSum over
   * taps and G_in adds them up. Only patches and partial sums are moved, never a kernel.
   * Undefined where it does not apply (another cell layout, a grouped or 1x1 conv) or is not
   * chosen.
   */
  private tapMajorConv(call: PerSampleCall): OnnxValue | undefined {
    const { x, kernels, conv, bias, kernelPerm } = call;
    const plan = this.tapMajorPlan(kernels, conv, kernelPerm);
    if (!plan) return undefined;
    const { p, taps, gOut, gIn, co, ci, cin, o, ho, wo, n, pixels } = plan;
    const g = this.o.g;
    const shape = (dims: number[]) => g.int64('shape', [-1, ...dims]);
    // [N·taps·G_out·G_in, n] @ [n, c_out·c_in]: kernels [N, taps, G_out, G_in, c_out, c_in]
    const a = g.op('Reshape', [this.v(p.a), g.int64('shape', [-1, n])]);
    const k = g.op('Reshape', [g.op('MatMul', [a, this.v(p.w)]), shape([taps, gOut, gIn, co, ci])]);
    // patches [N, C·taps, H_out, W_out] (channel c·taps + t) -> [N, taps, 1, G_in, c_in, L]
    const cols = g.op('Reshape', [
      im2col(g, this.v(x), conv, cin, this.o.consts),
      shape([gIn, ci, taps, pixels]),
    ]);
    const patches = g.op('Reshape', [
      g.op('Transpose', [cols], { perm: [0, 3, 1, 2, 4] }),
      shape([taps, 1, gIn, ci, pixels]),
    ]);
    // [N, taps, G_out, G_in, c_out, L], summed over taps and G_in: [N, G_out, c_out, L]
    const y = g.op('ReduceSum', [g.op('MatMul', [k, patches]), g.int64('axes', [1, 3])], {
      keepdims: 0,
    });
    const out = g.op('Reshape', [y, shape([o, ho, wo])]);
    return { name: addSampleBias(g, out, this.o.id, o, this.sampleBias(bias)) };
  }

  /** Where {@link tapMajorConv} applies and is chosen: the layer's cell layout, else undefined. */
  private tapMajorPlan(kernels: OnnxValue, conv: ConvNode, kernelPerm: number[] | undefined) {
    const p = kernels.name === undefined ? kernels.product : undefined;
    if (this.o.tapMajor === false || !p?.aDims || conv.groups !== 1) return undefined;
    if (kernelPerm?.join() !== KW_CELLS_TO_OIHW.join()) return undefined;
    if (p.aDims.length !== 4 || p.wDims!.length !== 2) return undefined;
    const [kh, kw, gOut, gIn] = p.aDims as [number, number, number, number];
    const [co, ci] = p.wDims as [number, number];
    const taps = kh * kw;
    const cin = this.o.inShape[0]!;
    const [o, ho, wo] = this.o.outShape as [number, number, number];
    const n = p.w.shape[0]!;
    const pixels = ho * wo;
    if (taps === 1 || gIn * ci !== cin || gOut * co !== o) return undefined;
    if (this.o.tapMajor !== true && !tapMajorPays(o, cin, gIn, n, taps, pixels)) return undefined;
    return { p, taps, gOut, gIn, co, ci, cin, o, ho, wo, n, pixels };
  }

  /**
   * Core's `mixTaps` (the mixed form of a KW conv, kw.ts's `kwMixedConv`), where chosen: the
   * input's im2col patches, pixel-major `[N, 1, L, c_in, taps·G_in]` (L output pixels), times
   * each sample's attention `[N, G_out, 1, taps·G_in, n]` in one broadcast MatMul, `[N, G_out, L,
   * c_in, n]`, held as a {@link PendingMix} for the 1x1 product core applies next (the warehouse,
   * once for the batch: no per-sample kernel is assembled). Undefined where not chosen.
   */
  mixTaps(x: OnnxValue, alpha: OnnxValue, a: MixTapsAttrs): OnnxValue | undefined {
    if (this.o.tapMixing === false || isConst(alpha) || isConst(x)) return undefined;
    const [kh, kw] = a.kernelSize;
    const taps = kh * kw;
    const cin = this.o.inShape[0]!;
    const [o, ho, wo] = this.o.outShape as [number, number, number];
    const ci = cin / a.gIn;
    const pixels = ho * wo;
    if (!Number.isInteger(ci) || o !== a.gOut * a.cellOut) return undefined;
    const layer = [o, cin, a.gOut, a.gIn, a.n, taps, pixels] as const;
    if (this.o.tapMixing !== true && !tapMixingPays(this.o.batch, ...layer)) return undefined;
    const g = this.o.g;
    const shape = (dims: number[]) => g.int64('shape', [-1, ...dims]);
    // attention [N, taps·G_out·G_in, n] (cell (t·G_out + go)·G_in + gi) -> [N, G_out, 1, taps·G_in, n]
    const a5 = g.op('Reshape', [this.v(alpha), shape([taps, a.gOut, a.gIn, a.n])]);
    const att = g.op('Reshape', [
      g.op('Transpose', [a5], { perm: [0, 2, 1, 3, 4] }),
      shape([a.gOut, 1, taps * a.gIn, a.n]),
    ]);
    // patches [N, C·taps, H', W'] (channel c·taps + t, c = gi·c_in + cc) -> [N, 1, L, c_in, taps·G_in]
    const conv = { op: 'dynamicConv2d', id: this.o.id, ...a } as unknown as ConvNode;
    const cols = g.op('Reshape', [
      im2col(g, this.v(x), conv, cin),
      shape([a.gIn, ci, taps, pixels]),
    ]);
    const patches = g.op('Reshape', [
      g.op('Transpose', [cols], { perm: [0, 4, 2, 3, 1] }),
      shape([1, pixels, ci, taps * a.gIn]),
    ]);
    const z = g.op('MatMul', [patches, att]); // [N, G_out, L, c_in, n]
    return { mix: { z, gOut: a.gOut, n: a.n, ci, ho, wo } };
  }

  /**
   * Core's `sharedGroupsConv1x1` on the mixed taps ({@link PendingMix}: core calls it only after
   * `mixTaps`): one GEMM `[N·G·L, C] @ [C, O]` whose right operand is the weight `[O, C, 1, 1]`
   * (a view of a warehouse: `base`) in the mix's `(c_in, n)` order, a view of the stored
   * warehouse that onnxruntime folds and packs at load (not repeated per group), then the output
   * transposed to NCHW.
   */
  sharedGroupsConv1x1(
    x: OnnxValue,
    weight: OnnxValue,
    groups: number,
    bias?: OnnxValue,
  ): OnnxValue {
    const [o, c] = weight.shape as [number, number];
    const m = x.name === undefined ? x.mix : undefined;
    const base = isConst(weight) ? weight.base : undefined;
    if (!m || m.gOut !== groups || m.n * m.ci !== c || base === undefined) {
      throw new KwError(
        'BACKEND_UNSUPPORTED',
        `${this.o.id}: the ONNX sharedGroupsConv1x1 takes the mixed taps and a view of a warehouse only`,
      );
    }
    const [, ho, wo] = this.o.outShape as [number, number, number];
    const g = this.o.g;
    // weight column (k, c) (cell k's [o, c]) -> row (c, k) of the right operand; from the
    // warehouse as stored ([n, o·c] cells), as a view onnxruntime folds at session creation, so
    // the file holds the warehouse once whichever of its layers mix
    const wh = this.shared(base);
    const view = () => {
      // (stored as the assembled form's product reads it, [n, o·c]: one initializer for both)
      const stored = this.v(this.reshape(wh, [m.n, o * m.ci]));
      const cells = g.op('Reshape', [stored, g.int64('shape', [m.n, o, m.ci])]);
      const t = g.op('Transpose', [cells], { perm: [2, 0, 1] });
      return g.op('Reshape', [t, g.int64('shape', [c, o])]);
    };
    const right = g.shared(`shared:${base}:mixed:${m.n}x${o}x${m.ci}`, view);
    const rows = g.op('Reshape', [m.z, g.int64('shape', [-1, c])]);
    const y = g.op('MatMul', [rows, right]); // [N·G·L, O]
    const t = g.op(
      'Transpose',
      [g.op('Reshape', [y, g.int64('shape', [-1, groups, ho * wo, o])])],
      {
        perm: [0, 1, 3, 2],
      },
    );
    let out = g.op('Reshape', [t, g.int64('shape', [-1, groups * o, ho, wo])]);
    if (bias) out = g.op('Add', [out, this.v(this.reshape(bias, [groups * o, 1, 1]))]);
    return { name: out };
  }

  /** A per-sample conv's bias as `methods.ts` takes it: constant data or a graph value. */
  private sampleBias(bias: SampleBias<OnnxValue> | undefined): OnnxSampleBias {
    if (bias && 'shared' in bias && isConst(bias.shared)) return { shared: bias.shared.data };
    if (bias && 'shared' in bias) return { perSample: this.v(bias.shared) };
    if (bias) return { perSample: this.v(bias.perSample) };
    return undefined;
  }

  scaleChannels(x: OnnxValue, s: OnnxValue): OnnxValue {
    return this.op('Mul', [x, this.reshape(s, [-1, this.o.inShape[0]!, 1, 1])]);
  }
}

/**
 * Whether {@link OnnxOps.tapMajorConv} pays for a layer: the multiply-adds its assembly moves to
 * the wide product (`taps·O·I·n`) against the floats it moves instead (the patches `taps·I·L`
 * and the partial sums `taps·G_in·O·L`, L output pixels); both scale with the batch, so the
 * ratio does not depend on it. `bench:ort-assembly` (whole one-layer models, onnxruntime-web 1.30
 * wasm, 1 and 2 threads, batch 1 and 8) measured tap by tap at 0.75-0.94x the assembled form's
 * time for the ResNet18 224x224 stage-4 layers (ratio 125-188), 0.85-1.16x for the stage-3 ones
 * (16-30: no gain to count on) and mostly slower before (0.5-3.7: 0.94-1.83x); the threshold sits
 * in the gap.
 */
export function tapMajorPays(...layer: Parameters<typeof tapMajorRatio>): boolean {
  return tapMajorRatio(...layer) >= TAP_MAJOR_MIN_RATIO;
}

/**
 * The ratio {@link tapMajorPays} compares with {@link TAP_MAJOR_MIN_RATIO}, for a layer of `o`
 * output and `i` input channels, `gIn` input cell groups, a warehouse of `n` cells, `taps` kernel
 * taps and `pixels` output pixels.
 */
export function tapMajorRatio(
  o: number,
  i: number,
  gIn: number,
  n: number,
  taps: number,
  pixels: number,
): number {
  return (taps * o * i * n) / (taps * pixels * (i + gIn * o));
}

/** See {@link tapMajorPays}. */
export const TAP_MAJOR_MIN_RATIO = 64;

/**
 * Whether the mixed form ({@link OnnxOps.mixTaps}) pays for a layer at a fixed `batch`
 * (undefined: dynamic): {@link tapMixingRatio} at most {@link TAP_MIX_MAX_RATIO}, at any batch
 * but a fixed 1 (whose assembled kernel runs as one plain Conv; there the two forms measured
 * the same). ResNet18 224x224 1/4x's stage-4 layers after the first are the only ResNet18 ones
 * it takes (ratio 0.81): `bench:ort` (run 11) measured that model 1.07x faster at batch 8 on one
 * thread than with every layer assembled, dynamic or fixed batch.
 */
export function tapMixingPays(
  batch: number | undefined,
  ...layer: Parameters<typeof tapMixingRatio>
): boolean {
  return batch !== 1 && tapMixingRatio(...layer) <= TAP_MIX_MAX_RATIO;
}

/**
 * The mixed form's multiply-adds per sample over the assembled form's, for a layer of `o` output
 * and `i` input channels, `gOut` x `gIn` cell groups, a warehouse of `n` cells, `taps` kernel
 * taps and `pixels` output pixels. Mixed: the shared 1x1 product (`n / (taps·G_in)` of the
 * conv's) and the mix (`G_out·n / o` of it, weighed {@link TAP_MIX_WEIGHTS}.mix: a narrow
 * product). Assembled: the conv and the assembly (`taps·o·i·n`, weighed
 * {@link TAP_MIX_WEIGHTS}.assembly: a narrow product that writes every sample's kernel).
 */
export function tapMixingRatio(
  o: number,
  i: number,
  gOut: number,
  gIn: number,
  n: number,
  taps: number,
  pixels: number,
): number {
  const conv = taps * o * i * pixels;
  const mixed = conv * (n / (taps * gIn) + (TAP_MIX_WEIGHTS.mix * gOut * n) / o);
  return mixed / (conv + TAP_MIX_WEIGHTS.assembly * taps * o * i * n);
}

/** The weights of {@link tapMixingRatio}'s narrow products, against the conv's rate. */
export const TAP_MIX_WEIGHTS = { mix: 2, assembly: 2 };

/** See {@link tapMixingPays}. */
export const TAP_MIX_MAX_RATIO = 1;
