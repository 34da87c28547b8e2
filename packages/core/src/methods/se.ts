/**
 * Squeeze-and-Excitation (peers.md §1.1): `u ⊙ σ(W2·ReLU(W1·GAP(u) + b1) + b2)`.
 *
 * SE is a block, not a conv kernel, and every op it needs already exists in the spec
 * (globalAvgPool, 1×1 conv2d with bias, relu, sigmoid, two-input broadcasting mul). So it is
 * a spec-builder helper rather than a dynamic method: every backend that runs a spec runs SE
 * with no new code, weights load by plain names, and the parameter count falls out of the
 * ordinary conv/bias declarations.
 */
import { describeValue, KwError } from '../errors.js';
import type { SpecBuilder } from '../spec/builder.js';
import { rejectUnknown } from './common.js';

/** Options of {@link addSqueezeExcite}. */
export interface SqueezeExciteOptions {
  /** Reduction r (default 16, "r = 16 in all our models", §1.1). Hidden = max(1, ⌊C/r⌋). */
  reduction?: number;
  /** Explicit hidden width (timm's make_divisible or EfficientNet's rule, §1.1); overrides `reduction`. */
  hidden?: number;
}

/** The settings an SE block knows (a `kind: 'se'` field, as a method option carries, is allowed). */
const SE_SETTINGS = ['reduction', 'hidden'];

/**
 * SE settings with their defaults, checked: an unknown setting (a typo such as `reducton`) throws
 * SPEC_BAD_FIELD as the dynamic methods' `normalize` does; a bad reduction or hidden width throws
 * ARGUMENT_INVALID. `where` starts each message (e.g. `SE "layer1.0.se"`).
 */
export function normalizeSeSettings(
  where: string,
  raw: unknown,
): { reduction: number; hidden: number | undefined } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${where}: SE options must be an object like { reduction: 16 }, found ${describeValue(raw)}`,
    );
  }
  const o = raw as Record<string, unknown>;
  rejectUnknown(where, { ...o, kind: 'se' }, SE_SETTINGS);
  const r = o.reduction ?? 16;
  if (typeof r !== 'number' || !(Number.isFinite(r) && r > 0)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${where}: reduction must be a number > 0, found ${describeValue(r)}`,
    );
  }
  const h = o.hidden;
  if (h !== undefined && (typeof h !== 'number' || !Number.isInteger(h) || h < 1)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${where}: hidden must be an integer >= 1, found ${describeValue(h)}`,
    );
  }
  return { reduction: r, hidden: h };
}

/** Hidden width of canonical SE: `max(1, ⌊C/r⌋)`. */
export function seHidden(channels: number, reduction = 16): number {
  return Math.max(1, Math.floor(channels / reduction));
}

/** Parameters of one SE block with biases (peers.md §1.1): `2·C·h + h + C`, h = C/r. */
export function seParamCount(
  channels: number,
  reduction = 16,
  hidden = seHidden(channels, reduction),
): number {
  return 2 * channels * hidden + hidden + channels;
}

/**
 * Append an SE block gating `input` (with `channels` channels) and return the id of the gated
 * output. Nodes: `${id}.pool`, `${id}.fc1` (1×1 conv, bias), `${id}.relu`, `${id}.fc2`
 * (1×1 conv, bias), `${id}.gate` (sigmoid) and `${id}` (the broadcasting mul).
 *
 * @example
 * const b = new SpecBuilder('se', [64, 8, 8]);
 * b.output(addSqueezeExcite(b, 'se', b.input, 64));
 */
export function addSqueezeExcite(
  b: SpecBuilder,
  id: string,
  input: string,
  channels: number,
  options: SqueezeExciteOptions = {},
): string {
  const s = normalizeSeSettings(`SE "${id}"`, options);
  const h = s.hidden ?? seHidden(channels, s.reduction);
  if (!Number.isInteger(h) || h < 1)
    throw new KwError('ARGUMENT_INVALID', `SE "${id}": hidden must be an integer >= 1, found ${h}`);
  const pool = b.globalAvgPool(`${id}.pool`, input);
  const fc1 = b.conv2d(`${id}.fc1`, pool, { outChannels: h, kernelSize: 1, bias: true });
  const act = b.relu(`${id}.relu`, fc1);
  const fc2 = b.conv2d(`${id}.fc2`, act, { outChannels: channels, kernelSize: 1, bias: true });
  const gate = b.sigmoid(`${id}.gate`, fc2);
  return b.mul(id, [input, gate]);
}
