/**
 * The one error family of kernelwarehouse.js. Every entry point that takes outside input
 * (a spec, a weights file, a budget, a tensor) throws a {@link KwError} whose `code` says
 * what kind of problem it is and whose message names the place, the expected value and
 * the value found.
 */

/** Stable machine-readable error codes. Documented in docs/errors.md. */
export const KW_ERROR_CODES = [
  // spec
  'SPEC_INVALID',
  'SPEC_VERSION',
  'SPEC_UNKNOWN_OP',
  'SPEC_MISSING_FIELD',
  'SPEC_BAD_FIELD',
  'SPEC_DUPLICATE_ID',
  'SPEC_UNKNOWN_INPUT',
  'SPEC_SHAPE',
  'SPEC_UNKNOWN_WAREHOUSE',
  'SPEC_UNKNOWN_METHOD',
  // plan / budget
  'BUDGET_INVALID',
  'BUDGET_CANNOT_TILE',
  'PLAN_CELL_DOES_NOT_DIVIDE',
  'PLAN_MIXED_DIMENSIONS',
  // weights / files
  'WEIGHTS_MISSING',
  'WEIGHTS_UNEXPECTED',
  'WEIGHTS_SHAPE',
  'WEIGHTS_DTYPE',
  'WEIGHTS_NOT_FINITE',
  'SAFETENSORS_TRUNCATED',
  'SAFETENSORS_HEADER',
  'SAFETENSORS_OFFSETS',
  'SAFETENSORS_DTYPE',
  'WEIGHTS_STEM',
  // PyTorch .pth checkpoints (@kernelwarehouse/torch)
  'PTH_FORMAT',
  'PTH_ZIP',
  'PTH_PICKLE',
  'PTH_UNSAFE_GLOBAL',
  'PTH_LIMIT',
  'PTH_TENSOR',
  'PTH_NO_STATE_DICT',
  // tensors handed to an executor
  'TENSOR_SHAPE',
  'TENSOR_DTYPE',
  'TENSOR_NOT_FINITE',
  // options / arguments
  'ARGUMENT_INVALID',
  // backends
  'BACKEND_UNAVAILABLE',
  'BACKEND_UNSUPPORTED',
  'BACKEND_FAILED',
  // io
  'IO_ERROR',
  'ONNX_INVALID',
  // training data
  'DATA_INVALID',
  'CHECKPOINT_INVALID',
  'TRAIN_JOB_FAILED',
] as const;

/** What each code means and what to do about it (rendered into docs/errors.md). */
export const KW_ERROR_DESCRIPTIONS: Readonly<Record<(typeof KW_ERROR_CODES)[number], string>> = {
  SPEC_INVALID:
    'The spec (or one of its nodes or warehouses) is not an object of the expected form.',
  SPEC_VERSION: "The spec's `specVersion` is not one this release reads.",
  SPEC_UNKNOWN_OP: 'A node names an op that does not exist; the message lists the known ops.',
  SPEC_MISSING_FIELD: 'A required field of a node, warehouse or the spec is absent.',
  SPEC_BAD_FIELD:
    'A field has the wrong type or an out-of-range value (zero or negative sizes, groups that do not divide channels, bad ids, a DY-Conv / ODConv temperature below 1e-3), or the spec, a warehouse or a node has a field the format does not define (a typo such as `strides`; the message lists the accepted fields).',
  SPEC_DUPLICATE_ID: 'Two nodes, two warehouses or two parameter names collide.',
  SPEC_UNKNOWN_INPUT:
    'A node reads a node that is not defined before it (unknown id, forward reference or cycle), or an output names no node.',
  SPEC_SHAPE:
    'Shapes do not fit: a kernel larger than its padded input, a linear layer on images, add inputs of different shapes.',
  SPEC_UNKNOWN_WAREHOUSE:
    'A KW layer names a warehouse the spec does not declare, or a warehouse has no layer.',
  SPEC_UNKNOWN_METHOD: 'A dynamic layer names a method kind that is not registered.',
  BUDGET_INVALID:
    'A budget is not a finite number > 0 with a finite reciprocal (or cannot be parsed, e.g. "1/0x").',
  BUDGET_CANNOT_TILE:
    "The one-to-one initialisation would not use exactly the n = int(b*m_t) cells (the official code's final assertion): b >= 1 must be an integer, b < 1 must be 1/p with every layer's m a multiple of p^2. The message lists budgets that tile.",
  PLAN_CELL_DOES_NOT_DIVIDE:
    "The cell (gcd times the cell ratios) does not divide a member layer's channels; the official code would silently floor.",
  PLAN_MIXED_DIMENSIONS: 'Conv and linear layers were put into one warehouse.',
  BACKEND_UNAVAILABLE:
    'No TensorFlow.js backend could be started, or the one forced by the caller is not installed or did not initialise; the message lists each candidate and why it was skipped.',
  BACKEND_UNSUPPORTED:
    'The active backend cannot run this case (for example a dilated conv gradient on tfjs wasm, which has no kernel for it); the message names the case.',
  BACKEND_FAILED:
    'The backend reported that a kernel failed while it kept running (tfjs wasm prints an XNNPACK failure, most often out of memory, and leaves the output uncomputed); the results since the last check are invalid. Lower the batch size or the model width.',
  WEIGHTS_MISSING: 'A tensor the spec needs is not in the weights.',
  WEIGHTS_UNEXPECTED:
    'The weights hold tensors the spec (or the model) does not declare, or two official state-dict names map to the same weight.',
  WEIGHTS_SHAPE: "A tensor's shape differs from the spec's.",
  WEIGHTS_DTYPE:
    'A tensor is not float32 where float32 is needed (or its dtype cannot be converted).',
  WEIGHTS_NOT_FINITE:
    'A weight is NaN or infinite, or a BatchNorm running variance is negative (sqrt(var + eps) would be NaN).',
  SAFETENSORS_TRUNCATED: 'The file ends before its header or data does.',
  SAFETENSORS_HEADER:
    'The safetensors header is not valid JSON of the expected form: a key given twice, JSON nested deeper than 64 levels, or an absurd length.',
  SAFETENSORS_OFFSETS:
    'Tensor byte ranges are out of bounds, overlap, leave gaps, or disagree with dtype and shape.',
  SAFETENSORS_DTYPE: 'A tensor has a dtype this reader does not know.',
  WEIGHTS_STEM:
    'Official (ImageNet-stem) weights were given to a small-input variant: the zoo builds a different stem for inputs of 64 px or less, so the weights would not fit (or, for MobileNetV2, would load into a different network). Use an input of 65 px or more, or keep the input and build the ImageNet stem (`--stem imagenet`, zoo option `stem: "imagenet"`).',
  PTH_FORMAT:
    'The file is not a zip-format torch.save checkpoint: the legacy (pre-1.6, `_use_new_zipfile_serialization=False`) format, a TorchScript archive, or not a PyTorch file at all. Re-save it with a current `torch.save`, or export a safetensors file.',
  PTH_ZIP:
    'The zip container is damaged or hostile: a record out of bounds, sizes that disagree, overlapping entries, a compressed or encrypted entry (torch.save stores entries uncompressed), or a duplicate name.',
  PTH_PICKLE:
    'The pickle stream is malformed: an opcode this restricted reader does not know, a truncated argument, a stack or memo reference that does not exist.',
  PTH_UNSAFE_GLOBAL:
    'The pickle names a global that runs code or touches the system (`os.system`, `builtins.eval`, `subprocess.*`, ...). Nothing was executed; the file is refused.',
  PTH_LIMIT:
    'The pickle exceeds a safety bound (stack depth, nesting, memo size, string length or the bytes tensors would materialize); the message names the bound.',
  PTH_TENSOR:
    'A tensor cannot be read: it does not fit its storage (a storage shorter than its elements, sizes, strides and offset that reach outside it or past 2^53), or a tensor of the chosen state dict is sparse, meta, quantized or on an unsupported storage type (complex); the message names the tensor.',
  PTH_NO_STATE_DICT:
    'No state_dict of tensors was found where asked (for example `--ema` on a checkpoint without `model_ema`); the message lists the keys present.',
  TENSOR_SHAPE: 'A tensor handed to an executor or adapter has the wrong rank, channels or size.',
  TENSOR_DTYPE: 'A tensor handed to an executor or adapter is not a Float32Array tensor.',
  TENSOR_NOT_FINITE:
    "An input tensor holds NaN or infinity, or a training step's loss is not finite (the step is not applied).",
  ARGUMENT_INVALID:
    'An option or argument is out of range (temperature outside [0, 1], bad mode, unknown capture id, ...).',
  IO_ERROR:
    'Reading or writing a file failed: a missing file, a path that is not a regular file (a device, a FIFO, a folder), a file larger than its format allows, a gzip file that is corrupt or inflates past what its header needs, a full disk, a read-only file system, no permission, a file where a folder should be. The message names the path and the reason; when a command writes several files, none is left behind.',
  ONNX_INVALID:
    'Bytes given as an ONNX model are truncated or not an ONNX ModelProto (a varint above 2^64, a length past the end, an unknown wire type).',
  DATA_INVALID:
    'A data set does not fit a classification task: labels must be 0..K-1 with K >= 2 and every class present in the training set, and the test set may only use those classes. The message names the file, the index and the label.',
  CHECKPOINT_INVALID:
    "A training checkpoint's manifest was modified after it was written (its content no longer matches its own SHA-256), has a version this release does not read, names a file outside the checkpoint folder, or belongs to a different training setting; nothing is resumed from it.",
  TRAIN_JOB_FAILED:
    'A child process of `kw train --jobs N` (one method and seed) exited with an error or crashed; the message names the job, its exit status and the end of its stderr. The other jobs were stopped (each writes a checkpoint first), no report was written, and `kw train --resume RUN_DIR` continues the finished and unfinished jobs.',
};

/** One of {@link KW_ERROR_CODES}. */
export type KwErrorCode = (typeof KW_ERROR_CODES)[number];

/** The error every kernelwarehouse.js package throws for bad input. */
export class KwError extends Error {
  /** Machine-readable category, stable across releases. */
  readonly code: KwErrorCode;
  /** Optional structured details (the node id, the field, expected, actual). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: KwErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(`[${code}] ${message}`);
    this.name = 'KwError';
    this.code = code;
    this.details = details;
  }
}

/** True when `e` is a {@link KwError} (optionally with the given code). */
export function isKwError(e: unknown, code?: KwErrorCode): e is KwError {
  return e instanceof KwError && (code === undefined || e.code === code);
}

/** Short, bounded rendering of a value for error messages. */
export function describeValue(v: unknown): string {
  let s: string;
  if (typeof v === 'number') s = Number.isNaN(v) ? 'NaN' : String(v);
  else if (typeof v === 'string') s = JSON.stringify(v);
  else if (v === undefined) s = 'undefined';
  else s = boundedJson(v, 121);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/**
 * JSON-like text of `v`, stopping once `limit` characters are written. Iterative, so a value
 * nested 10^5 deep (a hostile file header) renders its first characters instead of overflowing
 * the stack as `JSON.stringify` does; cycles print as `[Circular]`.
 */
export function boundedJson(v: unknown, limit = 120): string {
  let out = '';
  // a stack of things still to print: a value, or a literal piece of text
  const todo: ({ text: string; closes?: object } | { value: unknown; key?: string })[] = [
    { value: v },
  ];
  // the objects being printed (a value met again inside itself is a cycle)
  const open = new Set<object>();
  while (todo.length && out.length < limit) {
    const t = todo.pop()!;
    if ('text' in t) {
      out += t.text;
      if (t.closes) open.delete(t.closes);
      continue;
    }
    if (t.key !== undefined) out += `${JSON.stringify(t.key)}:`;
    const x = t.value;
    if (x === null || typeof x === 'boolean') out += String(x);
    else if (typeof x === 'number') out += Number.isFinite(x) ? String(x) : 'null';
    else if (typeof x === 'string') out += JSON.stringify(x.length > limit ? x.slice(0, limit) : x);
    else if (typeof x === 'bigint') out += `${x}n`;
    else if (typeof x !== 'object') out += String(x);
    else if (open.has(x)) out += '"[Circular]"';
    else if (ArrayBuffer.isView(x)) out += `${Object.prototype.toString.call(x)}`;
    else {
      const isArr = Array.isArray(x);
      const entries: [string | undefined, unknown][] = isArr
        ? (x as unknown[]).slice(0, limit).map((e) => [undefined, e])
        : Object.keys(x)
            .slice(0, limit)
            .map((k) => [k, (x as Record<string, unknown>)[k]]);
      out += isArr ? '[' : '{';
      open.add(x);
      todo.push({ text: isArr ? ']' : '}', closes: x });
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, e] = entries[i]!;
        todo.push({ value: e, key: k });
        if (i > 0) todo.push({ text: ',' });
      }
    }
  }
  return todo.length ? `${out}...` : out;
}
