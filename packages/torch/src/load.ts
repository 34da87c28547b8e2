/**
 * One entry point from a file's bytes to checked weights for a spec: a .pth checkpoint (bare
 * state_dict, training checkpoint dict, DDP prefix) or a safetensors file in the official or the
 * project's own naming, with an account of what was read and what was left.
 */
import {
  checkWeights,
  describeValue,
  importOfficialStateDict,
  KwError,
  loadWeights,
  readSafetensors,
  type StoredTensor,
  type WeightMap,
} from '@kernelwarehouse/core';
import {
  booleanOption,
  bytesArgument,
  choiceOption,
  optionsObject,
  stringOption,
} from './options.js';
import { readPth } from './pth.js';
import { extractStateDict, stripModulePrefix } from './state-dict.js';
import { looksLikeZip } from './zip.js';

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** Take `model_ema` instead of `model` from a training checkpoint (.pth only). */
  ema?: boolean;
  /** Take this checkpoint key (overrides `ema`). */
  key?: string;
  /**
   * The container, when known from the file name (`.pth`, `.pt`, `.ckpt` -> `'pth'`): a file
   * that is not one then fails as such (PTH_FORMAT) instead of as the other. Default: detected.
   */
  format?: 'pth' | 'safetensors';
}

/** The container a file name suggests: `.pth`, `.pt`, `.ckpt`, `.tar` -> pth; `.safetensors`. */
export function formatFromName(name: string): 'pth' | 'safetensors' | undefined {
  if (typeof name !== 'string')
    throw new KwError(
      'ARGUMENT_INVALID',
      `formatFromName name must be a string, found ${describeValue(name)}`,
    );
  if (/\.(pth|pt|ckpt|tar)$/i.test(name)) return 'pth';
  if (/\.safetensors$/i.test(name)) return 'safetensors';
  return undefined;
}

/** What {@link loadCheckpoint} read. */
export interface CheckpointReport {
  /** Container: a torch.save zip or a safetensors file. */
  format: 'pth' | 'safetensors';
  /** Naming detected: the official PyTorch state_dict names, or this project's names. */
  naming: 'official' | 'project';
  /** Checkpoint key the state_dict came from (`model`, `model_ema`), or null. */
  key: string | null;
  /** Prefix stripped from every name (`module.`), or null. */
  strippedPrefix: string | null;
  /** Tensors loaded into the spec. */
  loaded: number;
  /** Tensors in the file not needed by the spec's weights (`num_batches_tracked` counters). */
  dropped: string[];
  /** Top-level checkpoint entries not used, each `name (what)`. */
  skipped: string[];
  /** Non-tensor entries inside the state_dict, each `name (what)`. */
  nonTensors: string[];
  /** Globals that became inert placeholders (argparse.Namespace, ...), with counts. */
  placeholders: Map<string, number>;
}

/** Which naming a set of tensor names uses: our metadata, or official-only names, decide. */
export function detectNaming(
  names: Iterable<string>,
  metadata: Record<string, string> = {},
): 'official' | 'project' {
  const meta = optionsObject('detectNaming metadata', metadata);
  if (
    names === null ||
    typeof (names as { [Symbol.iterator]?: unknown })?.[Symbol.iterator] !== 'function'
  )
    throw new KwError(
      'ARGUMENT_INVALID',
      `detectNaming names must be an iterable of strings, found ${describeValue(names)}`,
    );
  if (meta.format === 'kernelwarehouse.js') return 'project';
  const list = [...names];
  if (list.some((n) => n.startsWith('warehouse_manager.') || n.endsWith('.num_batches_tracked')))
    return 'official';
  if (list.some((n) => n.startsWith('warehouses.'))) return 'project';
  // names equal in both namings (plain models) count as official, so the stem guard applies
  return 'official';
}

/**
 * Read `bytes` (a .pth checkpoint or a safetensors file) as checked weights for `spec`. Official
 * names are mapped through core's table (`importOfficialStateDict`, which refuses small-input
 * stems with WEIGHTS_STEM); project names load as they are.
 *
 * @example
 * const { weights, report } = loadCheckpoint(spec, bytes, { ema: true });
 * console.log(report.key, report.loaded, report.skipped);
 */
export function loadCheckpoint(
  spec: unknown,
  bytes: Uint8Array,
  options: LoadCheckpointOptions = {},
): { weights: WeightMap; report: CheckpointReport } {
  bytesArgument('loadCheckpoint bytes', bytes);
  const opts = optionsObject('loadCheckpoint options', options);
  const ema = booleanOption('loadCheckpoint options.ema', opts.ema);
  const format = choiceOption('loadCheckpoint options.format', opts.format, [
    'pth',
    'safetensors',
  ] as const);
  const key =
    stringOption('loadCheckpoint options.key', opts.key) ?? (ema ? 'model_ema' : undefined);
  const pth =
    format === 'pth' ||
    (format === undefined &&
      (looksLikeZip(bytes) || (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1]! <= 5)));
  if (pth) {
    const file = readPth(bytes);
    const sd = extractStateDict(file.root, key === undefined ? {} : { key });
    const naming = detectNaming(sd.tensors.keys());
    const { weights, dropped } = toWeights(spec, sd.tensors, naming);
    return {
      weights,
      report: {
        format: 'pth',
        naming,
        key: sd.key,
        strippedPrefix: sd.strippedPrefix,
        loaded: weights.size,
        dropped,
        skipped: sd.skipped,
        nonTensors: sd.nonTensors,
        placeholders: file.placeholders,
      },
    };
  }
  if (key !== undefined) {
    const option = opts.key === undefined ? 'ema' : 'key';
    throw new KwError(
      'ARGUMENT_INVALID',
      `a safetensors file holds one state_dict; the key "${key}" (options.${option}; kw's --${option}) picks an entry of a .pth training checkpoint`,
    );
  }
  const file = readSafetensors(bytes);
  const naming = detectNaming(file.tensors.keys(), file.metadata);
  if (naming === 'project') {
    const weights = loadWeights(spec, bytes);
    return {
      weights,
      report: {
        format: 'safetensors',
        naming,
        key: null,
        strippedPrefix: null,
        loaded: weights.size,
        dropped: [...file.tensors.keys()].filter((n) => !weights.has(n)),
        skipped: [],
        nonTensors: [],
        placeholders: new Map(),
      },
    };
  }
  const stripped = stripModulePrefix(file.tensors);
  const { weights, dropped } = toWeights(spec, stripped.tensors, naming);
  return {
    weights,
    report: {
      format: 'safetensors',
      naming,
      key: null,
      strippedPrefix: stripped.prefix,
      loaded: weights.size,
      dropped,
      skipped: [],
      nonTensors: [],
      placeholders: new Map(),
    },
  };
}

function toWeights(
  spec: unknown,
  tensors: Map<string, StoredTensor>,
  naming: 'official' | 'project',
): { weights: WeightMap; dropped: string[] } {
  const dropped = [...tensors.keys()].filter((n) => n.endsWith('.num_batches_tracked'));
  if (naming === 'official') return { weights: importOfficialStateDict(spec, tensors), dropped };
  // project names inside a .pth (rare): floats to float32, checked against the spec
  const weights: WeightMap = new Map();
  for (const [name, t] of tensors) {
    if (name.endsWith('.num_batches_tracked')) continue;
    if (!(t.data instanceof Float32Array || t.data instanceof Float64Array))
      throw new KwError('WEIGHTS_DTYPE', `tensor "${name}" is ${t.dtype}, not floating point`);
    weights.set(name, { shape: [...t.shape], data: Float32Array.from(t.data) });
  }
  checkWeights(spec, weights);
  return { weights, dropped };
}
