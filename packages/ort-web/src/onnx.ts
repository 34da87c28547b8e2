/**
 * ONNX ModelProto building on top of the protobuf writer. Field numbers follow onnx.proto
 * (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto).
 */
import { KwError } from '@kernelwarehouse/core';
import { Writer } from './protobuf.js';

/** ONNX opset this package emits (default domain). */
export const OPSET = 17;
/** ONNX IR version this package emits (IR 8 goes with opset 17). */
export const IR_VERSION = 8;

const FLOAT = 1;
const INT64 = 7;

/** An attribute value: int, ints, float, floats, string or a subgraph (a GraphProto). */
export type AttrValue =
  | number
  | number[]
  | string
  | { float: number }
  | { floats: number[] }
  | { graph: Writer };

function attribute(name: string, v: AttrValue): Writer {
  const a = new Writer().string(1, name);
  if (typeof v === 'string') return a.bytes(4, new TextEncoder().encode(v)).int(20, 3);
  if (typeof v === 'number') return a.int(3, v).int(20, 2);
  if (Array.isArray(v)) return a.packedInts(8, v).int(20, 7);
  if ('float' in v) return a.float(2, v.float).int(20, 1);
  if ('graph' in v) return a.message(6, v.graph).int(20, 5);
  return a.packedFloats(7, v.floats).int(20, 6);
}

/** Dimension: a fixed size or a symbolic name (e.g. `'N'`, the dynamic batch). */
export type Dim = number | string;

function valueInfo(name: string, dims: Dim[]): Writer {
  const shape = new Writer();
  for (const d of dims)
    shape.message(1, typeof d === 'number' ? new Writer().int(1, d) : new Writer().string(2, d));
  const tensorType = new Writer().int(1, FLOAT).message(2, shape);
  return new Writer().string(1, name).message(2, new Writer().message(1, tensorType));
}

/** A conv's or pool's `[h, w]` padding (the same on both sides) as ONNX `pads`: `[top, left, bottom, right]`. */
export function onnxPads(padding: readonly [number, number]): number[] {
  return [padding[0], padding[1], padding[0], padding[1]];
}

/** Builds one ONNX graph: initializers, nodes (in topological order), inputs and outputs. */
export class GraphBuilder {
  private readonly nodes: Writer[] = [];
  private readonly inits: Writer[] = [];
  private readonly inputs: Writer[] = [];
  private readonly outputs: Writer[] = [];
  /**
   * Every name taken (defined or reserved) in this graph and every graph nested in it or around
   * it: {@link fresh} never hands one of these out, so a subgraph's values never shadow the
   * outer graph's (onnxruntime refuses that).
   */
  private readonly names: Set<string>;
  /** Every value name the graph defines (inputs, initializers, node outputs), in order. */
  private readonly defined: string[] = [];
  private readonly root: GraphBuilder;
  private counter = 0;
  /** Op histogram of what was emitted into this graph (not its subgraphs: as `onnxInfo` counts). */
  readonly ops = new Map<string, number>();
  /** Bytes of initializer data. */
  initializerBytes = 0;
  /** On a top-level graph: the op histogram of every graph nested in it (`onnxInfo`'s `subgraphOps`). */
  readonly subgraphOps = new Map<string, number>();
  /** On a top-level graph: bytes of initializer data in the graphs nested in it. */
  subgraphInitializerBytes = 0;

  /** A top-level graph, or with `outer`, a subgraph (a control-flow op's body) of `outer`. */
  constructor(outer?: GraphBuilder) {
    this.root = outer ? outer.root : this;
    this.names = outer ? outer.names : new Set<string>();
  }

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    const n = this.unused(prefix);
    this.defined.push(n);
    return n;
  }

  /** A fresh name that is taken but not yet defined (for {@link input}). */
  unused(prefix: string): string {
    const root = this.root;
    let n = `${prefix}_${root.counter++}`;
    while (this.names.has(n)) n = `${prefix}_${root.counter++}`;
    this.names.add(n);
    return n;
  }

  /**
   * Keep `name` out of {@link fresh}'s reach: the graph's output names (spec node ids, declared
   * only at the end) must be reserved before any value is generated, or a generated name such as
   * `c.weight_0` could take an output's id.
   */
  reserve(name: string): void {
    this.names.add(name);
  }

  private readonly sharedValues = new Map<string, string>();

  /** The value stored under `key`, created by `make` on first use (shared initializers). */
  shared(key: string, make: () => string): string {
    let v = this.sharedValues.get(key);
    if (v === undefined) {
      v = make();
      this.sharedValues.set(key, v);
    }
    return v;
  }

  /** Float initializer. */
  float(prefix: string, dims: number[], data: Float32Array | number[]): string {
    const name = this.fresh(prefix);
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    const raw = new Uint8Array(arr.buffer.slice(arr.byteOffset, arr.byteOffset + arr.byteLength));
    this.inits.push(new Writer().packedInts(1, dims).int(2, FLOAT).string(8, name).bytes(9, raw));
    this.countBytes(raw.length);
    return name;
  }

  /** int64 initializer (shapes, axes, slice bounds). */
  int64(prefix: string, values: number[]): string {
    const name = this.fresh(prefix);
    const raw = new Uint8Array(values.length * 8);
    const dv = new DataView(raw.buffer);
    values.forEach((v, i) => {
      dv.setBigInt64(i * 8, BigInt(v), true);
    });
    this.inits.push(
      new Writer().packedInts(1, [values.length]).int(2, INT64).string(8, name).bytes(9, raw),
    );
    this.countBytes(raw.length);
    return name;
  }

  /** A scalar float constant (as a 0-d initializer). */
  scalar(prefix: string, v: number): string {
    const name = this.fresh(prefix);
    const raw = new Uint8Array(new Float32Array([v]).buffer);
    this.inits.push(new Writer().int(2, FLOAT).string(8, name).bytes(9, raw));
    this.countBytes(4);
    return name;
  }

  /** Initializer bytes into this graph's count (and a subgraph's into its top-level graph's too). */
  private countBytes(n: number): void {
    this.initializerBytes += n;
    if (this.root !== this) this.root.subgraphInitializerBytes += n;
  }

  /** Append a node; returns its (single) output name. */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    prefix = opType.toLowerCase(),
  ): string {
    const out = this.fresh(prefix);
    const n = new Writer();
    for (const i of inputs) n.string(1, i);
    n.string(2, out).string(3, `${out}_node`).string(4, opType);
    for (const [k, v] of Object.entries(attrs)) n.message(5, attribute(k, v));
    this.nodes.push(n);
    this.ops.set(opType, (this.ops.get(opType) ?? 0) + 1);
    const nested = this.root.subgraphOps;
    if (this.root !== this) nested.set(opType, (nested.get(opType) ?? 0) + 1);
    return out;
  }

  /** Declare a graph input with its own name. */
  input(name: string, dims: Dim[]): string {
    this.names.add(name);
    this.defined.push(name);
    this.inputs.push(valueInfo(name, dims));
    return name;
  }

  /** Expose `value` as graph output `name` (through an Identity). */
  output(name: string, value: string, dims: Dim[]): void {
    const n = new Writer()
      .string(1, value)
      .string(2, name)
      .string(3, `${name}_out`)
      .string(4, 'Identity');
    this.names.add(name);
    this.defined.push(name);
    this.nodes.push(n);
    this.ops.set('Identity', (this.ops.get('Identity') ?? 0) + 1);
    this.outputs.push(valueInfo(name, dims));
  }

  /**
   * Declare `value`, a value this graph defines, as a graph output under its own name (a
   * subgraph's outputs: no Identity copy per iteration).
   */
  outputValue(value: string, dims: Dim[]): void {
    this.outputs.push(valueInfo(value, dims));
  }

  /** Encode the GraphProto (checks that each value name is defined once). */
  graph(graphName: string): Writer {
    // ONNX (SSA): each value name is defined once; onnxruntime refuses a graph that repeats one
    const seen = new Set<string>();
    for (const n of this.defined) {
      if (seen.has(n)) {
        throw new KwError(
          'ONNX_INVALID',
          `the exported graph would define the value name ${JSON.stringify(n)} twice (graph input, initializer, node output or graph output); ONNX needs each name once`,
          { name: n },
        );
      }
      seen.add(n);
    }
    const g = new Writer();
    for (const n of this.nodes) g.message(1, n);
    g.string(2, graphName);
    for (const i of this.inits) g.message(5, i);
    for (const i of this.inputs) g.message(11, i);
    for (const o of this.outputs) g.message(12, o);
    return g;
  }

  /** Encode the ModelProto. */
  model(graphName: string, docString: string): Uint8Array {
    const g = this.graph(graphName);
    return new Writer()
      .int(1, IR_VERSION)
      .string(2, '@kernelwarehouse/ort-web')
      .string(3, '0.0.0')
      .string(6, docString)
      .message(7, g)
      .message(8, new Writer().string(1, '').int(2, OPSET))
      .finish();
  }
}
