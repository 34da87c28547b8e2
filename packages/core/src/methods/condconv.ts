/**
 * CondConv, conditionally parameterised convolution (peers.md §2): n expert kernels mixed per
 * sample by independent sigmoid routing weights, `W_b = Σ_i σ(R·GAP(x_b) + b_R)_i E_i`.
 * Names follow timm's port (§2.1): `weight [n, |W|]`, `bias [n, f]`,
 * `routing_fn.weight [n, c]`, `routing_fn.bias [n]`. The routing here is computed from the
 * layer's own input; the official EfficientNet shares one routing per block (§2.1), which is
 * the same function when the block's convs read the same input.
 */
import type { ParamDecl } from '../decl.js';
import type { Ops } from '../ops/seam.js';
import type { OtherMethodRef } from '../spec/types.js';
import {
  convMacs,
  decl,
  intSetting,
  mixtureForward,
  rejectUnknown,
  requireConv,
} from './common.js';
import type { DynamicMethod } from './types.js';

/** CondConv settings. */
export interface CondConvRef extends OtherMethodRef {
  kind: 'condconv';
  /** Number of experts n (default {@link CONDCONV_DEFAULT_EXPERTS} = 8; the paper's presets use 4 and 8, peers.md §2.2). */
  experts: number;
}

/**
 * Default expert count: 8, the paper's headline configuration (EfficientNet-CondConv-B0 with 8
 * experts, 78.3 % / 413M MADDs, the abstract's number; the `b0-8e` preset) and the "CondConv
 * (8x)" row the KW and ODConv papers compare against (peers.md §2.2, §2.4).
 */
export const CONDCONV_DEFAULT_EXPERTS = 8;

/**
 * Per-layer parameters of CondConv (peers.md §2.3): `n·|W|` (+ `n·f` bias) plus the routing
 * `c·n + n` (counted per layer here; once per block in the official EfficientNet).
 */
export function condConvParamCount(
  c: number,
  f: number,
  kh: number,
  kw: number,
  experts = CONDCONV_DEFAULT_EXPERTS,
  groups = 1,
  bias = false,
): number {
  return (experts * f * c * kh * kw) / groups + (bias ? experts * f : 0) + c * experts + experts;
}

/** Sigmoid routing weights `[N, n]` (peers.md §2.1). */
export function condConvRouting<T>(ops: Ops<T>, x: T): T {
  const pooled = ops.globalAvgPool(x);
  return ops.sigmoid(
    ops.linear(pooled, ops.param('routing_fn.weight'), ops.param('routing_fn.bias')),
  );
}

/** The CondConv method module (kind `condconv`). */
export const condConvMethod: DynamicMethod<CondConvRef> = {
  kind: 'condconv',
  textForm: { fields: ['experts'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['experts']);
    return {
      kind: 'condconv',
      experts: intSetting(where, raw, 'experts', CONDCONV_DEFAULT_EXPERTS, 1),
    };
  },
  params({ node, settings, inShape }): ParamDecl[] {
    const g = requireConv(node, 'condconv');
    const n = settings.experts;
    const c = inShape[0]!;
    const [kh, kw] = g.kernelSize;
    const f = g.outChannels;
    const size = (f * c * kh * kw) / g.groups;
    const bound = 1 / Math.sqrt(c);
    const out = [
      decl('routing_fn.weight', [n, c], { kind: 'uniform', bound }),
      decl('routing_fn.bias', [n], { kind: 'uniform', bound }),
      // every expert N(0, sqrt(2/fan_out)), fan_out = k·k·f (EfficientNet, §2.3)
      decl('weight', [n, size], { kind: 'kaimingNormalFanOut', fanOut: kh * kw * f }),
    ];
    if (g.bias) out.push(decl('bias', [n, f], { kind: 'const', value: 0 }));
    return out;
  },
  macs({ node, settings, inShape }, outShape) {
    const g = requireConv(node, 'condconv');
    const n = settings.experts;
    const [c, h, w] = inShape as [number, number, number];
    const size = (g.outChannels * c * g.kernelSize[0] * g.kernelSize[1]) / g.groups;
    return { conv: convMacs(g, c, outShape), attention: c * h * w + c * n, assembly: n * size };
  },
  forward(ops, x, { node, settings }) {
    const g = requireConv(node, 'condconv');
    return mixtureForward(ops, x, g, condConvRouting(ops, x), settings.experts);
  },
};
