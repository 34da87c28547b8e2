import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { initWeights, loadWeights, saveWeights } from '@kernelwarehouse/core';
import { toOnnxWithInfo, tritonConfig } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import { EXPORT_FLAGS } from '../flags.js';
import { readFileBytes, writeFileAtomic } from '../fsio.js';
import { human, type Io, UsageError } from '../io.js';
import { parseModelArgs } from './plan.js';

/**
 * `kw export <model> [--budget B] [--classes N] [--input HxWxC] [--weights w.safetensors | --seed S]
 * [--weights-out w.safetensors] [--temperature T] (--out model.onnx | --triton-repo DIR [--triton-name NAME]
 * [--max-batch 8] [--instances 1])`
 *
 * `--triton-repo` writes a Triton Inference Server model repository entry:
 * `DIR/NAME/1/model.onnx` and `DIR/NAME/config.pbtxt` (onnxruntime backend).
 */
export function exportCommand(args: string[], io: Io): number {
  const { id, budget, classes, width, inputShape, method, values } = parseModelArgs(
    args,
    EXPORT_FLAGS,
  );
  const repo = values['triton-repo'] as string | undefined;
  if (!repo && (values['triton-name'] || values['max-batch'] || values.instances))
    throw new UsageError('--triton-name, --max-batch and --instances need --triton-repo DIR');
  if (repo && values.out) throw new UsageError('give --out or --triton-repo, not both');
  const intFlag = (flag: string, fallback: number, min: number) => {
    const v = values[flag];
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new UsageError(`--${flag} must be an integer >= ${min}; found "${v}"`);
    return n;
  };
  const maxBatch = intFlag('max-batch', 8, 0);
  const instances = intFlag('instances', 1, 1);
  const tritonName = (values['triton-name'] as string | undefined) ?? '';
  if (repo && tritonName && !/^[A-Za-z0-9_.-]+$/.test(tritonName))
    throw new UsageError(
      `--triton-name must be letters, digits, '_', '.', '-'; found "${tritonName}"`,
    );
  if (!values.out && !repo)
    throw new UsageError('--out model.onnx (or --triton-repo DIR) is required');
  if (values.weights && values.seed !== undefined)
    throw new UsageError('give --weights or --seed, not both');
  const seed = values.seed === undefined ? 0 : Number(values.seed);
  if (!Number.isInteger(seed))
    throw new UsageError(`--seed must be an integer; found "${values.seed}"`);
  const temperature = values.temperature === undefined ? 0 : Number(values.temperature);
  if (!(temperature >= 0 && temperature <= 1))
    throw new UsageError(`--temperature must be in [0, 1]; found "${values.temperature}"`);
  const spec = createModel(id, { budget, classes, width, inputShape, method });
  const weights = values.weights
    ? loadWeights(spec, readFileBytes(values.weights as string))
    : initWeights(spec, { seed });
  const ex = toOnnxWithInfo(spec, weights, { temperature });
  const name = tritonName || spec.name.replace(/[^A-Za-z0-9_.-]+/g, '_');
  const out = repo ? join(repo, name, '1', 'model.onnx') : (values.out as string);
  // the config is made (and checked) before anything is written
  const config = repo ? tritonConfig(ex.bytes, { name, maxBatchSize: maxBatch, instances }) : '';
  if (repo) mkdirSync(join(repo, name, '1'), { recursive: true });
  writeFileAtomic(out, ex.bytes);
  if (repo) writeFileAtomic(join(repo, name, 'config.pbtxt'), config);
  if (values['weights-out'])
    writeFileAtomic(values['weights-out'] as string, saveWeights(spec, weights));
  io.out(
    `${out}: ${spec.name}, opset ${ex.opset}, IR ${ex.irVersion}, input ${ex.inputName} [N, ${spec.inputShape.join(', ')}], ` +
      `${Object.values(ex.ops).reduce((a, b) => a + b, 0)} nodes, initializers ${human(ex.initializerBytes, 'B')}, ` +
      `weights ${values.weights ? `from ${values.weights}` : `seeded (${seed})`}${values['weights-out'] ? `, written to ${values['weights-out']}` : ''}\n` +
      (repo
        ? `${join(repo, name, 'config.pbtxt')}: Triton onnxruntime backend, max_batch_size ${maxBatch}, ${instances} instance(s)\n`
        : ''),
  );
  return 0;
}
