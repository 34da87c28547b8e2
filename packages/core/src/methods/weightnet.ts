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
import { ReferenceOps } from '../ops/reference.js';
import type { Ops } from '../ops/seam.js';
import type { OtherMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { convAttrs, convMacs, decl, intSetting, rejectUnknown, requireConv } from './common.js';
import type { DynamicMethod, DynamicNode } from './types.js';

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

function layout(node: DynamicNode, { M, G }: WeightNetRef, c: number): Layout {
  const g = requireConv(node, 'weightnet');
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
 * The grouped FC2 (peers.md §5.1): `alpha [N, T·λ]` and `fc2 [T·S, λ, 1, 1]` give the per-sample
 * kernels `[N, T, S, 1]` (OIHW order): group t reads `alpha[t·λ .. t·λ+λ)` and writes S entries.
 */
export function weightNetKernels<T>(
  ops: Ops<T>,
  alpha: T,
  l: { T: number; S: number; lambda: number },
): T {
  const fc2 = ops.reshape(ops.param('wn_fc2.weight'), [l.T, l.S, l.lambda]);
  return ops.matMul(fc2, ops.reshape(alpha, [-1, l.T, l.lambda, 1]));
}

/** {@link weightNetKernels} for sample `b` of Float32Array `alpha` (a hand-checkable form). */
export function weightNetKernel(
  alpha: Float32Array,
  fc2: Float32Array,
  b: number,
  T: number,
  S: number,
  lambda: number,
): Float32Array {
  const w = { shape: [T * S, lambda, 1, 1], data: fc2 };
  const ops = new ReferenceOps({ param: () => w, training: false });
  const a: Tensor = {
    shape: [1, T * lambda],
    data: alpha.slice(b * T * lambda, (b + 1) * T * lambda),
  };
  return weightNetKernels(ops, a, { T, S, lambda }).data;
}

/** The WeightNet method module (kind `weightnet`). */
export const weightNetMethod: DynamicMethod<WeightNetRef> = {
  kind: 'weightnet',
  textForm: { fields: ['M', 'G'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['M', 'G']);
    return {
      kind: 'weightnet',
      M: intSetting(where, raw, 'M', 2, 1),
      G: intSetting(where, raw, 'G', 2, 1),
    };
  },
  params({ node, settings, inShape }) {
    const g = requireConv(node, 'weightnet');
    const c = inShape[0]!;
    const l = layout(node, settings, c);
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
  macs({ node, settings, inShape }, outShape) {
    const g = requireConv(node, 'weightnet');
    const [c, h, w] = inShape as [number, number, number];
    const l = layout(node, settings, c);
    return {
      conv: convMacs(g, c, outShape),
      attention: c * h * w + c * l.cg + l.cg * l.T * l.lambda,
      assembly: l.T * l.S * l.lambda,
    };
  },
  forward(ops, x, { node, settings, inShape }) {
    const g = requireConv(node, 'weightnet');
    const l = layout(node, settings, inShape[0]!);
    const pooled = ops.globalAvgPool(x);
    const xg = ops.linear(pooled, ops.param('reduce.weight'), ops.param('reduce.bias'));
    const alpha = ops.sigmoid(ops.linear(xg, ops.param('wn_fc1.weight'), ops.param('wn_fc1.bias')));
    return ops.perSampleConv(x, weightNetKernels(ops, alpha, l), convAttrs(g));
  },
};
