/**
 * Squeeze-and-Excitation (peers.md §1.1): `u ⊙ σ(W2·ReLU(W1·GAP(u) + b1) + b2)`.
 *
 * SE is a block, not a conv kernel, and every op it needs already exists in the spec
 * (globalAvgPool, 1×1 conv2d with bias, relu, sigmoid, two-input broadcasting mul). So it is
 * a spec-builder helper rather than a dynamic method: every backend that runs a spec runs SE
 * with no new code, weights load by plain names, and the parameter count falls out of the
 * ordinary conv/bias declarations.
 */
import { KwError } from '../errors.js';
import type { SpecBuilder } from '../spec/builder.js';

/** Options of {@link addSqueezeExcite}. */
export interface SqueezeExciteOptions {
  /** Reduction r (default 16, "r = 16 in all our models", §1.1). Hidden = max(1, ⌊C/r⌋). */
  reduction?: number;
  /** Explicit hidden width (timm's make_divisible or EfficientNet's rule, §1.1); overrides `reduction`. */
  hidden?: number;
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
  const r = options.reduction ?? 16;
  if (!(Number.isFinite(r) && r > 0))
    throw new KwError('ARGUMENT_INVALID', `SE "${id}": reduction must be a number > 0, found ${r}`);
  const h = options.hidden ?? seHidden(channels, r);
  if (!Number.isInteger(h) || h < 1)
    throw new KwError('ARGUMENT_INVALID', `SE "${id}": hidden must be an integer >= 1, found ${h}`);
  const pool = b.globalAvgPool(`${id}.pool`, input);
  const fc1 = b.conv2d(`${id}.fc1`, pool, { outChannels: h, kernelSize: 1, bias: true });
  const act = b.relu(`${id}.relu`, fc1);
  const fc2 = b.conv2d(`${id}.fc2`, act, { outChannels: channels, kernelSize: 1, bias: true });
  const gate = b.sigmoid(`${id}.gate`, fc2);
  return b.mul(id, [input, gate]);
}
