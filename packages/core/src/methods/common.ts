/**
 * Shared helpers of the dynamic-method modules: settings parsing with errors that name the
 * node and field, parameter declarations, MACs and the kernel-mixture forward.
 * See peers.md §0 for notation.
 */

import { type InitRule, type ParamDecl, paramDecl } from '../decl.js';
import { describeValue, KwError } from '../errors.js';
import type { ConvAttrs, Ops } from '../ops/seam.js';
import type { ConvGeometry, Pair } from '../spec/types.js';
import type { DynamicNode } from './types.js';

/** Read an integer setting `>= min` (default `def`); throws SPEC_BAD_FIELD naming node and field. */
export function intSetting(
  where: string,
  raw: Record<string, unknown>,
  field: string,
  def: number,
  min: number,
): number {
  const v = raw[field] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `${where}: field "method.${field}" must be an integer >= ${min}, found ${describeValue(v)}`,
      { field: `method.${field}`, expected: `integer >= ${min}`, actual: v },
    );
  }
  return v;
}

/** Read a finite number setting `> 0` (default `def`); throws SPEC_BAD_FIELD naming node and field. */
export function posSetting(
  where: string,
  raw: Record<string, unknown>,
  field: string,
  def: number,
): number {
  const v = raw[field] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `${where}: field "method.${field}" must be a finite number > 0, found ${describeValue(v)}`,
      { field: `method.${field}`, expected: 'number > 0', actual: v },
    );
  }
  return v;
}

/**
 * Smallest softmax / sigmoid temperature DY-Conv and ODConv accept (`method.temperature`, and the
 * run-time override a trainer anneals). The official schedules anneal 30 -> 1 (ODConv
 * `utils/misc.py`, the DY-Conv paper; the unofficial DY-Conv code 34 -> 1, peers.md §3-4) and run
 * inference at 1, so every legitimate value is >= 1; 1e-3 leaves three decades below that for
 * sharper experiments while `logit / tau` stays finite: float32 logits are below 3.4e38, so the
 * quotient stays below 3.4e41 in float64 (the reference executor) and could overflow float32 (tfjs,
 * ONNX) only for logits above 3.4e35. A tiny tau (5e-324, 1e-310) sent the logits to +-Infinity and
 * the attention to NaN.
 */
export const MIN_METHOD_TEMPERATURE = 1e-3;

/** True for a usable DY-Conv / ODConv temperature: finite and >= {@link MIN_METHOD_TEMPERATURE}. */
const isMethodTemperature = (v: unknown): v is number =>
  typeof v === 'number' && Number.isFinite(v) && v >= MIN_METHOD_TEMPERATURE;

/** Read a method's temperature setting (finite, >= {@link MIN_METHOD_TEMPERATURE}); SPEC_BAD_FIELD naming node and field. */
export function temperatureSetting(
  where: string,
  raw: Record<string, unknown>,
  field = 'temperature',
  def = 1,
): number {
  const v = raw[field] ?? def;
  if (!isMethodTemperature(v)) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `${where}: field "method.${field}" must be a finite number >= ${MIN_METHOD_TEMPERATURE} (the official schedules anneal 30 -> 1), found ${describeValue(v)}`,
      { field: `method.${field}`, expected: `number >= ${MIN_METHOD_TEMPERATURE}`, actual: v },
    );
  }
  return v;
}

/**
 * Check a run-time method temperature (the override a trainer anneals 30 -> 1) with the rule of
 * `temperatureSetting`; ARGUMENT_INVALID naming `where` and the value.
 */
export function checkMethodTemperature(where: string, tau: unknown): number {
  if (!isMethodTemperature(tau)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${where}: method temperature must be a finite number >= ${MIN_METHOD_TEMPERATURE} (the official schedules anneal 30 -> 1), found ${describeValue(tau)}`,
      { field: 'methodTemperature', expected: `number >= ${MIN_METHOD_TEMPERATURE}`, actual: tau },
    );
  }
  return tau;
}

/** The temperature a DY-Conv / ODConv forward runs at: the run-time override, checked, or the node's setting. */
export function forwardTemperature(
  node: { id: string },
  setting: number,
  override: number | undefined,
): number {
  return override === undefined ? setting : checkMethodTemperature(`node "${node.id}"`, override);
}

/** Reject settings the method does not know (typos must not pass silently). */
export function rejectUnknown(where: string, raw: Record<string, unknown>, known: string[]): void {
  for (const k of Object.keys(raw)) {
    // a setting written as null is not "left out": `x ?? default` would take the default silently
    if (k !== 'kind' && known.includes(k) && raw[k] === null) {
      throw new KwError(
        'SPEC_BAD_FIELD',
        `${where}: setting "method.${k}" is null; leave it out for its default or give a value`,
        { field: `method.${k}`, actual: null },
      );
    }
    if (k !== 'kind' && !known.includes(k)) {
      throw new KwError(
        'SPEC_BAD_FIELD',
        `${where}: method "${String(raw.kind)}" has no setting "${k}"; known: ${known.join(', ')}`,
        { field: `method.${k}` },
      );
    }
  }
}

/** Throw unless the node is a dynamicConv2d (methods that only make conv kernels). */
export function requireConv(node: DynamicNode, kind: string): ConvGeometry {
  if (node.op !== 'dynamicConv2d') {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `node "${node.id}": method "${kind}" applies to dynamicConv2d only, found op "${node.op}"`,
      { field: 'method.kind' },
    );
  }
  return node;
}

/** A parameter declaration with a name relative to the node (see params.ts). */
export function decl(
  name: string,
  shape: number[],
  init: InitRule,
  role: 'param' | 'buffer' = 'param',
): ParamDecl {
  return paramDecl(undefined, name, shape, init, role);
}

/** Per-image conv MACs `f·(c/g)·kh·kw·Ho·Wo`. */
export function convMacs(g: ConvGeometry, c: number, outShape: readonly number[]): number {
  const [kh, kw] = g.kernelSize;
  return ((g.outChannels * c) / g.groups) * kh * kw * (outShape[1] ?? 1) * (outShape[2] ?? 1);
}

/** The seam's conv attributes of a conv node. */
export function convAttrs(g: ConvGeometry): ConvAttrs & { outChannels: number; kernelSize: Pair } {
  return {
    stride: g.stride,
    padding: g.padding,
    dilation: g.dilation,
    groups: g.groups,
    outChannels: g.outChannels,
    kernelSize: g.kernelSize,
  };
}

/**
 * Forward of a mixture of whole kernels (CondConv experts, DY-Conv kernels): per sample,
 * `W_b = sum_i r[b, i] * W_i` (and the same for the biases), then a per-sample convolution.
 * `r` holds `[N, count]` mixture weights.
 */
export function mixtureForward<T>(ops: Ops<T>, x: T, g: ConvGeometry, r: T, count: number): T {
  const kernels = ops.matMul(r, ops.reshape(ops.param('weight'), [count, -1]));
  const bias = g.bias ? { perSample: ops.matMul(r, ops.param('bias')) } : undefined;
  return ops.perSampleConv(x, kernels, convAttrs(g), bias);
}
