/**
 * Triton Inference Server model configuration (`config.pbtxt`) for an exported ONNX model,
 * served by Triton's onnxruntime backend.
 */
import { KwError } from '@kernelwarehouse/core';
import { type OnnxInfo, onnxInfo, type ValueInfo } from './info.js';

/** Options of {@link tritonConfig}. */
export interface TritonConfigOptions {
  /** Model name: must equal the model's folder name in the Triton model repository. */
  name: string;
  /**
   * Largest batch Triton may form. Default 8 for a model with a dynamic batch (the default
   * export); must be 0 (no batching by Triton) for a model exported with a fixed `batch`.
   */
  maxBatchSize?: number;
  /** Model instances (default 1); each runs one request at a time. */
  instances?: number;
  /** Where instances run (default `'cpu'`). */
  kind?: 'cpu' | 'gpu';
  /**
   * Dynamic batching (default on when `maxBatchSize > 0`): requests that arrive within
   * `maxQueueDelayMicroseconds` are run as one batch. `false` turns it off.
   */
  dynamicBatching?: false | { maxQueueDelayMicroseconds?: number; preferredBatchSizes?: number[] };
  /** onnxruntime intra-op threads per instance (Triton backend parameter `intra_op_thread_count`). */
  intraOpThreads?: number;
}

const TYPES: Record<number, string> = {
  1: 'TYPE_FP32',
  2: 'TYPE_UINT8',
  3: 'TYPE_INT8',
  5: 'TYPE_INT16',
  6: 'TYPE_INT32',
  7: 'TYPE_INT64',
  9: 'TYPE_BOOL',
  10: 'TYPE_FP16',
  11: 'TYPE_FP64',
  16: 'TYPE_BF16',
};

/**
 * True for a name that can be one folder of a Triton model repository: letters, digits, `_`,
 * `.`, `-`, 1 to 255 characters, and not `.` or `..` (which would name the repository itself or
 * its parent, so files would land outside it).
 */
export function isModelName(name: unknown): name is string {
  return (
    typeof name === 'string' &&
    name.length <= 255 &&
    /^[A-Za-z0-9_.-]+$/.test(name) &&
    name !== '.' &&
    name !== '..'
  );
}

/** A protobuf text-format string literal (quotes, backslashes and control characters escaped). */
const pbString = (s: string) => JSON.stringify(s);

const positiveInt = (v: unknown, what: string, min: number) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `tritonConfig: ${what} must be an integer >= ${min}; found ${String(v)}`,
      { field: what, expected: `integer >= ${min}`, found: v },
    );
  }
  return v;
};

/**
 * Write the `config.pbtxt` that serves an exported model with Triton's onnxruntime backend
 * (`platform: "onnxruntime_onnx"`): inputs and outputs with names, types and dims read from the
 * ONNX bytes, batching, instances and threads. With `maxBatchSize > 0` the first dim of every
 * input and output must be the symbolic batch dim (our default export) and is left out of
 * `dims`, as Triton expects; a fixed-batch export gets `max_batch_size: 0` and full dims.
 *
 * Lay the repository out as `<repo>/<name>/config.pbtxt` and `<repo>/<name>/1/model.onnx`.
 *
 * @example
 * const text = tritonConfig(onnxBytes, { name: 'resnet18_kw1x', maxBatchSize: 16, instances: 2 });
 */
export function tritonConfig(onnx: Uint8Array | OnnxInfo, options: TritonConfigOptions): string {
  const info = onnx instanceof Uint8Array ? onnxInfo(onnx) : onnx;
  if (!isModelName(options?.name)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `tritonConfig: name must be a folder name of letters, digits, '_', '.', '-' (not "." or "..", at most 255 characters); found ${JSON.stringify(String(options?.name)).slice(0, 120)}`,
      { field: 'name', found: options?.name },
    );
  }
  const values = [...info.inputs, ...info.outputs];
  const dynamicBatch = values.every((v) => typeof v.shape[0] === 'string');
  const maxBatch = positiveInt(options.maxBatchSize ?? (dynamicBatch ? 8 : 0), 'maxBatchSize', 0);
  if (maxBatch > 0 && !dynamicBatch) {
    const fixed = values.find((v) => typeof v.shape[0] !== 'string')!;
    throw new KwError(
      'ARGUMENT_INVALID',
      `tritonConfig: maxBatchSize ${maxBatch} needs a dynamic batch dim, but "${fixed.name}" has shape [${fixed.shape.join(', ')}] (exported with a fixed batch?); use maxBatchSize 0`,
      { field: 'maxBatchSize', expected: 0, found: maxBatch },
    );
  }
  const instances = positiveInt(options.instances ?? 1, 'instances', 1);
  const kind = options.kind ?? 'cpu';
  if (kind !== 'cpu' && kind !== 'gpu') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `tritonConfig: kind must be "cpu" or "gpu"; found ${JSON.stringify(kind)}`,
      {
        field: 'kind',
        expected: ['cpu', 'gpu'],
        found: kind,
      },
    );
  }
  const tensor = (v: ValueInfo) => {
    const type = TYPES[v.elemType];
    if (!type) {
      throw new KwError(
        'ONNX_INVALID',
        `tritonConfig: "${v.name}" has ONNX element type ${v.elemType}, which Triton's onnxruntime backend does not take`,
        {
          name: v.name,
          found: v.elemType,
        },
      );
    }
    const dims = (maxBatch > 0 ? v.shape.slice(1) : v.shape).map((d) =>
      typeof d === 'number' ? d : -1,
    );
    return `  {\n    name: ${pbString(v.name)}\n    data_type: ${type}\n    dims: [ ${dims.join(', ')} ]\n  }`;
  };
  const lines = [
    `name: ${pbString(options.name)}`,
    'platform: "onnxruntime_onnx"',
    `max_batch_size: ${maxBatch}`,
    `input [\n${info.inputs.map(tensor).join(',\n')}\n]`,
    `output [\n${info.outputs.map(tensor).join(',\n')}\n]`,
    `instance_group [\n  {\n    count: ${instances}\n    kind: ${kind === 'gpu' ? 'KIND_GPU' : 'KIND_CPU'}\n  }\n]`,
  ];
  const db = options.dynamicBatching ?? {};
  if (maxBatch > 0 && db !== false) {
    const inner: string[] = [];
    if (db.preferredBatchSizes?.length) {
      for (const b of db.preferredBatchSizes) positiveInt(b, 'preferredBatchSizes[]', 1);
      inner.push(`  preferred_batch_size: [ ${db.preferredBatchSizes.join(', ')} ]`);
    }
    inner.push(
      `  max_queue_delay_microseconds: ${positiveInt(db.maxQueueDelayMicroseconds ?? 100, 'maxQueueDelayMicroseconds', 0)}`,
    );
    lines.push(`dynamic_batching {\n${inner.join('\n')}\n}`);
  }
  if (options.intraOpThreads !== undefined) {
    const t = positiveInt(options.intraOpThreads, 'intraOpThreads', 1);
    lines.push(
      `parameters {\n  key: "intra_op_thread_count"\n  value: { string_value: "${t}" }\n}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
