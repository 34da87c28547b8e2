import { describeValue, KwError } from '../errors.js';
import { isValidBudget } from '../kw/budget.js';
import { METHODS } from '../methods/registry.js';
import { convOutputLength } from '../ops/seam.js';
import {
  INPUT,
  type KwWarehouseSpec,
  type ModelSpec,
  type NodeSpec,
  type OpName,
  type Pair,
  SPEC_VERSION,
} from './types.js';

/** Every op a spec may use. */
export const OPS: readonly OpName[] = [
  'conv2d',
  'linear',
  'batchNorm',
  'layerNorm',
  'relu',
  'relu6',
  'gelu',
  'sigmoid',
  'add',
  'mul',
  'maxPool',
  'avgPool',
  'globalAvgPool',
  'flatten',
  'dropout',
  'identity',
  'dynamicConv2d',
  'dynamicLinear',
];

/** The node type whose `op` includes `K` (ActivationNode's `op` is a union, so not `Extract`). */
type NodeOf<K extends OpName, N = NodeSpec> = N extends { op: infer O }
  ? K extends O
    ? N
    : never
  : never;
type FieldsOf<K extends OpName> = Exclude<keyof NodeOf<K>, 'id' | 'op' | 'inputs'>;

/**
 * The fields each op accepts besides `id`, `op` and `inputs`: exactly the fields of its node type
 * in types.ts (the `satisfies` below and {@link _NodeFieldsComplete} make the compiler check both
 * directions). Any other field is a typo (`strides`, `kernel_size`) and is refused, never ignored.
 */
export const NODE_FIELDS = {
  conv2d: ['outChannels', 'kernelSize', 'stride', 'padding', 'dilation', 'groups', 'bias'],
  dynamicConv2d: [
    'outChannels',
    'kernelSize',
    'stride',
    'padding',
    'dilation',
    'groups',
    'bias',
    'method',
  ],
  linear: ['outFeatures', 'bias'],
  dynamicLinear: ['outFeatures', 'bias', 'method'],
  batchNorm: ['eps', 'momentum'],
  layerNorm: ['eps'],
  relu: [],
  relu6: [],
  gelu: [],
  sigmoid: [],
  add: [],
  mul: ['init'],
  maxPool: ['kernelSize', 'stride', 'padding'],
  avgPool: ['kernelSize', 'stride', 'padding'],
  globalAvgPool: [],
  flatten: [],
  dropout: ['rate'],
  identity: [],
} as const satisfies { readonly [K in OpName]: readonly FieldsOf<K>[] };

/** Compile-time check that {@link NODE_FIELDS} lists every field of every node type. */
export type _NodeFieldsComplete = {
  [K in OpName]: Exclude<FieldsOf<K>, (typeof NODE_FIELDS)[K][number]>;
}[OpName] extends never
  ? true
  : never;
const _nodeFieldsComplete: _NodeFieldsComplete = true;
void _nodeFieldsComplete;

/** The fields of a warehouse (every field of {@link KwWarehouseSpec}). */
export const WAREHOUSE_FIELDS = [
  'id',
  'budget',
  'cellInRatio',
  'cellOutRatio',
  'reduction',
  'norm',
  'nonlocalBasisRatio',
] as const satisfies readonly (keyof KwWarehouseSpec)[];

/** The fields of a spec (every field of {@link ModelSpec}). */
export const SPEC_FIELDS = [
  'specVersion',
  'name',
  'inputShape',
  'nodes',
  'outputs',
  'warehouses',
  'meta',
] as const satisfies readonly (keyof ModelSpec)[];

const _fieldListsComplete: [
  Exclude<keyof KwWarehouseSpec, (typeof WAREHOUSE_FIELDS)[number]>,
  Exclude<keyof ModelSpec, (typeof SPEC_FIELDS)[number]>,
] extends [never, never]
  ? true
  : never = true;
void _fieldListsComplete;

/** Refuse any own field of `raw` not in `accepted` (SPEC_BAD_FIELD naming `where`, the field and the accepted ones). */
function rejectUnknownFields(
  where: string,
  what: string,
  raw: Record<string, unknown>,
  accepted: readonly string[],
): void {
  for (const k of Object.keys(raw)) {
    if (!accepted.includes(k)) {
      fail(
        'SPEC_BAD_FIELD',
        where,
        `unknown field ${JSON.stringify(k)} (${what}); accepted fields: ${accepted.join(', ')}`,
        { field: k, expected: [...accepted], actual: k },
      );
    }
  }
}

/** A validated spec together with the per-sample output shape of every node. */
export interface AnalyzedSpec {
  spec: ModelSpec;
  /** Per-sample shape (no batch dim) of every node output, and of `"input"`. */
  shapes: Map<string, number[]>;
  /** Nodes by id. */
  byId: Map<string, NodeSpec>;
}

/**
 * Results of earlier validations, keyed by the object validated and guarded by its fingerprint:
 * an object mutated after it was validated (stride set to 0, another specVersion) fingerprints
 * differently and is validated again, never answered with the stale result.
 */
const cache = new WeakMap<object, { print: string; result: AnalyzedSpec }>();

/**
 * A text that differs whenever two values could validate differently: every own enumerable key
 * in order, typed leaves (so -0, NaN, undefined, holes and null stay apart), objects met twice as
 * references. Iterative: a hostile nesting depth cannot overflow the stack.
 */
export function specFingerprint(v: unknown): string {
  const parts: string[] = [];
  const seen = new Map<object, number>();
  const todo: unknown[] = [v];
  const END = Symbol('end');
  while (todo.length) {
    const x = todo.pop();
    if (x === END) {
      parts.push(')');
      continue;
    }
    switch (typeof x) {
      case 'number':
        parts.push(Object.is(x, -0) ? 'n-0' : `n${x}`);
        break;
      case 'string':
        parts.push(`s${x.length}:${x}`);
        break;
      case 'object': {
        if (x === null) {
          parts.push('z');
          break;
        }
        const ref = seen.get(x);
        if (ref !== undefined) {
          parts.push(`r${ref}`);
          break;
        }
        seen.set(x, seen.size);
        todo.push(END);
        if (Array.isArray(x)) {
          parts.push(`a${x.length}(`);
          for (let i = x.length - 1; i >= 0; i--) todo.push(i in x ? x[i] : HOLE);
        } else {
          const keys = Object.keys(x);
          parts.push(`o${keys.length}(`);
          for (let i = keys.length - 1; i >= 0; i--) {
            todo.push((x as Record<string, unknown>)[keys[i]!]);
            todo.push(`${keys[i]}`);
          }
        }
        break;
      }
      case 'undefined':
        parts.push('u');
        break;
      case 'symbol':
        parts.push(x === HOLE ? 'h' : 'y');
        break;
      default:
        parts.push(`${typeof x}:${String(x)}`);
    }
  }
  return parts.join(',');
}
const HOLE = Symbol('hole');

function fail(
  code: ConstructorParameters<typeof KwError>[0],
  where: string,
  msg: string,
  extra = {},
): never {
  throw new KwError(code, `${where}: ${msg}`, extra);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function posInt(where: string, field: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    fail(
      'SPEC_BAD_FIELD',
      where,
      `field "${field}" must be an integer >= ${min}, found ${describeValue(v)}`,
      {
        field,
        expected: `integer >= ${min}`,
        actual: v,
      },
    );
  }
  return v;
}

function finiteNum(
  where: string,
  field: string,
  v: unknown,
  lo: number,
  hi: number,
  loOpen = false,
): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
    fail(
      'SPEC_BAD_FIELD',
      where,
      `field "${field}" must be a finite number in ${loOpen ? '(' : '['}${lo}, ${hi}], found ${describeValue(v)}`,
      { field, actual: v },
    );
  }
  return v;
}

function pair(
  where: string,
  field: string,
  v: unknown,
  dflt: number | undefined,
  min: number,
): Pair {
  if (v === undefined) {
    if (dflt === undefined)
      fail('SPEC_MISSING_FIELD', where, `field "${field}" is required`, { field });
    return [dflt, dflt];
  }
  if (typeof v === 'number') {
    posInt(where, field, v, min);
    return [v, v];
  }
  if (Array.isArray(v) && v.length === 2) {
    posInt(where, `${field}[0]`, v[0], min);
    posInt(where, `${field}[1]`, v[1], min);
    return [v[0] as number, v[1] as number];
  }
  return fail(
    'SPEC_BAD_FIELD',
    where,
    `field "${field}" must be an integer or [h, w], found ${describeValue(v)}`,
    {
      field,
      actual: v,
    },
  );
}

function bool(where: string, field: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean')
    fail(
      'SPEC_BAD_FIELD',
      where,
      `field "${field}" must be true or false, found ${describeValue(v)}`,
    );
  return v;
}

function normalizeWarehouse(raw: unknown, i: number): KwWarehouseSpec {
  const where = `warehouses[${i}]`;
  if (!isObj(raw)) fail('SPEC_INVALID', where, `must be an object, found ${describeValue(raw)}`);
  if (typeof raw.id !== 'string' || raw.id.length === 0) {
    fail(
      'SPEC_MISSING_FIELD',
      where,
      `field "id" must be a non-empty string, found ${describeValue(raw.id)}`,
    );
  }
  const w = `warehouse "${raw.id}"`;
  rejectUnknownFields(w, 'a warehouse', raw, WAREHOUSE_FIELDS);
  if (raw.budget === undefined) fail('SPEC_MISSING_FIELD', w, 'field "budget" is required');
  if (!isValidBudget(raw.budget)) {
    throw new KwError(
      'BUDGET_INVALID',
      `${w}: budget must be a finite number > 0 with a finite reciprocal, found ${describeValue(raw.budget)}`,
      {
        warehouse: raw.id,
        actual: raw.budget,
      },
    );
  }
  const norm = raw.norm ?? 'batch';
  if (norm !== 'batch' && norm !== 'layer') {
    fail(
      'SPEC_BAD_FIELD',
      w,
      `field "norm" must be "batch" or "layer", found ${describeValue(norm)}`,
    );
  }
  return {
    id: raw.id,
    budget: raw.budget,
    cellInRatio: finiteNum(w, 'cellInRatio', raw.cellInRatio ?? 1, 0, 1, true),
    cellOutRatio: finiteNum(w, 'cellOutRatio', raw.cellOutRatio ?? 1, 0, 1, true),
    reduction: finiteNum(w, 'reduction', raw.reduction ?? 1 / 16, 0, 1, true),
    norm,
    nonlocalBasisRatio: finiteNum(w, 'nonlocalBasisRatio', raw.nonlocalBasisRatio ?? 1, 0, 1, true),
  };
}

/**
 * Validate a spec (parsed JSON or an object built in code) and return it in canonical form:
 * pairs expanded, defaults filled. Throws a {@link KwError} naming the node and field on
 * the first problem. Also infers every node's output shape.
 *
 * @example
 * const { spec, shapes } = analyzeSpec(JSON.parse(text));
 */
export function analyzeSpec(input: unknown): AnalyzedSpec {
  if (!isObj(input)) return analyzeUncached(input);
  const print = specFingerprint(input);
  const hit = cache.get(input);
  if (hit && hit.print === print) return hit.result;
  const result = analyzeUncached(input);
  cache.set(input, { print, result });
  if ((result.spec as object) !== input)
    cache.set(result.spec, { print: specFingerprint(result.spec), result });
  return result;
}

/** {@link analyzeSpec} returning only the canonical spec. */
export function validateSpec(input: unknown): ModelSpec {
  return analyzeSpec(input).spec;
}

function analyzeUncached(input: unknown): AnalyzedSpec {
  if (!isObj(input))
    fail('SPEC_INVALID', 'spec', `must be an object, found ${describeValue(input)}`);
  if (input.specVersion !== SPEC_VERSION) {
    fail(
      'SPEC_VERSION',
      'spec',
      `specVersion must be ${SPEC_VERSION}, found ${describeValue(input.specVersion)}`,
      {
        expected: SPEC_VERSION,
        actual: input.specVersion,
      },
    );
  }
  rejectUnknownFields('spec', 'the spec', input, SPEC_FIELDS);
  const name =
    typeof input.name === 'string'
      ? input.name
      : fail('SPEC_MISSING_FIELD', 'spec', 'field "name" must be a string');
  const inShape = input.inputShape;
  if (!Array.isArray(inShape) || (inShape.length !== 1 && inShape.length !== 3)) {
    fail(
      'SPEC_BAD_FIELD',
      'spec',
      `field "inputShape" must be [C, H, W] or [F], found ${describeValue(inShape)}`,
    );
  }
  Array.from(inShape as unknown[]).forEach((d, i) => {
    posInt('spec', `inputShape[${i}]`, d);
  });
  checkSize('spec', 'inputShape', inShape as number[]);
  if (!Array.isArray(input.nodes) || input.nodes.length === 0) {
    fail('SPEC_MISSING_FIELD', 'spec', 'field "nodes" must be a non-empty array');
  }
  const rawWarehouses = input.warehouses ?? [];
  if (!Array.isArray(rawWarehouses))
    fail('SPEC_BAD_FIELD', 'spec', 'field "warehouses" must be an array');
  // Array.from everywhere below: holes in sparse arrays become undefined instead of being skipped
  const warehouses = Array.from(rawWarehouses as unknown[]).map(normalizeWarehouse);
  const whIds = new Set<string>();
  for (const w of warehouses) {
    if (whIds.has(w.id)) fail('SPEC_DUPLICATE_ID', `warehouse "${w.id}"`, 'id is used twice');
    whIds.add(w.id);
  }

  const shapes = new Map<string, number[]>([[INPUT, [...(inShape as number[])]]]);
  const byId = new Map<string, NodeSpec>();
  const nodes: NodeSpec[] = [];
  Array.from(input.nodes as unknown[]).forEach((raw: unknown, idx: number) => {
    const node = normalizeNode(raw, idx, shapes, whIds);
    byId.set(node.id, node);
    nodes.push(node);
  });

  const outputsRaw = input.outputs;
  if (!Array.isArray(outputsRaw) || outputsRaw.length === 0) {
    fail('SPEC_MISSING_FIELD', 'spec', 'field "outputs" must be a non-empty array of node ids');
  }
  const outputSet = new Set<string>();
  const outputs = Array.from(outputsRaw as unknown[]).map((o: unknown, i: number) => {
    if (typeof o !== 'string' || !byId.has(o)) {
      fail(
        'SPEC_UNKNOWN_INPUT',
        'spec',
        `outputs[${i}] names ${describeValue(o)}, which is not a node`,
      );
    }
    // an output is named by its node id (ONNX output names, result maps): twice is ambiguous
    if (outputSet.has(o))
      fail('SPEC_DUPLICATE_ID', 'spec', `outputs[${i}] names ${describeValue(o)} a second time`, {
        field: `outputs[${i}]`,
        actual: o,
      });
    outputSet.add(o);
    return o;
  });

  const usedWarehouses = new Set<string>();
  for (const n of nodes) {
    if (n.op === 'dynamicConv2d' || n.op === 'dynamicLinear') {
      const group = METHODS.get(n.method.kind)?.groupOf?.(n.method);
      if (group !== undefined) usedWarehouses.add(group);
    }
  }
  for (const w of warehouses) {
    if (!usedWarehouses.has(w.id)) {
      fail('SPEC_UNKNOWN_WAREHOUSE', `warehouse "${w.id}"`, 'no dynamic layer uses this warehouse');
    }
  }

  const spec: ModelSpec = {
    specVersion: SPEC_VERSION,
    name,
    inputShape: [...(inShape as number[])],
    nodes,
    outputs,
    warehouses,
  };
  if (input.meta !== undefined) {
    if (!isObj(input.meta)) fail('SPEC_BAD_FIELD', 'spec', 'field "meta" must be an object');
    spec.meta = input.meta;
  }
  return { spec, shapes, byId };
}

function normalizeNode(
  raw: unknown,
  idx: number,
  shapes: Map<string, number[]>,
  whIds: Set<string>,
): NodeSpec {
  if (!isObj(raw))
    fail('SPEC_INVALID', `nodes[${idx}]`, `must be an object, found ${describeValue(raw)}`);
  if (typeof raw.id !== 'string' || raw.id.length === 0) {
    fail(
      'SPEC_MISSING_FIELD',
      `nodes[${idx}]`,
      `field "id" must be a non-empty string, found ${describeValue(raw.id)}`,
    );
  }
  const id = raw.id;
  const where = `node "${id}" (nodes[${idx}])`;
  if (id === INPUT || shapes.has(id))
    fail('SPEC_DUPLICATE_ID', where, `id "${id}" is already used`);
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(id) || id.includes('..') || id.endsWith('.')) {
    fail('SPEC_BAD_FIELD', where, 'id must be a dotted path of letters, digits, "_" and "-"');
  }
  const op = raw.op as OpName;
  if (typeof op !== 'string' || !OPS.includes(op)) {
    fail(
      'SPEC_UNKNOWN_OP',
      where,
      `unknown op ${describeValue(raw.op)}; known ops: ${OPS.join(', ')}`,
      { op: raw.op },
    );
  }
  rejectUnknownFields(where, `op "${op}"`, raw, ['id', 'op', 'inputs', ...NODE_FIELDS[op]]);
  if (!Array.isArray(raw.inputs))
    fail('SPEC_MISSING_FIELD', where, 'field "inputs" must be an array of node ids');
  const inputs: string[] = Array.from(raw.inputs as unknown[]).map((s: unknown, i: number) => {
    if (typeof s !== 'string')
      fail('SPEC_BAD_FIELD', where, `inputs[${i}] must be a string, found ${describeValue(s)}`);
    if (s === id) fail('SPEC_UNKNOWN_INPUT', where, `inputs[${i}] names the node itself (a cycle)`);
    if (!shapes.has(s)) {
      fail(
        'SPEC_UNKNOWN_INPUT',
        where,
        `inputs[${i}] names "${s}", which is neither "input" nor an earlier node (nodes must be in topological order; a later node would be a cycle)`,
        { field: `inputs[${i}]`, actual: s },
      );
    }
    return s;
  });
  const arity = op === 'add' ? [2, Number.POSITIVE_INFINITY] : op === 'mul' ? [1, 2] : [1, 1];
  if (inputs.length < arity[0]! || inputs.length > arity[1]!) {
    fail(
      'SPEC_BAD_FIELD',
      where,
      `op "${op}" takes ${arity[0] === arity[1] ? arity[0] : `${arity[0]}+`} input(s), found ${inputs.length}`,
    );
  }
  const x = shapes.get(inputs[0]!)!;
  const needImage = () => {
    if (x.length !== 3)
      fail('SPEC_SHAPE', where, `op "${op}" needs a [C, H, W] input, found [${x.join(', ')}]`);
  };
  let node: NodeSpec;
  let out: number[];
  switch (op) {
    case 'conv2d':
    case 'dynamicConv2d': {
      needImage();
      const outChannels = posInt(where, 'outChannels', raw.outChannels);
      const kernelSize = pair(where, 'kernelSize', raw.kernelSize, undefined, 1);
      const stride = pair(where, 'stride', raw.stride, 1, 1);
      const padding = pair(where, 'padding', raw.padding, 0, 0);
      const dilation = pair(where, 'dilation', raw.dilation, 1, 1);
      const groups = posInt(where, 'groups', raw.groups ?? 1);
      const bias = bool(where, 'bias', raw.bias, false);
      const cin = x[0]!;
      if (cin % groups !== 0 || outChannels % groups !== 0) {
        fail(
          'SPEC_BAD_FIELD',
          where,
          `groups=${groups} must divide input channels (${cin}) and outChannels (${outChannels})`,
          {
            field: 'groups',
            actual: groups,
          },
        );
      }
      const h = convOutputLength(x[1]!, kernelSize[0], stride[0], padding[0], dilation[0]);
      const w = convOutputLength(x[2]!, kernelSize[1], stride[1], padding[1], dilation[1]);
      if (h < 1 || w < 1) {
        fail(
          'SPEC_SHAPE',
          where,
          `output would be ${h}x${w}: kernel ${kernelSize.join('x')} (dilation ${dilation.join('x')}) does not fit the ${x[1]}x${x[2]} input with padding ${padding.join('x')}`,
        );
      }
      out = [outChannels, h, w];
      const geom = { outChannels, kernelSize, stride, padding, dilation, groups, bias };
      node =
        op === 'conv2d'
          ? { id, op, inputs, ...geom }
          : { id, op, inputs, ...geom, method: methodRef(where, raw.method, whIds) };
      break;
    }
    case 'linear':
    case 'dynamicLinear': {
      if (x.length !== 1)
        fail(
          'SPEC_SHAPE',
          where,
          `op "${op}" needs an [F] input (flatten first), found [${x.join(', ')}]`,
        );
      const outFeatures = posInt(where, 'outFeatures', raw.outFeatures);
      const bias = bool(where, 'bias', raw.bias, true);
      out = [outFeatures];
      node =
        op === 'linear'
          ? { id, op, inputs, outFeatures, bias }
          : { id, op, inputs, outFeatures, bias, method: methodRef(where, raw.method, whIds) };
      break;
    }
    case 'batchNorm':
      needImage();
      node = {
        id,
        op,
        inputs,
        eps: finiteNum(where, 'eps', raw.eps ?? 1e-5, 0, 1, true),
        momentum: finiteNum(where, 'momentum', raw.momentum ?? 0.1, 0, 1),
      };
      out = [...x];
      break;
    case 'layerNorm':
      node = { id, op, inputs, eps: finiteNum(where, 'eps', raw.eps ?? 1e-6, 0, 1, true) };
      out = [...x];
      break;
    case 'relu':
    case 'relu6':
    case 'gelu':
    case 'sigmoid':
    case 'identity':
    case 'add':
      for (let i = 1; i < inputs.length; i++) {
        const s = shapes.get(inputs[i]!)!;
        if (s.join(',') !== x.join(',')) {
          fail(
            'SPEC_SHAPE',
            where,
            `inputs of "add" must have equal shapes: "${inputs[0]}" is [${x.join(', ')}], "${inputs[i]}" is [${s.join(', ')}]`,
          );
        }
      }
      node = { id, op, inputs } as NodeSpec;
      out = [...x];
      break;
    case 'mul': {
      if (inputs.length === 2) {
        const s = shapes.get(inputs[1]!)!;
        if (s.length !== x.length || s.some((d, i) => d !== 1 && d !== x[i])) {
          fail(
            'SPEC_SHAPE',
            where,
            `second input [${s.join(', ')}] does not broadcast to [${x.join(', ')}]`,
          );
        }
        node = { id, op, inputs };
      } else {
        const init = raw.init === undefined ? 1 : finiteNum(where, 'init', raw.init, -1e6, 1e6);
        node = { id, op, inputs, init };
      }
      out = [...x];
      break;
    }
    case 'maxPool':
    case 'avgPool': {
      needImage();
      const kernelSize = pair(where, 'kernelSize', raw.kernelSize, undefined, 1);
      const stride = pair(where, 'stride', raw.stride, kernelSize[0], 1);
      const padding = pair(where, 'padding', raw.padding, 0, 0);
      if (padding[0] * 2 > kernelSize[0] || padding[1] * 2 > kernelSize[1]) {
        fail(
          'SPEC_BAD_FIELD',
          where,
          `padding ${padding.join('x')} must be at most half the kernel ${kernelSize.join('x')}`,
        );
      }
      const h = convOutputLength(x[1]!, kernelSize[0], stride[0], padding[0], 1);
      const w = convOutputLength(x[2]!, kernelSize[1], stride[1], padding[1], 1);
      if (h < 1 || w < 1)
        fail('SPEC_SHAPE', where, `pool output would be ${h}x${w} for a ${x[1]}x${x[2]} input`);
      node = { id, op, inputs, kernelSize, stride, padding };
      out = [x[0]!, h, w];
      break;
    }
    case 'globalAvgPool':
      needImage();
      node = { id, op, inputs };
      out = [x[0]!, 1, 1];
      break;
    case 'flatten':
      node = { id, op, inputs };
      out = [x.reduce((a, b) => a * b, 1)];
      break;
    case 'dropout':
      node = { id, op, inputs, rate: finiteNum(where, 'rate', raw.rate ?? 0, 0, 1) };
      if (node.rate >= 1) fail('SPEC_BAD_FIELD', where, 'field "rate" must be < 1');
      out = [...x];
      break;
  }
  checkSize(where, 'output', out);
  shapes.set(id, out);
  return node;
}

/**
 * The most elements one tensor may hold (per sample for activations; every parameter): 2^29 - 1,
 * the largest float32 tensor whose bytes stay below 2^31 (2 GiB). That is the size every backend
 * can take: an ONNX protobuf holds at most 2^31 - 1 bytes, wasm32 memory (tfjs-wasm,
 * onnxruntime-web) addresses 4 GiB for everything at once, and V8 typed arrays are indexed by
 * int32 on some platforms. (It was 2^31 - 1 elements: a layer of 8 GiB passed validation and
 * crashed the ONNX export with a RangeError.) It also keeps parameter and MAC sums of any spec
 * below 2^53, where JavaScript numbers count exactly.
 */
export const MAX_TENSOR_ELEMENTS = 2 ** 29 - 1;

/**
 * The most float32 elements all parameters and buffers of one spec may hold together: the same
 * 2^29 - 1, because an exported ONNX model (one protobuf) carries all of them in 2 GiB.
 */
export const MAX_MODEL_ELEMENTS = 2 ** 29 - 1;

/** Refuse a shape with more than {@link MAX_TENSOR_ELEMENTS} elements. */
export function checkSize(where: string, what: string, shape: readonly number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n > MAX_TENSOR_ELEMENTS) {
    fail(
      'SPEC_SHAPE',
      where,
      `${what} [${shape.join(', ')}] has ${n.toExponential(3)} elements; at most 2^29 - 1 per tensor (2 GiB of float32, what every backend can hold)`,
      { expected: `<= ${MAX_TENSOR_ELEMENTS}`, actual: n },
    );
  }
}

/** Refuse a spec whose parameters and buffers hold more than {@link MAX_MODEL_ELEMENTS} together. */
export function checkModelSize(name: string, total: number): void {
  if (total > MAX_MODEL_ELEMENTS) {
    fail(
      'SPEC_SHAPE',
      `spec "${name}"`,
      `its parameters and buffers hold ${total.toExponential(3)} elements together; at most 2^29 - 1 (2 GiB of float32, the most one ONNX model file can carry)`,
      { expected: `<= ${MAX_MODEL_ELEMENTS}`, actual: total },
    );
  }
}

function methodRef(where: string, raw: unknown, whIds: Set<string>) {
  if (!isObj(raw))
    fail(
      'SPEC_MISSING_FIELD',
      where,
      `field "method" must be an object like {"kind": "kw", "warehouse": "stage0"}, found ${describeValue(raw)}`,
    );
  const method = typeof raw.kind === 'string' ? METHODS.get(raw.kind) : undefined;
  if (!method) {
    fail(
      'SPEC_UNKNOWN_METHOD',
      where,
      `method.kind ${describeValue(raw.kind)} is not a known method; known: ${[...METHODS.keys()].join(', ')}`,
    );
  }
  return method.normalize(where, raw, { warehouses: whIds });
}
