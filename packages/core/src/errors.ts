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
  'CHECKPOINT_INVALID',
] as const;

/** What each code means and what to do about it (rendered into docs/errors.md). */
export const KW_ERROR_DESCRIPTIONS: Readonly<Record<(typeof KW_ERROR_CODES)[number], string>> = {
  SPEC_INVALID:
    'The spec (or one of its nodes or warehouses) is not an object of the expected form.',
  SPEC_VERSION: "The spec's `specVersion` is not one this release reads.",
  SPEC_UNKNOWN_OP: 'A node names an op that does not exist; the message lists the known ops.',
  SPEC_MISSING_FIELD: 'A required field of a node, warehouse or the spec is absent.',
  SPEC_BAD_FIELD:
    'A field has the wrong type or an out-of-range value (zero or negative sizes, groups that do not divide channels, bad ids).',
  SPEC_DUPLICATE_ID: 'Two nodes, two warehouses or two parameter names collide.',
  SPEC_UNKNOWN_INPUT:
    'A node reads a node that is not defined before it (unknown id, forward reference or cycle), or an output names no node.',
  SPEC_SHAPE:
    'Shapes do not fit: a kernel larger than its padded input, a linear layer on images, add inputs of different shapes.',
  SPEC_UNKNOWN_WAREHOUSE:
    'A KW layer names a warehouse the spec does not declare, or a warehouse has no layer.',
  SPEC_UNKNOWN_METHOD: 'A dynamic layer names a method kind that is not registered.',
  BUDGET_INVALID: 'A budget is not a finite number > 0 (or cannot be parsed, e.g. "1/0x").',
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
  WEIGHTS_UNEXPECTED: 'The weights hold tensors the spec does not declare.',
  WEIGHTS_SHAPE: "A tensor's shape differs from the spec's.",
  WEIGHTS_DTYPE:
    'A tensor is not float32 where float32 is needed (or its dtype cannot be converted).',
  WEIGHTS_NOT_FINITE: 'A weight is NaN or infinite.',
  SAFETENSORS_TRUNCATED: 'The file ends before its header or data does.',
  SAFETENSORS_HEADER:
    'The safetensors header is not valid JSON of the expected form, or claims an absurd length.',
  SAFETENSORS_OFFSETS:
    'Tensor byte ranges are out of bounds, overlap, leave gaps, or disagree with dtype and shape.',
  SAFETENSORS_DTYPE: 'A tensor has a dtype this reader does not know.',
  TENSOR_SHAPE: 'A tensor handed to an executor or adapter has the wrong rank, channels or size.',
  TENSOR_DTYPE: 'A tensor handed to an executor or adapter is not a Float32Array tensor.',
  TENSOR_NOT_FINITE: 'An input tensor holds NaN or infinity.',
  ARGUMENT_INVALID:
    'An option or argument is out of range (temperature outside [0, 1], bad mode, unknown capture id, ...).',
  IO_ERROR:
    'Reading or writing a file failed (missing file, full disk, read-only folder); nothing half-written is left behind.',
  ONNX_INVALID: 'Bytes given as an ONNX model are truncated or not an ONNX ModelProto.',
  CHECKPOINT_INVALID:
    "A training checkpoint's manifest was modified after it was written (its content no longer matches its own SHA-256), has a version this release does not read, names a file outside the checkpoint folder, or belongs to a different training setting; nothing is resumed from it.",
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
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = Object.prototype.toString.call(v);
    }
  }
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
