import { initWeights, loadWeights, saveWeights } from '@kernelwarehouse/core';
import { toOnnxWithInfo } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import { readFileBytes, writeFileAtomic } from '../fsio.js';
import { human, type Io, UsageError } from '../io.js';
import { parseModelArgs } from './plan.js';

/**
 * `kw export <model> [--budget B] [--classes N] [--input HxWxC] [--weights w.safetensors | --seed S]
 * [--weights-out w.safetensors] [--temperature T] --out model.onnx`
 */
export function exportCommand(args: string[], io: Io): number {
  const { id, budget, classes, width, inputShape, method, values } = parseModelArgs(args, {
    weights: { type: 'string' },
    seed: { type: 'string' },
    'weights-out': { type: 'string' },
    out: { type: 'string' },
    temperature: { type: 'string' },
  });
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out model.onnx is required');
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
  writeFileAtomic(out, ex.bytes);
  if (values['weights-out'])
    writeFileAtomic(values['weights-out'] as string, saveWeights(spec, weights));
  io.out(
    `${out}: ${spec.name}, opset ${ex.opset}, IR ${ex.irVersion}, input ${ex.inputName} [N, ${spec.inputShape.join(', ')}], ` +
      `${Object.values(ex.ops).reduce((a, b) => a + b, 0)} nodes, initializers ${human(ex.initializerBytes, 'B')}, ` +
      `weights ${values.weights ? `from ${values.weights}` : `seeded (${seed})`}${values['weights-out'] ? `, written to ${values['weights-out']}` : ''}\n`,
  );
  return 0;
}
