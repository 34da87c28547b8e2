import { join } from 'node:path';
import { initWeights, saveWeights } from '@kernelwarehouse/core';
import { isModelName, toOnnxWithInfo, tritonConfig } from '@kernelwarehouse/ort-web';
import { formatFromName, loadCheckpoint } from '@kernelwarehouse/torch';
import { createModel } from '@kernelwarehouse/zoo';
import { choiceFlag, numberFlag } from '../args.js';
import { EXPORT_FLAGS } from '../flags.js';
import { type OutputFile, readFileBytes, writeOutputs } from '../fsio.js';
import { human, type Io, UsageError } from '../io.js';
import { checkpointKey, describeLoad, parseStem } from './convert.js';
import { parseModelArgs } from './plan.js';

/**
 * `kw export <model> [--budget B] [--classes N] [--input HxWxC] [--stem auto|imagenet|small]
 * [--weights w.pth|w.safetensors [--ema] | --seed S] [--weights-out w.safetensors] [--temperature T]
 * [--batch N [--threads T]] [--tap-major auto|on|off] [--tap-mixing auto|on|off] [--scan-batch on|off]
 * [--scan-assembly on|off] (--out model.onnx | --triton-repo DIR
 * [--triton-name NAME] [--max-batch 8] [--instances 1])`
 *
 * `--weights` takes a PyTorch `.pth` checkpoint (bare state_dict, or a training checkpoint dict:
 * `model`, or `model_ema` with `--ema`; a DDP `module.` prefix is stripped) or a safetensors file in
 * the official or this project's naming (detected); what was loaded is printed.
 *
 * `--triton-repo` writes a Triton Inference Server model repository entry:
 * `DIR/NAME/1/model.onnx` and `DIR/NAME/config.pbtxt` (onnxruntime backend).
 */
export function exportCommand(args: string[], io: Io): number {
  const { id, budget, classes, width, inputShape, method, values, flags } = parseModelArgs(
    args,
    EXPORT_FLAGS,
  );
  // numeric flags were checked against their ranges in EXPORT_FLAGS when parsed
  const num = (name: string) => numberFlag(flags, EXPORT_FLAGS, name);
  const repo = values['triton-repo'] as string | undefined;
  if (!repo && (values['triton-name'] || values['max-batch'] || values.instances))
    throw new UsageError('--triton-name, --max-batch and --instances need --triton-repo DIR');
  if (repo && values.out) throw new UsageError('give --out or --triton-repo, not both');
  const batch = num('batch');
  const threads = num('threads');
  const tap = choiceFlag('tap-major', values['tap-major'], ['auto', 'on', 'off'] as const);
  const tapMajor = tap === 'on' ? true : tap === 'off' ? false : undefined;
  const mix = choiceFlag('tap-mixing', values['tap-mixing'], ['auto', 'on', 'off'] as const);
  const tapMixing = mix === 'on' ? true : mix === 'off' ? false : undefined;
  const scan = choiceFlag('scan-batch', values['scan-batch'], ['on', 'off'] as const);
  if (scan === 'on' && batch !== undefined)
    throw new UsageError(
      '--scan-batch on needs a dynamic batch: with --batch each per-sample conv is one grouped Conv',
    );
  const scanBatch = scan === 'off' ? false : undefined;
  const assembly = choiceFlag('scan-assembly', values['scan-assembly'], ['on', 'off'] as const);
  if (assembly === 'on' && (batch !== undefined || scan === 'off'))
    throw new UsageError(
      `--scan-assembly on needs the Scan form of a dynamic batch, but ${batch !== undefined ? '--batch fixes the batch' : '--scan-batch is off'}`,
    );
  const scanAssembly = assembly === 'off' ? false : undefined;
  // a fixed-batch model cannot be batched by Triton: max_batch_size 0 unless said otherwise
  const maxBatch = num('max-batch') ?? (batch === undefined ? 8 : 0);
  const instances = num('instances') ?? 1;
  const tritonName = (values['triton-name'] as string | undefined) ?? '';
  if (repo && tritonName && !isModelName(tritonName))
    throw new UsageError(
      `--triton-name must be letters, digits, '_', '.', '-' (not "." or ".."); found ${JSON.stringify(tritonName)}`,
    );
  if (!values.out && !repo)
    throw new UsageError('--out model.onnx (or --triton-repo DIR) is required');
  if (values.weights && values.seed !== undefined)
    throw new UsageError('give --weights or --seed, not both');
  const seed = num('seed') ?? 0;
  const temperature = num('temperature') ?? 0;
  if (values.ema && !values.weights) throw new UsageError('--ema picks model_ema from --weights');
  const key = checkpointKey(values);
  if (key !== undefined && !values.weights)
    throw new UsageError('--key picks a state_dict from --weights');
  const stem = parseStem(values.stem);
  const spec = createModel(id, { budget, classes, width, inputShape, method, stem });
  let loaded = '';
  let weights: ReturnType<typeof initWeights>;
  if (values.weights) {
    const r = loadCheckpoint(spec, readFileBytes(values.weights as string), {
      ema: values.ema === true,
      key,
      format: formatFromName(values.weights as string),
    });
    weights = r.weights;
    loaded = `${describeLoad(values.weights as string, r.report)}\n`;
  } else weights = initWeights(spec, { seed });
  const ex = toOnnxWithInfo(spec, weights, {
    temperature,
    batch,
    threads,
    tapMajor,
    tapMixing,
    scanBatch,
    scanAssembly,
  });
  const derived = spec.name.replace(/[^A-Za-z0-9_.-]+/g, '_');
  // a folder name: never "." or ".." (the repository itself or its parent)
  const name = tritonName || (isModelName(derived) ? derived : `model${derived}`);
  const out = repo ? join(repo, name, '1', 'model.onnx') : (values.out as string);
  // the config is made (and checked) before anything is written
  const config = repo ? tritonConfig(ex.bytes, { name, maxBatchSize: maxBatch, instances }) : '';
  // all outputs or none: every file is made first, then written to temporary files and renamed
  const files: OutputFile[] = [{ path: out, bytes: ex.bytes }];
  if (repo) files.push({ path: join(repo, name, 'config.pbtxt'), bytes: config });
  if (values['weights-out'])
    files.push({ path: values['weights-out'] as string, bytes: saveWeights(spec, weights) });
  writeOutputs(files, repo ? [join(repo, name, '1')] : []);
  io.out(
    `${loaded}${out}: ${spec.name}, opset ${ex.opset}, IR ${ex.irVersion}, input ${ex.inputName} [${batch ?? 'N'}, ${spec.inputShape.join(', ')}], ` +
      `${Object.values(ex.ops).reduce((a, b) => a + b, 0)} nodes, initializers ${human(ex.initializerBytes, 'B')}, ` +
      `weights ${values.weights ? `from ${values.weights}` : `seeded (${seed})`}${values['weights-out'] ? `, written to ${values['weights-out']}` : ''}\n` +
      (repo
        ? `${join(repo, name, 'config.pbtxt')}: Triton onnxruntime backend, max_batch_size ${maxBatch}, ${instances} instance(s)\n`
        : ''),
  );
  return 0;
}
