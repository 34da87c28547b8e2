/**
 * DO-Conv, DO-DConv and DO-GConv (peers.md §6): a conv whose kernel is composed from a
 * trainable `W [f, c/g, D_mul]` and a depthwise factor `D + D_diag [c, kh·kw, D_mul]`.
 * One module serves all three: `groups = 1` is DO-Conv, depthwise (`c = f = g`) is DO-DConv,
 * any other `groups` is DO-GConv with the official grouped index rule (§6.4), so official
 * PyTorch weights (`W`, `D`, `d_diag`, `bias`) load unchanged. Folds exactly to a plain conv.
 */
import { KwError } from '../errors.js';
import type { ParamDecl } from '../params.js';
import type { Rng } from '../rng.js';
import type { Conv2dNode, OtherMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { convMacs, decl, intSetting, perSampleConv, rejectUnknown, requireConv } from './common.js';
import type { DynamicMethod, DynamicNode, FoldResult } from './registry.js';

/** DO-Conv settings: `dMul` is the depth multiplier D_mul (default kh·kw; must be >= kh·kw). */
export interface DoConvRef extends OtherMethodRef {
  kind: 'doconv';
  /** D_mul; undefined means kh·kw (the official default, peers.md §6.1). */
  dMul?: number;
}

/** Effective D_mul of a node: 1 for a 1×1 kernel (no D, peers.md §6.1), else the setting or kh·kw. */
export function doConvDMul(node: DynamicNode): number {
  const g = requireConv(node, 'doconv');
  const mn = g.kernelSize[0] * g.kernelSize[1];
  if (mn === 1) return 1;
  const d = (node.method as DoConvRef).dMul ?? mn;
  if (d < mn) {
    throw new KwError(
      'SPEC_BAD_FIELD',
      `node "${node.id}": field "method.dMul" must be >= kh*kw = ${mn} (a smaller D_mul gives an all-zero D_diag and a zero kernel, peers.md §6.3), found ${d}`,
      { field: 'method.dMul', expected: `>= ${mn}`, actual: d },
    );
  }
  return d;
}

/**
 * Per-layer trainable parameters of DO-Conv (peers.md §6.5):
 * `f·(c/g)·D_mul + c·MN·D_mul` (+ f bias); a 1×1 kernel has only `f·(c/g)` (+ bias).
 * The constant `d_diag` (same size as D) is a buffer and not counted.
 */
export function doConvParamCount(
  c: number,
  f: number,
  kh: number,
  kw: number,
  groups = 1,
  dMul = kh * kw,
  bias = false,
): number {
  const mn = kh * kw;
  const d = mn === 1 ? 1 : dMul;
  return (f * c * d) / groups + (mn === 1 ? 0 : c * mn * d) + (bias ? f : 0);
}

/**
 * Compose the plain OIHW kernel `[f, c/g, kh, kw]` from W and D + D_diag with the official
 * index rule (peers.md §6.2, §6.4): entry q = o·(c/g) + j of W's `[f·c/g]` rows uses
 * depthwise row `i = q mod c`. `dPlusDiag` is undefined for a 1×1 kernel (W is the kernel).
 */
export function composeDoConvKernel(
  w: Float32Array,
  dPlusDiag: Float32Array | undefined,
  c: number,
  f: number,
  groups: number,
  mn: number,
  dMul: number,
): Float32Array {
  const rows = (f * c) / groups;
  if (!dPlusDiag) return Float32Array.from(w);
  const out = new Float32Array(rows * mn);
  for (let q = 0; q < rows; q++) {
    const i = q % c;
    for (let m = 0; m < mn; m++) {
      let s = 0;
      const dBase = (i * mn + m) * dMul;
      const wBase = q * dMul;
      for (let t = 0; t < dMul; t++) s += dPlusDiag[dBase + t]! * w[wBase + t]!;
      out[q * mn + m] = s;
    }
  }
  return out;
}

/** The constant D_diag `[c, MN, D_mul]`: MN×MN identity repeated ⌊D_mul/MN⌋ times, zero-padded (§6.1). */
export function doConvDiag(c: number, mn: number, dMul: number): Float32Array {
  const out = new Float32Array(c * mn * dMul);
  const reps = Math.floor(dMul / mn);
  for (let i = 0; i < c; i++)
    for (let r = 0; r < reps; r++)
      for (let m = 0; m < mn; m++) out[(i * mn + m) * dMul + r * mn + m] = 1;
  return out;
}

function composed(node: DynamicNode, c: number, w: (name: string) => Tensor): Float32Array {
  const g = requireConv(node, 'doconv');
  const mn = g.kernelSize[0] * g.kernelSize[1];
  const dMul = doConvDMul(node);
  let dd: Float32Array | undefined;
  if (mn > 1) {
    const d = w('D').data;
    const diag = w('d_diag').data;
    dd = new Float32Array(d.length);
    for (let i = 0; i < d.length; i++) dd[i] = d[i]! + diag[i]!;
  }
  return composeDoConvKernel(w('W').data, dd, c, g.outChannels, g.groups, mn, dMul);
}

/** The DO-Conv method module (kind `doconv`). */
export const doConvMethod: DynamicMethod<DoConvRef> = {
  kind: 'doconv',
  normalize(where, raw) {
    rejectUnknown(where, raw, ['dMul']);
    const out: DoConvRef = { kind: 'doconv' };
    if (raw.dMul !== undefined) out.dMul = intSetting(where, raw, 'dMul', 1, 1);
    return out;
  },
  params(node, inShape): ParamDecl[] {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    const dMul = doConvDMul(node);
    const f = g.outChannels;
    const out = [decl('W', [f, c / g.groups, dMul], { kind: 'method', node: node.id })];
    if (mn > 1) {
      out.push(decl('D', [c, mn, dMul], { kind: 'const', value: 0 }));
      out.push(decl('d_diag', [c, mn, dMul], { kind: 'method', node: node.id }, 'buffer'));
    }
    if (g.bias) {
      const bound = 1 / Math.sqrt((c / g.groups) * dMul);
      out.push(decl('bias', [f], { kind: 'uniform', bound }));
    }
    return out;
  },
  macs(node, inShape, outShape) {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    // composition f·(c/g)·MN·D_mul once per forward (peers.md §6.5); zero once folded
    const assembly = mn > 1 ? ((g.outChannels * c) / g.groups) * mn * doConvDMul(node) : 0;
    return { conv: convMacs(g, c, outShape), attention: 0, assembly };
  },
  forward(node, x, w) {
    const g = requireConv(node, 'doconv');
    const kernel = composed(node, x.shape[1]!, w);
    return perSampleConv(x, g, () => kernel, g.bias ? () => w('bias').data : undefined);
  },
  init(node, inShape, rng: Rng) {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    const dMul = doConvDMul(node);
    const f = g.outChannels;
    // PyTorch's default conv init on [f, c/g, D_mul]: U(±1/sqrt((c/g)·D_mul)) (§6.3)
    const bound = 1 / Math.sqrt((c / g.groups) * dMul);
    const out = new Map<string, Tensor>();
    const wShape = [f, c / g.groups, dMul];
    out.set('W', {
      shape: wShape,
      data: rng.uniformArray((f * c * dMul) / g.groups, -bound, bound),
    });
    if (mn > 1) out.set('d_diag', { shape: [c, mn, dMul], data: doConvDiag(c, mn, dMul) });
    return out;
  },
  fold(node, inShape, w): FoldResult {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const plain: Conv2dNode = {
      id: node.id,
      op: 'conv2d',
      inputs: [...node.inputs],
      outChannels: g.outChannels,
      kernelSize: [...g.kernelSize],
      stride: [...g.stride],
      padding: [...g.padding],
      dilation: [...g.dilation],
      groups: g.groups,
      bias: g.bias,
    };
    const weights = new Map<string, Tensor>();
    weights.set(`${node.id}.weight`, {
      shape: [g.outChannels, c / g.groups, g.kernelSize[0], g.kernelSize[1]],
      data: composed(node, c, w),
    });
    if (g.bias)
      weights.set(`${node.id}.bias`, {
        shape: [g.outChannels],
        data: Float32Array.from(w('bias').data),
      });
    return { nodes: [plain], weights };
  },
};
