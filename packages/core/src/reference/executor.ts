/**
 * The reference executor: runs any spec + weights on Float32Array NCHW. Slow on purpose:
 * clarity and exactness. It is the ground truth every backend is tested against.
 */
import { KwError } from '../errors.js';
import { METHODS } from '../methods/registry.js';
import { ReferenceOps } from '../ops/reference.js';
import { layerContext, paramTable } from '../params.js';
import type { NodeSpec } from '../spec/types.js';
import { INPUT } from '../spec/types.js';
import type { Tensor, WeightMap } from '../tensor.js';
import { checkWeights } from '../weights/check.js';
import {
  add,
  batchNorm,
  channelMeans,
  channelScale,
  conv2d,
  gelu,
  layerNormChannels,
  linear,
  map,
  mulBroadcast,
  pool2d,
  relu,
  relu6,
  sigmoid,
} from './ops.js';

/** Options of {@link runReference}. */
export interface RunOptions {
  /** 'inference' (default) uses BatchNorm running stats; 'train' uses batch statistics. */
  mode?: 'inference' | 'train';
  /** Temperature of every dynamic layer (KW tau in [0, 1]). Default 0 (inference). */
  temperature?: number;
  /** Extra node ids whose outputs to return as well (for debugging and adapter tests). */
  capture?: string[];
  /** Skip the weight check (when the caller already checked the same map). Default false. */
  trustedWeights?: boolean;
}

/**
 * Run a spec on a batch. `input` is `[N, ...spec.inputShape]`. Returns the outputs named in
 * `spec.outputs` (and `capture`) by node id.
 *
 * @example
 * const out = runReference(spec, initWeights(spec), tensor([1, 3, 32, 32], data));
 * const logits = out.get(spec.outputs[0]);
 */
export function runReference(
  spec: unknown,
  weights: WeightMap,
  input: Tensor,
  options: RunOptions = {},
): Map<string, Tensor> {
  const table = paramTable(spec);
  const { spec: s, byId } = table.analyzed;
  const mode = options.mode ?? 'inference';
  if (mode !== 'inference' && mode !== 'train') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `mode must be "inference" or "train", found ${String(mode)}`,
    );
  }
  const tau = options.temperature ?? 0;
  if (!(tau >= 0 && tau <= 1) && s.warehouses.length > 0) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `temperature must be in [0, 1] for KernelWarehouse layers, found ${tau}`,
    );
  }
  if (!options.trustedWeights) checkWeights(s, weights);
  checkInput(s.inputShape, input);
  for (const id of options.capture ?? []) {
    if (!byId.has(id))
      throw new KwError(
        'ARGUMENT_INVALID',
        `capture names "${id}", which is not a node of spec "${s.name}"`,
      );
  }

  // free activations after their last use
  const lastUse = new Map<string, number>();
  s.nodes.forEach((n, i) => {
    for (const src of n.inputs) lastUse.set(src, i);
  });
  const keep = new Set([...s.outputs, ...(options.capture ?? [])]);
  const acts = new Map<string, Tensor>([[INPUT, input]]);
  s.nodes.forEach((node, i) => {
    const xs = node.inputs.map((id) => acts.get(id)!);
    acts.set(node.id, runNode(node, xs, weights, table, mode, tau));
    for (const src of node.inputs)
      if (lastUse.get(src) === i && !keep.has(src) && src !== INPUT) acts.delete(src);
  });
  const out = new Map<string, Tensor>();
  for (const id of keep) out.set(id, acts.get(id)!);
  return out;
}

function checkInput(inputShape: number[], input: Tensor): void {
  if (!input || !(input.data instanceof Float32Array) || !Array.isArray(input.shape)) {
    throw new KwError(
      'TENSOR_DTYPE',
      'input must be a Tensor { shape: number[], data: Float32Array }',
    );
  }
  const ok =
    input.shape.length === inputShape.length + 1 &&
    Number.isInteger(input.shape[0]) &&
    input.shape[0]! >= 1 &&
    inputShape.every((d, i) => input.shape[i + 1] === d);
  if (!ok) {
    throw new KwError(
      'TENSOR_SHAPE',
      `input: expected shape [N, ${inputShape.join(', ')}] with N >= 1, found [${input.shape.join(', ')}]`,
      {
        expected: ['N', ...inputShape],
        actual: [...input.shape],
      },
    );
  }
  if (input.data.length !== input.shape.reduce((a, b) => a * b, 1)) {
    throw new KwError(
      'TENSOR_SHAPE',
      `input: shape [${input.shape.join(', ')}] does not match ${input.data.length} values`,
    );
  }
  for (let i = 0; i < input.data.length; i++) {
    if (!Number.isFinite(input.data[i]!))
      throw new KwError('TENSOR_NOT_FINITE', `input: element ${i} is ${input.data[i]}`);
  }
}

function runNode(
  node: NodeSpec,
  xs: Tensor[],
  weights: WeightMap,
  table: ReturnType<typeof paramTable>,
  mode: 'inference' | 'train',
  tau: number,
): Tensor {
  const w = (name: string) => weights.get(`${node.id}.${name}`)!;
  const x = xs[0]!;
  switch (node.op) {
    case 'conv2d':
      return conv2d(x, w('weight'), node.bias ? w('bias') : undefined, node);
    case 'linear':
      return linear(x, w('weight'), node.bias ? w('bias') : undefined);
    case 'batchNorm':
      return batchNorm(
        x,
        w('weight'),
        w('bias'),
        w('running_mean'),
        w('running_var'),
        node.eps,
        mode,
        `node "${node.id}"`,
      );
    case 'layerNorm':
      return layerNormChannels(x, w('weight'), w('bias'), node.eps);
    case 'relu':
      return map(x, relu);
    case 'relu6':
      return map(x, relu6);
    case 'gelu':
      return map(x, gelu);
    case 'sigmoid':
      return map(x, sigmoid);
    case 'add':
      return add(xs);
    case 'mul':
      return xs.length === 2 ? mulBroadcast(x, xs[1]!) : channelScale(x, w('gamma'));
    case 'maxPool':
      return pool2d(x, 'max', node.kernelSize, node.stride, node.padding);
    case 'avgPool':
      return pool2d(x, 'avg', node.kernelSize, node.stride, node.padding);
    case 'globalAvgPool':
      return { shape: [x.shape[0]!, x.shape[1]!, 1, 1], data: channelMeans(x) };
    case 'flatten':
      return { shape: [x.shape[0]!, x.data.length / x.shape[0]!], data: x.data };
    case 'dropout':
    case 'identity':
      return x;
    case 'dynamicConv2d':
    case 'dynamicLinear': {
      const ops = new ReferenceOps({
        param: (name) => weights.get(`${node.id}.${name}`),
        shared: (name) => weights.get(name),
        training: mode === 'train',
        where: `node "${node.id}"`,
      });
      return METHODS.get(node.method.kind)!.forward(ops, x, {
        ...layerContext(table, node),
        outShape: table.analyzed.shapes.get(node.id)!,
        temperature: tau,
        methodTemperature: undefined,
      });
    }
  }
}
