/**
 * DO-Conv, DO-DConv and DO-GConv (peers.md §6): a conv whose kernel is composed from a
 * trainable `W [f, c/g, D_mul]` and a depthwise factor `D + D_diag [c, kh·kw, D_mul]`.
 * One module serves all three: `groups = 1` is DO-Conv, depthwise (`c = f = g`) is DO-DConv,
 * any other `groups` is DO-GConv with the official grouped index rule (§6.4), so official
 * PyTorch weights (`W`, `D`, `d_diag`, `bias`) load unchanged. Folds exactly to a plain conv.
 */

import type { ParamDecl } from '../decl.js';
import { KwError } from '../errors.js';
import { ReferenceOps } from '../ops/reference.js';
import type { Ops } from '../ops/seam.js';
import type { Rng } from '../rng.js';
import type { Conv2dNode, OtherMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { convAttrs, convMacs, decl, intSetting, rejectUnknown, requireConv } from './common.js';
import type { DynamicMethod, DynamicNode, FoldResult } from './types.js';

/** DO-Conv settings: `dMul` is the depth multiplier D_mul (default kh·kw; must be >= kh·kw). */
export interface DoConvRef extends OtherMethodRef {
  kind: 'doconv';
  /** D_mul; undefined means kh·kw (the official default, peers.md §6.1). */
  dMul?: number;
}

/** Effective D_mul of a node: 1 for a 1×1 kernel (no D, peers.md §6.1), else the setting or kh·kw. */
export function doConvDMul(node: DynamicNode, settings: DoConvRef): number {
  const g = requireConv(node, 'doconv');
  const mn = g.kernelSize[0] * g.kernelSize[1];
  if (mn === 1) return 1;
  const d = settings.dMul ?? mn;
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
  const zero = new Float32Array(c * mn * dMul);
  const t = new Map<string, Tensor>([
    ['W', { shape: [f, c / groups, dMul], data: w }],
    ['D', { shape: [c, mn, dMul], data: dPlusDiag ?? zero }],
    ['d_diag', { shape: [c, mn, dMul], data: zero }],
  ]);
  const ops = new ReferenceOps({ param: (n) => t.get(n), training: false });
  return doConvKernel(ops, c, f, groups, [mn, 1], dPlusDiag ? dMul : 0).data.slice(0, rows * mn);
}

/**
 * The composed OIHW kernel `[f, c/g, kh, kw]` from the layer's `W [f, c/g, D_mul]` and
 * `D + D_diag [c, kh*kw, D_mul]` (row q of W reads depthwise row `q mod c`); `dMul` 0 (a layer
 * without D, as every 1x1 one): W is the kernel.
 */
export function doConvKernel<T>(
  ops: Ops<T>,
  c: number,
  f: number,
  groups: number,
  kernelSize: readonly [number, number],
  dMul: number,
): T {
  const [kh, kw] = kernelSize;
  const cg = c / groups;
  const w = ops.param('W');
  if (dMul === 0) return ops.reshape(w, [f, cg, kh, kw]);
  const dd = ops.add(ops.param('D'), ops.param('d_diag')); // [c, MN, D_mul]
  // rows q = r·c + i of W's f·c/g rows read D row i: f/g copies of D stacked
  const reps = f / groups;
  const rows = reps === 1 ? dd : ops.concat(new Array<T>(reps).fill(dd), 0);
  const k = ops.matMul(rows, ops.reshape(w, [f * cg, dMul, 1])); // [f·c/g, MN, 1]
  return ops.reshape(k, [f, cg, kh, kw]);
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

/** D_mul of the layer's D tensor, 0 when it has none (1x1 kernels). */
function layerDMul(node: DynamicNode, settings: DoConvRef): number {
  const g = requireConv(node, 'doconv');
  return g.kernelSize[0] * g.kernelSize[1] === 1 ? 0 : doConvDMul(node, settings);
}

function composed(
  node: DynamicNode,
  settings: DoConvRef,
  c: number,
  w: (name: string) => Tensor,
): Float32Array {
  const g = requireConv(node, 'doconv');
  const ops = new ReferenceOps({ param: w, training: false, where: `node "${node.id}"` });
  return doConvKernel(ops, c, g.outChannels, g.groups, g.kernelSize, layerDMul(node, settings))
    .data;
}

/** The DO-Conv method module (kind `doconv`). */
export const doConvMethod: DynamicMethod<DoConvRef> = {
  kind: 'doconv',
  textForm: { fields: ['dMul'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['dMul']);
    const out: DoConvRef = { kind: 'doconv' };
    if (raw.dMul !== undefined) out.dMul = intSetting(where, raw, 'dMul', 1, 1);
    return out;
  },
  params({ node, settings, inShape }): ParamDecl[] {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    const dMul = doConvDMul(node, settings);
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
  macs({ node, settings, inShape }, outShape) {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    // composition f·(c/g)·MN·D_mul once per forward (peers.md §6.5); zero once folded
    const assembly =
      mn > 1 ? ((g.outChannels * c) / g.groups) * mn * doConvDMul(node, settings) : 0;
    return { conv: convMacs(g, c, outShape), attention: 0, assembly };
  },
  forward(ops, x, { node, settings, inShape }) {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const kernel = doConvKernel(
      ops,
      c,
      g.outChannels,
      g.groups,
      g.kernelSize,
      layerDMul(node, settings),
    );
    return ops.conv2d(x, kernel, g.bias ? ops.param('bias') : undefined, convAttrs(g));
  },
  init({ node, settings, inShape }, rng: Rng) {
    const g = requireConv(node, 'doconv');
    const c = inShape[0]!;
    const mn = g.kernelSize[0] * g.kernelSize[1];
    const dMul = doConvDMul(node, settings);
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
  fold({ node, settings, inShape }, w): FoldResult {
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
      data: composed(node, settings, c, w),
    });
    if (g.bias)
      weights.set(`${node.id}.bias`, {
        shape: [g.outChannels],
        data: Float32Array.from(w('bias').data),
      });
    return { nodes: [plain], weights };
  },
};
