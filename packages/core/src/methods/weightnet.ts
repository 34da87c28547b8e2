/**
 * WeightNet (peers.md §5): the kernel is generated per sample by a grouped FC,
 * `x_g = Reduce(GAP(x))`, `α = σ(FC1(x_g))`, `w = FC2(α)` with FC2 grouped so each filter's
 * kernel comes from its own M attention values in G chunks (λ = M/G, §5.1). Standard conv
 * (`groups = 1`) and depthwise (`WeightNet_DW`) layouts. Names follow the official module:
 * `reduce.weight [c_g, c, 1, 1]`, `reduce.bias`, `wn_fc1.weight [M·f, c_g, 1, 1]`, `wn_fc1.bias`,
 * `wn_fc2.weight [f·c·k², λ, 1, 1]`. The Reduce is per block officially (shared by the block's
 * WeightNet layers); here each layer owns one and reads its own input (§5.2 counts it once per block).
 */
import { KwError } from '../errors.js';
import type { OtherMethodRef } from '../spec/types.js';
import {
  convMacs,
  decl,
  fc,
  gap,
  intSetting,
  perSampleConv,
  rejectUnknown,
  requireConv,
  sigmoidInPlace,
} from './common.js';
import type { DynamicMethod, DynamicNode } from './registry.js';

/** WeightNet settings (official M = G = 2, §5.2). */
export interface WeightNetRef extends OtherMethodRef {
  kind: 'weightnet';
  M: number;
  G: number;
}

/** Reduce width `c_g = max(16, c/16)` (peers.md §5.1; integer division). */
export function weightNetReduce(c: number): number {
  return Math.max(16, Math.floor(c / 16));
}

interface Layout {
  depthwise: boolean;
  lambda: number;
  /** FC2 groups T and outputs per group S; α has T·λ entries. */
  T: number;
  S: number;
  cg: number;
}

function layout(node: DynamicNode, c: number): Layout {
  const g = requireConv(node, 'weightnet');
  const { M, G } = node.method as WeightNetRef;
  const [kh, kw] = g.kernelSize;
  const f = g.outChannels;
  const depthwise = g.groups === c && f === c;
  const fail = (msg: string, field: string) =>
    new KwError('SPEC_BAD_FIELD', `node "${node.id}": ${msg}`, { field });
  if (M % G !== 0)
    throw fail(`method "weightnet" needs M divisible by G, found M=${M}, G=${G}`, 'method.M');
  if (!depthwise && g.groups !== 1)
    throw fail(
      `method "weightnet" supports groups = 1 or depthwise, found groups=${g.groups}`,
      'groups',
    );
  if (!depthwise && (c * kh * kw) % G !== 0)
    throw fail(
      `method "weightnet" needs c·kh·kw = ${c * kh * kw} divisible by G = ${G}`,
      'method.G',
    );
  const lambda = M / G;
  return depthwise
    ? { depthwise, lambda, T: c, S: kh * kw, cg: weightNetReduce(c) }
    : { depthwise, lambda, T: G * f, S: (c * kh * kw) / G, cg: weightNetReduce(c) };
}

/**
 * Per-layer parameters (peers.md §5.2): standard `c_g·M·f + M·f + λ·|W|`, depthwise
 * `c_g·λ·c + λ·c + λ·c·k²`; plus the Reduce `c·c_g + c_g` when `withReduce`.
 */
export function weightNetParamCount(
  c: number,
  f: number,
  kh: number,
  kw: number,
  M = 2,
  G = 2,
  depthwise = false,
  withReduce = true,
): number {
  const cg = weightNetReduce(c);
  const lambda = M / G;
  const reduce = withReduce ? c * cg + cg : 0;
  if (depthwise) return reduce + cg * lambda * c + lambda * c + lambda * c * kh * kw;
  return reduce + cg * M * f + M * f + lambda * f * c * kh * kw;
}

/**
 * Generate the flattened kernel of sample b from α (`[N, T·λ]`) and FC2 (`[T·S, λ]`):
 * output r of group t = ⌊r/S⌋ is `Σ_u FC2[r, u] · α[t·λ + u]` (peers.md §5.1 step 2).
 */
export function weightNetKernel(
  alpha: Float32Array,
  fc2: Float32Array,
  b: number,
  T: number,
  S: number,
  lambda: number,
): Float32Array {
  const out = new Float32Array(T * S);
  const aOff = b * T * lambda;
  for (let r = 0; r < T * S; r++) {
    const t = Math.floor(r / S);
    let s = 0;
    for (let u = 0; u < lambda; u++) s += fc2[r * lambda + u]! * alpha[aOff + t * lambda + u]!;
    out[r] = s;
  }
  return out;
}

/** The WeightNet method module (kind `weightnet`). */
export const weightNetMethod: DynamicMethod<WeightNetRef> = {
  kind: 'weightnet',
  normalize(where, raw) {
    rejectUnknown(where, raw, ['M', 'G']);
    return {
      kind: 'weightnet',
      M: intSetting(where, raw, 'M', 2, 1),
      G: intSetting(where, raw, 'G', 2, 1),
    };
  },
  params(node, inShape) {
    const g = requireConv(node, 'weightnet');
    const c = inShape[0]!;
    const l = layout(node, c);
    if (g.bias)
      throw new KwError(
        'SPEC_BAD_FIELD',
        `node "${node.id}": method "weightnet" has no conv bias; set bias: false`,
        {
          field: 'bias',
        },
      );
    const n = (std: number) => ({ kind: 'normal' as const, std });
    const zero = { kind: 'const' as const, value: 0 };
    // official init N(0, 1/shape[1]) for every conv (§5.3); FC2's shape[1] is out/groups = S
    return [
      decl('reduce.weight', [l.cg, c, 1, 1], n(1 / c)),
      decl('reduce.bias', [l.cg], zero),
      decl('wn_fc1.weight', [l.T * l.lambda, l.cg, 1, 1], n(1 / l.cg)),
      decl('wn_fc1.bias', [l.T * l.lambda], zero),
      decl('wn_fc2.weight', [l.T * l.S, l.lambda, 1, 1], n(1 / l.S)),
    ];
  },
  macs(node, inShape, outShape) {
    const g = requireConv(node, 'weightnet');
    const [c, h, w] = inShape as [number, number, number];
    const l = layout(node, c);
    return {
      conv: convMacs(g, c, outShape),
      attention: c * h * w + c * l.cg + l.cg * l.T * l.lambda,
      assembly: l.T * l.S * l.lambda,
    };
  },
  forward(node, x, w) {
    const g = requireConv(node, 'weightnet');
    const l = layout(node, x.shape[1]!);
    const xg = fc(gap(x), w('reduce.weight'), w('reduce.bias'));
    const alpha = fc(xg, w('wn_fc1.weight'), w('wn_fc1.bias')).data;
    sigmoidInPlace(alpha);
    const fc2 = w('wn_fc2.weight').data;
    return perSampleConv(x, g, (b) => weightNetKernel(alpha, fc2, b, l.T, l.S, l.lambda));
  },
};
