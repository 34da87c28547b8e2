/**
 * DY-Conv, dynamic convolution (peers.md §3): K whole kernels mixed per sample by a softmax
 * attention with temperature, `W_b = Σ_k π_k(x_b) W_k`. Tensor names follow the reference
 * code (§3.1): `weight [K, f, c/g, kh, kw]`, `bias [K, f]`, `attention.fc1.weight [h, c, 1, 1]`,
 * `attention.fc2.weight [K, h, 1, 1]`, `attention.fc2.bias [K]`.
 */
import type { ParamDecl } from '../decl.js';
import type { Ops } from '../ops/seam.js';
import type { OtherMethodRef } from '../spec/types.js';
import {
  convMacs,
  decl,
  forwardTemperature,
  intSetting,
  mixtureForward,
  posSetting,
  rejectUnknown,
  requireConv,
  temperatureSetting,
} from './common.js';
import type { DynamicMethod } from './types.js';

/**
 * DY-Conv settings. `temperature` is the softmax temperature the layer runs at (1 at inference;
 * during training anneal it 30 → 1 with `temperatureAt({ initValue: 30, endValue: 1, ... })`
 * from kw/attention.ts and write it here). The executor's `temperature` option is KW's τ and
 * does not apply to DY-Conv.
 */
export interface DyConvRef extends OtherMethodRef {
  kind: 'dyconv';
  /** Number of kernels K (default 4, peers.md §3.1). */
  kernels: number;
  /** Hidden ratio of the attention (default 0.25): h = int(c·ratio) + 1, h = K for c = 3. */
  ratio: number;
  /** Softmax temperature (default 1). */
  temperature: number;
}

/** Attention hidden width of DY-Conv (peers.md §3.1): `int(c·ratio) + 1`, or K when c = 3. */
export function dyConvHidden(c: number, kernels: number, ratio = 0.25): number {
  return c === 3 ? kernels : Math.floor(c * ratio) + 1;
}

/**
 * Per-layer parameters of DY-Conv (peers.md §3.3): `K·|W| + c·h + h·K + K` (+ `K·f` bias),
 * `|W| = f·(c/g)·kh·kw`.
 */
export function dyConvParamCount(
  c: number,
  f: number,
  kh: number,
  kw: number,
  kernels = 4,
  groups = 1,
  bias = false,
  ratio = 0.25,
): number {
  const h = dyConvHidden(c, kernels, ratio);
  return (
    (kernels * f * c * kh * kw) / groups + c * h + h * kernels + kernels + (bias ? kernels * f : 0)
  );
}

/** Softmax attention `[N, K]` of DY-Conv for a batch (peers.md §3.1). */
export function dyConvAttention<T>(ops: Ops<T>, x: T, temperature: number): T {
  const v = ops.relu(ops.linear(ops.globalAvgPool(x), ops.param('attention.fc1.weight')));
  const z = ops.linear(v, ops.param('attention.fc2.weight'), ops.param('attention.fc2.bias'));
  return ops.softmax(z, temperature);
}

/** The DY-Conv method module (kind `dyconv`). */
export const dyConvMethod: DynamicMethod<DyConvRef> = {
  kind: 'dyconv',
  textForm: { fields: ['kernels'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['kernels', 'ratio', 'temperature']);
    return {
      kind: 'dyconv',
      kernels: intSetting(where, raw, 'kernels', 4, 1),
      ratio: posSetting(where, raw, 'ratio', 0.25),
      temperature: temperatureSetting(where, raw),
    };
  },
  params({ node, settings: m, inShape }): ParamDecl[] {
    const g = requireConv(node, 'dyconv');
    const c = inShape[0]!;
    const [kh, kw] = g.kernelSize;
    const f = g.outChannels;
    const K = m.kernels;
    const h = dyConvHidden(c, K, m.ratio);
    // kernels: kaiming_uniform (a = 0) per kernel, U(±sqrt(6/fan_in)), fan_in = (c/g)·k² (§3.2)
    const bound = Math.sqrt(6 / ((c / g.groups) * kh * kw));
    const out = [
      decl('attention.fc1.weight', [h, c, 1, 1], { kind: 'kaimingNormalFanOut', fanOut: h }),
      decl('attention.fc2.weight', [K, h, 1, 1], { kind: 'kaimingNormalFanOut', fanOut: K }),
      decl('attention.fc2.bias', [K], { kind: 'const', value: 0 }),
      decl('weight', [K, f, c / g.groups, kh, kw], { kind: 'uniform', bound }),
    ];
    if (g.bias) out.push(decl('bias', [K, f], { kind: 'const', value: 0 }));
    return out;
  },
  macs({ node, settings: m, inShape }, outShape) {
    const g = requireConv(node, 'dyconv');
    const [c, h, w] = inShape as [number, number, number];
    const hid = dyConvHidden(c, m.kernels, m.ratio);
    const size = (g.outChannels * c * g.kernelSize[0] * g.kernelSize[1]) / g.groups;
    return {
      conv: convMacs(g, c, outShape),
      attention: c * h * w + c * hid + hid * m.kernels,
      assembly: m.kernels * size,
    };
  },
  forward(ops, x, { node, settings: m, methodTemperature }) {
    const g = requireConv(node, 'dyconv');
    const pi = dyConvAttention(ops, x, forwardTemperature(node, m.temperature, methodTemperature));
    return mixtureForward(ops, x, g, pi, m.kernels);
  },
};
