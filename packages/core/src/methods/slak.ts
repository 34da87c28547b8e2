/**
 * SLaK's decomposed large-kernel depthwise mixer (peers.md §7.1):
 * `y = BN1(DW_{K×N}(x)) + BN2(DW_{N×K}(x)) + BN3(DW_{N×N}(x))`, every branch depthwise, stride 1,
 * padded per axis (`kh//2`, `kw//2`) so all three stay centred; the small branch exists only
 * when N < K. Names follow the official module: `LoRA1.conv.weight [C,1,K,N]`, `LoRA1.bn.*`,
 * `LoRA2.conv.weight [C,1,N,K]`, `LoRA2.bn.*`, `small_conv.conv.weight [C,1,N,N]`,
 * `small_conv.bn.*`. Folds exactly (§7.4) to two strips (default) or one K×K kernel.
 */
import { describeValue, KwError } from '../errors.js';
import type { AddNode, Conv2dNode, OtherMethodRef, Pair } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { decl, intSetting, posSetting, rejectUnknown, requireConv } from './common.js';
import type { DynamicMethod, DynamicNode, FoldResult } from './types.js';

/** Momentum of the branch BatchNorms in training (PyTorch default). */
const BN_MOMENTUM = 0.1;

/** SLaK settings. */
export interface SlakRef extends OtherMethodRef {
  kind: 'slak';
  /** Small kernel N (default 5, the official last `--kernel_size` entry). Odd. */
  smallKernel: number;
  /** BatchNorm eps of the three branches (default 1e-5). */
  eps: number;
  /** Inference form for {@link foldSpec}: 'strips' (two K×N / N×K convs, default) or 'full' (one K×K). */
  fold: 'strips' | 'full';
}

const BRANCHES = ['LoRA1', 'LoRA2', 'small_conv'] as const;

function geometry(
  node: DynamicNode,
  m: SlakRef,
  c: number,
): { K: number; N: number; small: boolean } {
  const g = requireConv(node, 'slak');
  const [kh, kw] = g.kernelSize;
  const bad = (field: string, want: string, got: unknown) =>
    new KwError(
      'SPEC_BAD_FIELD',
      `node "${node.id}": method "slak" needs ${field} ${want}, found ${describeValue(got)}`,
      { field, expected: want, actual: got },
    );
  if (kh !== kw || kh % 2 === 0) throw bad('kernelSize', 'square and odd [K, K]', g.kernelSize);
  if (g.groups !== c || g.outChannels !== c)
    throw bad('groups', `= inChannels = outChannels = ${c} (depthwise)`, g.groups);
  if (g.stride[0] !== 1 || g.stride[1] !== 1) throw bad('stride', '[1, 1]', g.stride);
  if (g.dilation[0] !== 1 || g.dilation[1] !== 1) throw bad('dilation', '[1, 1]', g.dilation);
  const p = (kh - 1) / 2;
  if (g.padding[0] !== p || g.padding[1] !== p)
    throw bad('padding', `[${p}, ${p}] ("same")`, g.padding);
  if (g.bias) throw bad('bias', 'false (each branch has its own BN)', g.bias);
  if (m.smallKernel > kh) throw bad('method.smallKernel', `<= K = ${kh}`, m.smallKernel);
  return { K: kh, N: m.smallKernel, small: m.smallKernel < kh };
}

function branchShape(b: (typeof BRANCHES)[number], K: number, N: number): Pair {
  return b === 'LoRA1' ? [K, N] : b === 'LoRA2' ? [N, K] : [N, N];
}

/**
 * Per-mixer parameters of SLaK (peers.md §7.2): `2·C·K·N + C·N²` weights + `6·C` BN
 * (the small branch, `C·N² + 2C`, only when N < K).
 */
export function slakParamCount(c: number, K: number, N = 5): number {
  return 2 * c * K * N + 4 * c + (N < K ? c * N * N + 2 * c : 0);
}

/** BN folded into a depthwise conv: `W·γ/√(var+ε)`, `β − mean·γ/√(var+ε)` (peers.md §7.4). */
export function foldBnIntoDepthwise(
  weight: Float32Array,
  c: number,
  gamma: Float32Array,
  beta: Float32Array,
  mean: Float32Array,
  variance: Float32Array,
  eps: number,
): { weight: Float32Array; bias: Float32Array } {
  const taps = weight.length / c;
  const w = new Float32Array(weight.length);
  const b = new Float32Array(c);
  for (let ch = 0; ch < c; ch++) {
    const s = gamma[ch]! / Math.sqrt(variance[ch]! + eps);
    for (let t = 0; t < taps; t++) w[ch * taps + t] = weight[ch * taps + t]! * s;
    b[ch] = beta[ch]! - mean[ch]! * s;
  }
  return { weight: w, bias: b };
}

/** Add a centred `[C, sh, sw]` kernel into a `[C, H, W]` kernel in place (zero-padding the small one). */
export function addCentred(
  big: Float32Array,
  bp: Pair,
  small: Float32Array,
  sp: Pair,
  c: number,
): void {
  const oy = (bp[0] - sp[0]) / 2;
  const ox = (bp[1] - sp[1]) / 2;
  for (let ch = 0; ch < c; ch++)
    for (let y = 0; y < sp[0]; y++)
      for (let x = 0; x < sp[1]; x++)
        big[ch * bp[0] * bp[1] + (y + oy) * bp[1] + x + ox]! +=
          small[ch * sp[0] * sp[1] + y * sp[1] + x]!;
}

/** The SLaK method module (kind `slak`). */
export const slakMethod: DynamicMethod<SlakRef> = {
  kind: 'slak',
  textForm: { fields: ['smallKernel'] },
  normalize(where, raw) {
    rejectUnknown(where, raw, ['smallKernel', 'eps', 'fold']);
    const n = intSetting(where, raw, 'smallKernel', 5, 1);
    if (n % 2 === 0)
      throw new KwError(
        'SPEC_BAD_FIELD',
        `${where}: field "method.smallKernel" must be odd, found ${n}`,
        {
          field: 'method.smallKernel',
        },
      );
    const fold = raw.fold ?? 'strips';
    if (fold !== 'strips' && fold !== 'full')
      throw new KwError(
        'SPEC_BAD_FIELD',
        `${where}: field "method.fold" must be "strips" or "full", found ${describeValue(fold)}`,
        { field: 'method.fold' },
      );
    return { kind: 'slak', smallKernel: n, eps: posSetting(where, raw, 'eps', 1e-5), fold };
  },
  params({ node, settings, inShape }) {
    const c = inShape[0]!;
    const { K, N, small } = geometry(node, settings, c);
    const out = [];
    for (const b of BRANCHES) {
      if (b === 'small_conv' && !small) continue;
      const [h, w] = branchShape(b, K, N);
      // trunc_normal(std = 0.02) officially (§7.1); the ±2 truncation is at 100σ, so N(0, 0.02²)
      out.push(decl(`${b}.conv.weight`, [c, 1, h, w], { kind: 'normal', std: 0.02 }));
      out.push(decl(`${b}.bn.weight`, [c], { kind: 'const', value: 1 }));
      out.push(decl(`${b}.bn.bias`, [c], { kind: 'const', value: 0 }));
      out.push(decl(`${b}.bn.running_mean`, [c], { kind: 'const', value: 0 }, 'buffer'));
      out.push(decl(`${b}.bn.running_var`, [c], { kind: 'const', value: 1 }, 'buffer'));
    }
    return out;
  },
  macs({ node, settings, inShape }, outShape) {
    const c = inShape[0]!;
    const { K, N, small } = geometry(node, settings, c);
    const plane = (outShape[1] ?? 1) * (outShape[2] ?? 1);
    return { conv: c * plane * (2 * K * N + (small ? N * N : 0)), attention: 0, assembly: 0 };
  },
  forward(ops, x, { node, settings, inShape }) {
    const c = inShape[0]!;
    const { K, N, small } = geometry(node, settings, c);
    let out: typeof x | undefined;
    for (const b of BRANCHES) {
      if (b === 'small_conv' && !small) continue;
      const kp = branchShape(b, K, N);
      const y = ops.conv2d(x, ops.param(`${b}.conv.weight`), undefined, {
        stride: [1, 1],
        padding: [(kp[0] - 1) / 2, (kp[1] - 1) / 2],
        dilation: [1, 1],
        groups: c,
      });
      const z = ops.batchNorm(y, `${b}.bn`, settings.eps, BN_MOMENTUM);
      out = out === undefined ? z : ops.add(out, z);
    }
    return out!;
  },
  fold({ node, settings: m, inShape }, w): FoldResult {
    const c = inShape[0]!;
    const { K, N, small } = geometry(node, m, c);
    const folded = BRANCHES.filter((b) => b !== 'small_conv' || small).map((b) => ({
      b,
      kp: branchShape(b, K, N),
      ...foldBnIntoDepthwise(
        w(`${b}.conv.weight`).data,
        c,
        w(`${b}.bn.weight`).data,
        w(`${b}.bn.bias`).data,
        w(`${b}.bn.running_mean`).data,
        w(`${b}.bn.running_var`).data,
        m.eps,
      ),
    }));
    const bias = new Float32Array(c);
    for (const f of folded) for (let i = 0; i < c; i++) bias[i]! += f.bias[i]!;
    const conv = (id: string, kp: Pair, withBias: boolean): Conv2dNode => ({
      id,
      op: 'conv2d',
      inputs: [...node.inputs],
      outChannels: c,
      kernelSize: kp,
      stride: [1, 1],
      padding: [(kp[0] - 1) / 2, (kp[1] - 1) / 2],
      dilation: [1, 1],
      groups: c,
      bias: withBias,
    });
    const weights = new Map<string, Tensor>();
    if (m.fold === 'full') {
      const big = new Float32Array(c * K * K);
      for (const f of folded) addCentred(big, [K, K], f.weight, f.kp, c);
      weights.set(`${node.id}.weight`, { shape: [c, 1, K, K], data: big });
      weights.set(`${node.id}.bias`, { shape: [c], data: bias });
      return { nodes: [conv(node.id, [K, K], true)], weights };
    }
    // two strips: the N×N kernel goes into the central N rows of the K×N strip (§7.4 a)
    const s1 = folded[0]!;
    const s2 = folded[1]!;
    const strip1 = Float32Array.from(s1.weight);
    if (small) addCentred(strip1, [K, N], folded[2]!.weight, [N, N], c);
    const id1 = `${node.id}.LoRA1`;
    const id2 = `${node.id}.LoRA2`;
    weights.set(`${id1}.weight`, { shape: [c, 1, K, N], data: strip1 });
    weights.set(`${id1}.bias`, { shape: [c], data: bias });
    weights.set(`${id2}.weight`, { shape: [c, 1, N, K], data: Float32Array.from(s2.weight) });
    const sum: AddNode = { id: node.id, op: 'add', inputs: [id1, id2] };
    return { nodes: [conv(id1, [K, N], true), conv(id2, [N, K], false), sum], weights };
  },
};
