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
  KwError,
  type NodeSpec,
  type Ops,
  ReferenceOps,
  type SampleBias,
  type Tensor,
} from '@kernelwarehouse/core';
import { foldBnRows, gapNC, perSampleConv } from './methods.js';
import type { GraphBuilder } from './onnx.js';

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
  /** A pending `x W^T + b`. */
  gemm?: { x: OnnxValue; w: OnnxValue; b: OnnxValue | undefined };
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
    if (v.gemm) {
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
    return { data: t.data, shape: [...t.shape], label: name, sharedKey: `shared:${name}` };
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
      };
    }
    return this.op('Reshape', [x, this.ints(shape)]);
  }

  transpose(x: OnnxValue, perm: number[]): OnnxValue {
    if (isConst(x)) return this.c(this.fold.transpose(this.t(x), perm), x.label);
    return this.op('Transpose', [x], { perm });
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
    const inputs = [x, weight];
    if (bias) inputs.push(bias);
    return this.op('Conv', inputs, {
      kernel_shape: [w[2]!, w[3]!],
      strides: a.stride,
      pads: [a.padding[0], a.padding[1], a.padding[0], a.padding[1]],
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
    if (kernelPerm) kernels = this.transpose(kernels, kernelPerm);
    const conv = { op: 'dynamicConv2d', id: this.o.id, ...a } as unknown as NodeSpec & {
      op: 'dynamicConv2d';
    };
    let b: Parameters<typeof perSampleConv>[8];
    if (bias && 'shared' in bias && isConst(bias.shared)) b = { shared: bias.shared.data };
    else if (bias && 'shared' in bias) b = { perSample: this.v(bias.shared) };
    else if (bias) b = { perSample: this.v(bias.perSample) };
    const name = perSampleConv(
      this.o.g,
      this.v(x),
      this.o.id,
      conv,
      this.v(kernels),
      this.o.inShape,
      this.o.outShape,
      this.o.batch,
      b,
    );
    return { name };
  }

  scaleChannels(x: OnnxValue, s: OnnxValue): OnnxValue {
    return this.op('Mul', [x, this.reshape(s, [-1, this.o.inShape[0]!, 1, 1])]);
  }
}
