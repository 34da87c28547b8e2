import { exportOfficialStateDict, saveWeights, writeSafetensors } from '@kernelwarehouse/core';
import { type CheckpointReport, formatFromName, loadCheckpoint } from '@kernelwarehouse/torch';
import { createModel, type StemOption } from '@kernelwarehouse/zoo';
import { choiceFlag, parseFlags } from '../args.js';
import { CONVERT_FLAGS } from '../flags.js';
import { readFileBytes, writeFileAtomic } from '../fsio.js';
import { type Io, UsageError } from '../io.js';
import { parseModelArgs } from './plan.js';

/** `--stem auto|imagenet|small`, checked. */
export function parseStem(v: unknown): StemOption | undefined {
  return choiceFlag('stem', v, ['auto', 'imagenet', 'small'] as const);
}

/** `--key K` (a checkpoint dict's entry; the parser refuses an empty one), not with `--ema`. */
export function checkpointKey(values: Record<string, unknown>): string | undefined {
  const key = values.key as string | undefined;
  if (key !== undefined && values.ema)
    throw new UsageError('give --ema or --key, not both (--ema is --key model_ema)');
  return key;
}

/** One paragraph saying what a weights file gave: container, naming, key, prefix, what was left. */
export function describeLoad(path: string, r: CheckpointReport): string {
  const parts = [
    `${r.format === 'pth' ? 'torch.save checkpoint' : 'safetensors'}, ${r.naming} names`,
    r.key === null ? (r.format === 'pth' ? 'bare state_dict' : '') : `state_dict "${r.key}"`,
    r.strippedPrefix ? `"${r.strippedPrefix}" stripped` : '',
    `${r.loaded} tensors loaded`,
    r.dropped.length ? `${r.dropped.length} dropped (${summarise(r.dropped)})` : '',
  ].filter(Boolean);
  let s = `weights from ${path}: ${parts.join(', ')}`;
  if (r.skipped.length) s += `; skipped: ${r.skipped.join(', ')}`;
  if (r.nonTensors.length) s += `; non-tensor entries ignored: ${r.nonTensors.join(', ')}`;
  if (r.placeholders.size) s += `; never constructed: ${[...r.placeholders.keys()].join(', ')}`;
  return s;
}

function summarise(names: string[]): string {
  const counters = names.filter((n) => n.endsWith('.num_batches_tracked')).length;
  const other = names.filter((n) => !n.endsWith('.num_batches_tracked'));
  return [
    counters ? `${counters} num_batches_tracked` : '',
    ...other.slice(0, 3),
    other.length > 3 ? '...' : '',
  ]
    .filter(Boolean)
    .join(', ');
}

/**
 * `kw convert <in.pth | in.safetensors> --model M [--budget B] [--classes N] [--input HxWxC]
 * [--width W] [--stem auto|imagenet|small] [--ema] [--to project|official] --out w.safetensors`
 *
 * Reads an official PyTorch checkpoint (or a safetensors file in either naming) for the given
 * zoo model and writes safetensors in this project's names (`--to project`, the default) or in
 * the official state_dict names (`--to official`, with `num_batches_tracked` counters).
 */
export function convertCommand(args: string[], io: Io): number {
  const { values, positionals } = parseFlags(args, CONVERT_FLAGS, { positionals: 1 });
  const input = positionals[0];
  if (!input) throw new UsageError('an input file (.pth or .safetensors) is required');
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  if (!values.model) throw new UsageError('--model M is required (see kw models)');
  if (!values.out) throw new UsageError('--out weights.safetensors is required');
  const to = (values.to as string | undefined) ?? 'project';
  if (to !== 'project' && to !== 'official')
    throw new UsageError(`--to must be project or official; found "${to}"`);
  const modelArgs = [values.model as string];
  for (const k of ['budget', 'classes', 'input', 'width'] as const)
    if (values[k] !== undefined) modelArgs.push(`--${k}`, values[k] as string);
  const { id, budget, classes, width, inputShape } = parseModelArgs(modelArgs);
  const stem = parseStem(values.stem);
  const spec = createModel(id, { budget, classes, width, inputShape, stem });
  const key = checkpointKey(values);
  const { weights, report } = loadCheckpoint(spec, readFileBytes(input), {
    ema: values.ema === true,
    key,
    format: formatFromName(input),
  });
  const out = values.out as string;
  const official = to === 'official' ? exportOfficialStateDict(spec, weights) : null;
  const bytes = official
    ? writeSafetensors(official, { format: 'pt', source: 'kernelwarehouse.js' })
    : saveWeights(spec, weights, { source: `${report.naming} ${report.format}` });
  writeFileAtomic(out, bytes);
  io.out(
    `${describeLoad(input, report)}\n${out}: ${spec.name}, ${official ? official.size : weights.size} tensors in ${to} names\n`,
  );
  return 0;
}
