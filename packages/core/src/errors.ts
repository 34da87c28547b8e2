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
  // io
  'IO_ERROR',
  'ONNX_INVALID',
] as const;

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
