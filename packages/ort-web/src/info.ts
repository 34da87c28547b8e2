import { KwError } from '@kernelwarehouse/core';
import { type Field, readFields } from './protobuf.js';

/** A graph input or output as {@link onnxInfo} reads it. */
export interface ValueInfo {
  name: string;
  /** Dims; a symbolic dim (such as the dynamic batch `N`) is its name, an unknown one `'?'`. */
  shape: (number | string)[];
  /** ONNX `TensorProto.DataType` (1 = float32, 7 = int64, ...); 0 when the file does not say. */
  elemType: number;
}

/** What {@link onnxInfo} reads from an ONNX file. */
export interface OnnxInfo {
  irVersion: number;
  /** Opset per domain (`''` is the default ONNX domain). A null-prototype object: a domain may be named `__proto__`. */
  opsets: Record<string, number>;
  producer: string;
  graphName: string;
  /** Graph inputs: name, dims (a string for a symbolic dim) and ONNX element type (1 = float32). */
  inputs: ValueInfo[];
  /** Graph outputs, as {@link OnnxInfo.inputs}. */
  outputs: ValueInfo[];
  /** Node count per op type. A null-prototype object: op types such as `constructor` count like any other. */
  ops: Record<string, number>;
  nodes: number;
  /**
   * Node count per op type in the graphs nested in nodes' attributes (control-flow bodies:
   * `Scan`, `Loop`, `If`), at every depth, all together; not in {@link OnnxInfo.ops}. Null
   * prototype, as `ops`.
   */
  subgraphOps: Record<string, number>;
  /** Bytes of initializer data in those nested graphs (not in {@link OnnxInfo.initializerBytes}). */
  subgraphInitializerBytes: number;
  initializers: number;
  /** Bytes of initializer data (raw_data or typed fields). */
  initializerBytes: number;
  /**
   * `Constant` nodes (of the default domain) that carry a tensor: models exported with their
   * weights as Constant nodes have 0 initializers but their weights here.
   */
  constants: number;
  /** Bytes of tensor data held by those Constant nodes. */
  constantBytes: number;
}

/** Bytes of a TensorProto's data (raw_data or a typed data field). */
function tensorBytes(t: Field[]): number {
  let n = 0;
  for (const d of t)
    if (
      d.wire === 2 &&
      d.bytes &&
      (d.field === 9 || d.field === 4 || d.field === 7 || d.field === 5)
    )
      n += d.bytes.length;
  return n;
}

const td = new TextDecoder('utf-8', { fatal: false });
const str = (f: Field | undefined) => (f?.bytes ? td.decode(f.bytes) : '');
const first = (fs: Field[], n: number) => fs.find((f) => f.field === n);

function valueInfo(bytes: Uint8Array): ValueInfo {
  const v = readFields(bytes, 'ValueInfoProto');
  const shape: (number | string)[] = [];
  const type = first(v, 2);
  let elemType = 0;
  if (type?.bytes) {
    const tt = first(readFields(type.bytes, 'TypeProto'), 1);
    const et = tt?.bytes ? first(readFields(tt.bytes, 'TypeProto.Tensor'), 1) : undefined;
    if (et && et.wire === 0) elemType = et.value;
    const sh = tt?.bytes ? first(readFields(tt.bytes, 'TypeProto.Tensor'), 2) : undefined;
    if (sh?.bytes) {
      for (const d of readFields(sh.bytes, 'TensorShapeProto').filter((f) => f.field === 1)) {
        const df = readFields(d.bytes!, 'Dimension');
        const val = first(df, 1);
        shape.push(val ? val.value : str(first(df, 2)) || '?');
      }
    }
  }
  return { name: str(first(v, 1)), shape, elemType };
}

/** Subgraphs nested deeper than this are refused (a hostile file could nest them to overflow the stack). */
const MAX_SUBGRAPH_DEPTH = 64;

/** Count the ops and initializer bytes of the graphs in `node`'s attributes, at every depth. */
function countSubgraphs(
  node: Field[],
  into: { ops: Record<string, number>; initializerBytes: number },
  depth: number,
): void {
  for (const a of node.filter((x) => x.field === 5 && x.bytes)) {
    const attr = readFields(a.bytes!, 'AttributeProto');
    // g (field 6): one graph; graphs (field 11): a list
    for (const gf of attr.filter((x) => (x.field === 6 || x.field === 11) && x.bytes)) {
      if (depth > MAX_SUBGRAPH_DEPTH)
        throw new KwError(
          'ONNX_INVALID',
          `ONNX subgraphs nested more than ${MAX_SUBGRAPH_DEPTH} deep (control-flow bodies inside bodies)`,
        );
      const sub = readFields(gf.bytes!, 'GraphProto');
      for (const f of sub.filter((x) => x.field === 1 && x.bytes)) {
        const n = readFields(f.bytes!, 'NodeProto');
        const op = str(first(n, 4));
        into.ops[op] = (into.ops[op] ?? 0) + 1;
        countSubgraphs(n, into, depth + 1);
      }
      for (const f of sub.filter((x) => x.field === 5 && x.bytes))
        into.initializerBytes += tensorBytes(readFields(f.bytes!, 'TensorProto'));
    }
  }
}

/**
 * Decode an ONNX model's header, graph inputs/outputs, op histogram and initializer sizes
 * without running it. Truncated or non-ONNX bytes throw KwError('ONNX_INVALID').
 *
 * @example
 * const info = onnxInfo(bytes);
 * console.log(info.opsets[''], info.ops, info.initializerBytes);
 */
export function onnxInfo(bytes: Uint8Array): OnnxInfo {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0)
    throw new KwError('ONNX_INVALID', 'ONNX bytes are empty');
  const top = readFields(bytes, 'ModelProto');
  const graph = first(top, 7);
  const ir = first(top, 1);
  if (!graph?.bytes || !ir || ir.wire !== 0 || graph.wire !== 2) {
    throw new KwError(
      'ONNX_INVALID',
      'not an ONNX ModelProto: no ir_version (field 1) and graph (field 7)',
    );
  }
  const opsets: Record<string, number> = Object.create(null);
  for (const f of top.filter((x) => x.field === 8 && x.bytes)) {
    const o = readFields(f.bytes!, 'OperatorSetIdProto');
    opsets[str(first(o, 1))] = first(o, 2)?.value ?? 0;
  }
  const g = readFields(graph.bytes, 'GraphProto');
  // null prototype: an op type named "constructor" or "__proto__" is counted like any other
  const ops: Record<string, number> = Object.create(null);
  let nodes = 0;
  let constants = 0;
  let constantBytes = 0;
  const nested = { ops: Object.create(null) as Record<string, number>, initializerBytes: 0 };
  for (const f of g.filter((x) => x.field === 1 && x.bytes)) {
    const node = readFields(f.bytes!, 'NodeProto');
    const op = str(first(node, 4));
    ops[op] = (ops[op] ?? 0) + 1;
    nodes++;
    countSubgraphs(node, nested, 1);
    if (op === 'Constant' && !str(first(node, 7))) {
      // attribute (field 5) "value" carries a TensorProto in field 5 (t)
      for (const a of node.filter((x) => x.field === 5 && x.bytes)) {
        const t = first(readFields(a.bytes!, 'AttributeProto'), 5);
        if (t?.bytes) {
          constants++;
          constantBytes += tensorBytes(readFields(t.bytes, 'TensorProto'));
        }
      }
    }
  }
  let initializerBytes = 0;
  let initializers = 0;
  for (const f of g.filter((x) => x.field === 5 && x.bytes)) {
    initializers++;
    initializerBytes += tensorBytes(readFields(f.bytes!, 'TensorProto'));
  }
  return {
    irVersion: ir.value,
    opsets,
    producer: str(first(top, 2)),
    graphName: str(first(g, 2)),
    inputs: g.filter((x) => x.field === 11 && x.bytes).map((f) => valueInfo(f.bytes!)),
    outputs: g.filter((x) => x.field === 12 && x.bytes).map((f) => valueInfo(f.bytes!)),
    ops,
    nodes,
    subgraphOps: nested.ops,
    subgraphInitializerBytes: nested.initializerBytes,
    initializers,
    initializerBytes,
    constants,
    constantBytes,
  };
}
