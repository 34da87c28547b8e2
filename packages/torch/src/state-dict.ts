/**
 * Finding the model's weights in what a checkpoint holds: a bare state_dict, or a training
 * checkpoint dict (the official KernelWarehouse `save_model` writes `model`, `model_ema`,
 * `optimizer`, `epoch`, `scaler`, `args`), with or without the DDP `module.` prefix.
 */
import { KwError, type StoredTensor } from '@kernelwarehouse/core';
import { optionsObject, stringOption } from './options.js';
import { PickleObject, typeName } from './pickle.js';
import { TorchTensor, UnreadTensor } from './pth.js';

/** Options of {@link extractStateDict}. */
export interface ExtractOptions {
  /**
   * The checkpoint key holding the state_dict (`'model'`, `'model_ema'`, ...). Default: the
   * root itself when it is a state_dict, else the first of `model`, `state_dict`,
   * `model_state_dict` present.
   */
  key?: string;
}

/** The state_dict and an account of what was taken and what was left. */
export interface ExtractedStateDict {
  /** Tensors by name (prefix stripped). */
  tensors: Map<string, StoredTensor>;
  /** The checkpoint key they came from, or null for a bare state_dict. */
  key: string | null;
  /** The prefix removed from every name (`module.` for DDP checkpoints), or null. */
  strippedPrefix: string | null;
  /** Top-level checkpoint entries not used, each as `name (what it is)`. */
  skipped: string[];
  /** Entries inside the state_dict that are not tensors (ignored), each as `name (what)`. */
  nonTensors: string[];
}

/** Keys that hold the model's state_dict in common checkpoint layouts, in order of preference. */
export const STATE_DICT_KEYS = ['model', 'state_dict', 'model_state_dict'] as const;

const isStateDict = (v: unknown): v is Map<unknown, unknown> =>
  v instanceof Map &&
  v.size > 0 &&
  [...v.values()].some((x) => x instanceof TorchTensor || x instanceof UnreadTensor);

/**
 * True for an inert pickled nn.Module: a torch.nn class, or any object whose state has the
 * `_parameters` / `_modules` of a Module (models of a project's own classes).
 */
const isModuleObject = (v: unknown): v is PickleObject =>
  v instanceof PickleObject &&
  (v.global.module.startsWith('torch.nn.') ||
    (v.state instanceof Map && (v.state.has('_parameters') || v.state.has('_modules'))));

const MODULE_HINT =
  'a whole pickled nn.Module is not read: save model.state_dict() with torch.save';

/** One line describing a value: `dict of 12`, `int 300`, `argparse.Namespace object`. */
export function describe(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean')
    return `${typeof v === 'bigint' ? 'int' : Number.isInteger(v) ? 'int' : typeof v} ${String(v)}`;
  if (typeof v === 'string')
    return `str ${JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v)}`;
  if (v instanceof TorchTensor) return `tensor ${v.dtype} [${v.shape.join(', ')}]`;
  if (v instanceof UnreadTensor) return `${v.what.replace(/^an? /, '')}, not read`;
  if (v instanceof Map) return `dict of ${v.size}`;
  if (Array.isArray(v)) return `${typeName(v)} of ${v.length}`;
  if (v instanceof PickleObject) return `${v.global.qualified} object, not constructed`;
  return typeName(v);
}

/** A root that is itself a state_dict: tensors at the top level, no nested dicts. */
function isBareStateDict(root: Map<unknown, unknown>): boolean {
  return [...root.values()].every((v) => !(v instanceof Map)) && isStateDict(root);
}

/**
 * Take the state_dict out of an unpickled checkpoint. Throws PTH_NO_STATE_DICT (listing the keys
 * present) when the asked key is absent or holds no tensors, or the tensors found sit beside a
 * pickled nn.Module (naming its key); PTH_TENSOR naming the tensor when the state_dict holds a
 * tensor that was not read ({@link UnreadTensor}: sparse, meta, an unsupported storage type).
 *
 * @example
 * const { tensors, key, skipped } = extractStateDict(readPth(bytes).root, { key: 'model_ema' });
 */
export function extractStateDict(root: unknown, options: ExtractOptions = {}): ExtractedStateDict {
  const key0 = stringOption(
    'extractStateDict options.key',
    optionsObject('extractStateDict options', options).key,
  );
  if (!(root instanceof Map))
    throw new KwError(
      'PTH_NO_STATE_DICT',
      `the checkpoint holds a ${describe(root)}, not a dict (a whole pickled nn.Module is not read: save model.state_dict())`,
    );
  const keys = [...root.keys()].map((k) => String(k));
  let key: string | null = null;
  let sd: Map<unknown, unknown>;
  if (key0 !== undefined) {
    const v = root.get(key0);
    if (!isStateDict(v)) {
      // a bare state_dict (tensors at the top level) has no entries to pick: say so
      const bare = v === undefined && isBareStateDict(root);
      throw new KwError(
        'PTH_NO_STATE_DICT',
        bare
          ? `the checkpoint is a bare state_dict (${keys.length} tensors at its top level, e.g. ${keys.slice(0, 3).join(', ')}), with no entry "${key0}" to pick: leave the key out (kw: no --key / --ema)`
          : `the checkpoint has no state_dict under "${key0}"${v === undefined ? '' : ` (it holds a ${describe(v)}${isModuleObject(v) ? `; ${MODULE_HINT}` : ''})`}; its keys: ${keys.slice(0, 20).join(', ')}`,
        { key: key0, keys },
      );
    }
    key = key0;
    sd = v;
  } else if (isBareStateDict(root)) {
    // tensors beside a pickled model (`{'model': net, 'best_acc': tensor(93.5)}`) are not the
    // model's state_dict: taking them would lose every weight of the model
    const module = [...root].find(([, v]) => isModuleObject(v));
    if (module)
      throw new KwError(
        'PTH_NO_STATE_DICT',
        `key "${String(module[0])}" holds a pickled nn.Module (${describe(module[1])}) beside the tensors ${[
          ...root,
        ]
          .filter(([, v]) => v instanceof TorchTensor || v instanceof UnreadTensor)
          .slice(0, 5)
          .map(([k]) => `"${String(k)}"`)
          .join(', ')}; ${MODULE_HINT}`,
        { key: String(module[0]), keys },
      );
    sd = root;
  } else {
    const found = STATE_DICT_KEYS.find((k) => isStateDict(root.get(k)));
    if (!found) {
      const module =
        STATE_DICT_KEYS.find((k) => root.get(k) instanceof PickleObject) ??
        [...root.keys()].find((k) => isModuleObject(root.get(k)));
      throw new KwError(
        'PTH_NO_STATE_DICT',
        module !== undefined
          ? `key "${String(module)}" holds a ${describe(root.get(module))} (${MODULE_HINT})`
          : `no state_dict under ${STATE_DICT_KEYS.join(', ')} and the root is not one; its keys: ${keys.slice(0, 20).join(', ')}`,
        module !== undefined ? { key: String(module), keys } : { keys },
      );
    }
    key = found;
    sd = root.get(found) as Map<unknown, unknown>;
  }
  const skipped =
    key === null
      ? []
      : [...root].filter(([k]) => k !== key).map(([k, v]) => `${String(k)} (${describe(v)})`);
  const tensors = new Map<string, StoredTensor>();
  const nonTensors: string[] = [];
  for (const [k, v] of sd) {
    if (v instanceof UnreadTensor)
      throw new KwError(
        'PTH_TENSOR',
        `tensor "${String(k)}"${key === null ? '' : ` (under checkpoint key "${key}")`} is ${v.what}; the reader does not support it: ${v.hint}`,
        { tensor: String(k), key, kind: v.kind },
      );
    if (typeof k === 'string' && v instanceof TorchTensor) tensors.set(k, v);
    else nonTensors.push(`${String(k)} (${describe(v)})`);
  }
  const stripped = stripModulePrefix(tensors);
  return { tensors: stripped.tensors, key, strippedPrefix: stripped.prefix, skipped, nonTensors };
}

/**
 * Remove the `module.` prefix DistributedDataParallel / DataParallel put on every name (only when
 * every name has it).
 */
export function stripModulePrefix<T>(tensors: Map<string, T>): {
  tensors: Map<string, T>;
  prefix: string | null;
} {
  if (!(tensors instanceof Map))
    throw new KwError(
      'ARGUMENT_INVALID',
      `stripModulePrefix tensors must be a Map of name to tensor, found ${typeName(tensors)}`,
    );
  const names = [...tensors.keys()];
  if (names.length === 0 || !names.every((n) => n.startsWith('module.')))
    return { tensors, prefix: null };
  return {
    tensors: new Map([...tensors].map(([k, v]) => [k.slice('module.'.length), v])),
    prefix: 'module.',
  };
}
