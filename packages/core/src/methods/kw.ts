/**
 * KernelWarehouse as a registered method (official modules/kernel_warehouse.py; reference/
 * kernelwarehouse.md). Its layers share warehouses: the `planGroups` hook plans every warehouse
 * of a spec once (kw/plan.ts, the official `Warehouse_Manager`), `sharedParams` declares the
 * warehouse tensors, and the forward below (attention, CAF, the
 * `[nonlocal[:start] | local | nonlocal[start:] | zero]` order, kernel assembly with the cell
 * re-ordering, per-sample conv) is the only copy every backend runs.
 */
import { type InitRule, type ParamDecl, paramDecl, warehouseParamName } from '../decl.js';
import { describeValue, KwError } from '../errors.js';
import { CAF_EPS } from '../kw/attention.js';
import { parseBudget } from '../kw/budget.js';
import { type KwLayerPlan, type KwPlan, type KwWarehousePlan, kwBeta, planKw } from '../kw/plan.js';
import { ReferenceOps } from '../ops/reference.js';
import type { ConvAttrs, Ops } from '../ops/seam.js';
import type { DynamicConv2dNode, KwMethodRef } from '../spec/types.js';
import type { Tensor } from '../tensor.js';
import { convAttrs } from './common.js';
import type { DynamicMethod, DynamicNode } from './types.js';

/** Eps of the attention's BatchNorm1d / LayerNorm (PyTorch defaults). */
export const KW_ATTENTION_NORM_EPS = 1e-5;
/** Momentum of the attention's BatchNorm1d in training (PyTorch default). */
export const KW_ATTENTION_NORM_MOMENTUM = 0.1;

/** The plan of one KW layer and its warehouse. */
export interface KwLayerGroup {
  layer: KwLayerPlan;
  warehouse: KwWarehousePlan;
}

/** The layer and warehouse plans of node `id` in a spec's KW plan. */
export function kwLayerGroup(plan: KwPlan, id: string): KwLayerGroup {
  const layer = plan.layers.get(id);
  const warehouse = layer && plan.warehouses.find((w) => w.id === layer.warehouse);
  if (!layer || !warehouse) {
    throw new KwError('SPEC_UNKNOWN_WAREHOUSE', `node "${id}" is not a planned KW layer`, {
      node: id,
    });
  }
  return { layer, warehouse };
}

/**
 * KW attention logits `[N, m·(n+1)]`: GAP -> fc1 -> BatchNorm / LayerNorm -> ReLU -> fc2 (and,
 * with the non-local basis, fc3 on the basis part and the
 * `[nonlocal[:start] | local | nonlocal[start:] | zero]` order, plus `basis_bias`).
 */
export function kwLogits<T>(ops: Ops<T>, x: T, image: boolean, g: KwLayerGroup): T {
  const { layer, warehouse: wh } = g;
  const pooled = image ? ops.globalAvgPool(x) : x;
  const p = (n: string) => ops.param(`attention.${n}`);
  let h = ops.linear(pooled, p('fc1.weight'), wh.norm === 'layer' ? p('fc1.bias') : undefined);
  h =
    wh.norm === 'layer'
      ? ops.layerNorm(h, 'attention.norm1', KW_ATTENTION_NORM_EPS)
      : ops.batchNorm(h, 'attention.norm1', KW_ATTENTION_NORM_EPS, KW_ATTENTION_NORM_MOMENTUM);
  h = ops.relu(h);
  if (!layer.basis) return ops.linear(h, p('fc2.weight'), p('fc2.bias'));
  const { nLocal, nNonlocal, nBasis } = layer.basis;
  const per = nLocal + nBasis + 1;
  const rows = ops.reshape(ops.linear(h, p('fc2.weight')), [-1, per]); // [N·m, per]
  const local = ops.slice(rows, 1, 0, nLocal);
  const parts: T[] = [];
  if (nNonlocal > 0) {
    const nonlocal = ops.linear(ops.slice(rows, 1, nLocal, nLocal + nBasis), p('fc3.weight'));
    const cut = Math.min(layer.start, nNonlocal);
    if (cut > 0) parts.push(ops.slice(nonlocal, 1, 0, cut));
    parts.push(local);
    if (cut < nNonlocal) parts.push(ops.slice(nonlocal, 1, cut, nNonlocal));
  } else parts.push(local);
  parts.push(ops.slice(rows, 1, per - 1, per));
  const z = ops.reshape(ops.concat(parts, 1), [-1, layer.logits]);
  return ops.add(z, p('basis_bias'));
}

/**
 * CAF (contrasting-driven attention function) on logits `[N, m·(n+1)]`: per mixture
 * `(1 - tau) · z / (Σ|z| + 1e-3) + tau · onehot(beta)`, zero cell dropped: `[N, m, n]`.
 */
export function kwCaf<T>(ops: Ops<T>, logits: T, g: KwLayerGroup, tau: number): T {
  if (!(tau >= 0 && tau <= 1)) {
    throw new KwError('ARGUMENT_INVALID', `temperature tau must be in [0, 1], found ${tau}`);
  }
  const { layer, warehouse: wh } = g;
  const n = wh.n;
  const m = layer.m;
  const z = ops.reshape(logits, [-1, m, n + 1]);
  let alpha = ops.div(z, ops.addScalar(ops.sum(ops.abs(z), 2, true), CAF_EPS));
  if (tau > 0) {
    const beta = new Float32Array(m * (n + 1));
    kwBeta(layer, wh).forEach((j, i) => {
      beta[i * (n + 1) + j] = tau;
    });
    alpha = ops.add(ops.mulScalar(alpha, 1 - tau), ops.constant(beta, [m, n + 1]));
  }
  return ops.slice(alpha, 2, 0, n);
}

/**
 * The warehouse as `[n, c_out·c_in]`, or with `io` as `[n, c_in·c_out]` (each cell transposed):
 * for a backend whose per-sample conv is HWIO, the assembled cells of a layer with G_out = 1 are
 * then HWIO already. That transpose is of the warehouse (n cells), not of the N·m assembled
 * ones. The forward's products and their order of summation are the same; the attention's
 * gradient sums over a cell in the other order (float rounding).
 */
function warehouseCells<T>(ops: Ops<T>, g: KwLayerGroup, io = false): T {
  const wh = g.warehouse;
  const w = ops.shared(warehouseParamName(wh.id));
  if (!io) return ops.reshape(w, [wh.n, wh.cellOut * wh.cellIn]);
  const cells = ops.reshape(w, [wh.n, wh.cellOut, wh.cellIn]);
  return ops.reshape(ops.transpose(cells, [0, 2, 1]), [wh.n, wh.cellIn * wh.cellOut]);
}

/** Axis order taking the cells `[N, kh, kw, G_out, G_in, c_out, c_in]` to OIHW order. */
export const KW_CELLS_TO_OIHW = [0, 3, 5, 4, 6, 1, 2];

/** The same for cells assembled from the transposed warehouse, `[N, kh, kw, G_out, G_in, c_in, c_out]`. */
export const KW_IO_CELLS_TO_OIHW = [0, 3, 6, 4, 5, 1, 2];

/**
 * Assembled cells `[N, m, c_out·c_in]` of a conv layer as `[N, kh, kw, G_out, G_in, c_out, c_in]`
 * (`io`: `[N, m, c_in·c_out]` as `[..., c_in, c_out]`).
 */
function kwCells<T>(ops: Ops<T>, cells: T, g: KwLayerGroup, io = false): T {
  const { layer, warehouse: wh } = g;
  const [kh, kw] = [layer.weightShape[2]!, layer.weightShape[3]!];
  const cell = io ? [wh.cellIn, wh.cellOut] : [wh.cellOut, wh.cellIn];
  return ops.reshape(cells, [-1, kh, kw, layer.gOut, layer.gIn, ...cell]);
}

/**
 * Per-sample kernels from attentions `[N, m, n]` and the warehouse: `[N, O, I/g, kh, kw]` in
 * element order (`[N, O, I]` for a linear layer). Cell i of a layer is `i = s·(G_out·G_in) + o·G_in + q` with
 * `s = h·kw + w` (official reshape/permute).
 */
export function kwAssemble<T>(ops: Ops<T>, alpha: T, g: KwLayerGroup): T {
  const { layer, warehouse: wh } = g;
  const cells = ops.matMul(alpha, warehouseCells(ops, g)); // [N, m, cOut·cIn]
  const [o, ig] = layer.weightShape as [number, number];
  if (layer.kind === 'linear') {
    const r = ops.reshape(cells, [-1, layer.gOut, layer.gIn, wh.cellOut, wh.cellIn]);
    return ops.reshape(ops.transpose(r, [0, 1, 3, 2, 4]), [-1, o, ig]);
  }
  const r = kwCells(ops, cells, g);
  // [N, kh, kw, G_out, G_in, c_out, c_in] -> [N, G_out, c_out, G_in, c_in, kh, kw], which is
  // [N, O, I/g, kh, kw] in element order (what a per-sample conv takes)
  return ops.transpose(r, KW_CELLS_TO_OIHW);
}

/**
 * The kernel of a KW layer whose attention is constant, `[O, I/g, kh, kw]` (`[O, I]` linear): at
 * tau = 1 CAF gives every cell exactly its one-to-one init cell (beta; the zero cell: zeros),
 * whatever the input, so the kernel is those warehouse cells in place.
 */
export function kwStaticKernel<T>(ops: Ops<T>, g: KwLayerGroup): T {
  const { layer, warehouse: wh } = g;
  const alpha = new Float32Array(layer.m * wh.n);
  kwBeta(layer, wh).forEach((j, i) => {
    if (j < wh.n) alpha[i * wh.n + j] = 1;
  });
  const k = kwAssemble(ops, ops.constant(alpha, [1, layer.m, wh.n]), g);
  return ops.reshape(k, [...layer.weightShape]);
}

/**
 * The KW layer forward: attention, CAF at `tau`, assembly, per-sample conv (or matmul) + bias.
 * In inference at tau = 1 the attention is constant (see {@link kwStaticKernel}) and the layer
 * is one ordinary conv (or linear) with that kernel: no attention, no per-sample kernels. (In
 * training the attention still runs: its BatchNorm updates running statistics, as the official
 * module's does at any tau.)
 */
export function kwForward<T>(
  ops: Ops<T>,
  x: T,
  node: DynamicNode,
  g: KwLayerGroup,
  tau: number,
): T {
  const image = node.op === 'dynamicConv2d';
  const bias = g.layer.biasParams ? ops.param('bias') : undefined;
  if (tau === 1 && !ops.training) {
    const k = kwStaticKernel(ops, g);
    return image ? ops.conv2d(x, k, bias, convAttrs(node)) : ops.linear(x, k, bias);
  }
  const alpha = kwCaf(ops, kwLogits(ops, x, image, g), g, tau);
  if (node.op === 'dynamicConv2d') {
    const mixed = kwMixedConv(ops, x, alpha, node, g, bias);
    if (mixed !== undefined) return mixed;
    // the cell re-ordering goes to the conv as a permutation: a backend folds it into its layout
    const io = ops.kernelLayout === 'hwio';
    const cells = ops.matMul(alpha, warehouseCells(ops, g, io));
    return ops.perSampleConv(
      x,
      kwCells(ops, cells, g, io),
      convAttrs(node),
      bias ? { shared: bias } : undefined,
      io ? KW_IO_CELLS_TO_OIHW : KW_CELLS_TO_OIHW,
    );
  }
  const kernels = kwAssemble(ops, alpha, g);
  const o = g.layer.weightShape[0]!;
  const i = g.layer.weightShape[1]!;
  // [N, O, I] x [N, I, 1] -> [N, O]
  const y = ops.reshape(ops.matMul(kernels, ops.reshape(x, [-1, i, 1])), [-1, o]);
  return bias ? ops.add(y, bias) : y;
}

/**
 * A KW conv in its mixed form, where the backend's {@link Ops.mixTaps} takes it: every cell is a
 * mixture of the warehouse cells, so `y_g = sum_k W_k^T z_(g,k)` with `z_(g,k)` the input's taps
 * mixed by the attention's column k (`mixTaps`). The warehouse is then applied once, as a
 * grouped 1x1 conv shared by the batch (groups G_out, each with the weight `[c_out, n·c_in, 1, 1]`
 * whose row o and column `(k, c)` are cell k's `[o, c]`: {@link Ops.sharedGroupsConv1x1}, or the
 * weight repeated for a grouped {@link Ops.conv2d}), and no per-sample kernel is assembled. The
 * same sums as the assembled form, in another order (float rounding). `undefined` where the
 * backend has no `mixTaps` or declines it, and for grouped or dilated convs.
 */
function kwMixedConv<T>(
  ops: Ops<T>,
  x: T,
  alpha: T,
  node: DynamicConv2dNode,
  g: KwLayerGroup,
  bias: T | undefined,
): T | undefined {
  const { layer, warehouse: wh } = g;
  const a = convAttrs(node);
  if (!ops.mixTaps || a.groups !== 1 || a.dilation[0] !== 1 || a.dilation[1] !== 1) {
    return undefined;
  }
  const { gOut, gIn } = layer;
  const z = ops.mixTaps(x, alpha, { ...a, gOut, gIn, cellOut: wh.cellOut, n: wh.n });
  if (z === undefined) return undefined;
  const cells = ops.reshape(ops.shared(warehouseParamName(wh.id)), [wh.n, wh.cellOut, wh.cellIn]);
  const w = ops.reshape(ops.transpose(cells, [1, 0, 2]), [wh.cellOut, wh.n * wh.cellIn, 1, 1]);
  if (gOut > 1 && ops.sharedGroupsConv1x1) return ops.sharedGroupsConv1x1(z, w, gOut, bias);
  const weight = gOut === 1 ? w : ops.concat(new Array<T>(gOut).fill(w), 0);
  const pointwise: ConvAttrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: gOut };
  return ops.conv2d(z, weight, bias, pointwise);
}

/** Options of the Float32Array helpers below. */
export interface KwForwardOptions {
  mode: 'inference' | 'train';
  /** tau in [0, 1]; 0 is the inference setting. */
  temperature: number;
}

/** Geometry of a KW conv layer (from its spec node). */
export type KwConvGeometry = ConvAttrs;

/**
 * Reference attention of a KW layer on a batch (Float32Array): `alpha [N·m, n]` (zero cell
 * dropped) and the pre-CAF `logits [N, m·(n+1)]`. `w(name)` returns `<layer>.<name>`.
 */
export function kwAttention(
  layer: KwLayerPlan,
  wh: KwWarehousePlan,
  x: Tensor,
  w: (name: string) => Tensor,
  opts: KwForwardOptions,
): { alpha: Float32Array; logits: Float32Array } {
  const ops = new ReferenceOps({
    param: w,
    training: opts.mode === 'train',
    where: `KW layer "${layer.node}"`,
  });
  const g = { layer, warehouse: wh };
  const logits = kwLogits(ops, x, x.shape.length === 4, g);
  return { alpha: kwCaf(ops, logits, g, opts.temperature).data, logits: logits.data };
}

/** The KernelWarehouse method module (kind `kw`). */
export const kwMethod: DynamicMethod<KwMethodRef, KwPlan> = {
  kind: 'kw',
  textForm: {
    fields: ['budget'],
    parse: (_field, text) => parseBudget(text),
    // a warehouse setting, not a node one: `kw` alone is the 1x budget
    settings: (raw) => ({ kind: 'kw', budget: raw.budget ?? 1 }),
  },
  normalize(where, raw, ctx) {
    for (const k of Object.keys(raw)) {
      if (k !== 'kind' && k !== 'warehouse') {
        throw new KwError(
          'SPEC_BAD_FIELD',
          `${where}: method "kw" has no setting "${k}"; known: warehouse (the budget and cell settings live on the warehouse)`,
          { field: `method.${k}` },
        );
      }
    }
    const ids = ctx?.warehouses;
    if (typeof raw.warehouse !== 'string' || (ids && !ids.has(raw.warehouse))) {
      throw new KwError(
        'SPEC_UNKNOWN_WAREHOUSE',
        `${where}: method.warehouse ${describeValue(raw.warehouse)} is not one of the spec's warehouses [${[...(ids ?? [])].join(', ')}]`,
        { field: 'method.warehouse', actual: raw.warehouse },
      );
    }
    return { kind: 'kw', warehouse: raw.warehouse };
  },
  groupOf: (settings) => settings.warehouse,
  planGroups: planKw,
  sharedParams(plan) {
    return plan.warehouses.map((w) =>
      paramDecl(undefined, warehouseParamName(w.id), w.shape, {
        kind: 'kwWarehouse',
        warehouse: w.id,
      }),
    );
  },
  params({ node, group }) {
    const { layer: l, warehouse: w } = kwLayerGroup(group, node.id);
    const h = l.hidden;
    const fan = (out: number): InitRule => ({ kind: 'kaimingNormalFanOut', fanOut: out });
    const d = (name: string, shape: number[], init: InitRule, role?: 'buffer') =>
      paramDecl(undefined, name, shape, init, role);
    const zero: InitRule = { kind: 'const', value: 0 };
    const one: InitRule = { kind: 'const', value: 1 };
    const out: ParamDecl[] = [d('attention.fc1.weight', [h, l.inChannels], fan(h))];
    if (w.norm === 'layer') out.push(d('attention.fc1.bias', [h], zero));
    out.push(d('attention.norm1.weight', [h], one));
    out.push(d('attention.norm1.bias', [h], zero));
    if (w.norm === 'batch') {
      out.push(d('attention.norm1.running_mean', [h], zero, 'buffer'));
      out.push(d('attention.norm1.running_var', [h], one, 'buffer'));
    }
    if (l.basis) {
      const rows = l.m * (l.basis.nLocal + l.basis.nBasis + 1);
      out.push(d('attention.fc2.weight', [rows, h], fan(rows)));
      out.push(
        d('attention.fc3.weight', [l.basis.nNonlocal, l.basis.nBasis], fan(l.basis.nNonlocal)),
      );
      out.push(d('attention.basis_bias', [l.logits], zero));
    } else {
      out.push(d('attention.fc2.weight', [l.logits, h], fan(l.logits)));
      out.push(d('attention.fc2.bias', [l.logits], zero));
    }
    if (l.biasParams) out.push(d('bias', [l.weightShape[0]!], zero));
    return out;
  },
  macs({ node, group, inShape }, outShape) {
    const { layer: l, warehouse: wh } = kwLayerGroup(group, node.id);
    const kernelFloats = l.weightShape.reduce((a, b) => a * b, 1);
    const plane = (outShape[1] ?? 1) * (outShape[2] ?? 1);
    // GAP over the layer input (counted as one MAC per element) + the attention FCs
    let att = inShape.reduce((a, d) => a * d, 1) + l.inChannels * l.hidden;
    if (l.basis)
      att +=
        l.hidden * l.m * (l.basis.nLocal + l.basis.nBasis + 1) +
        l.m * l.basis.nBasis * l.basis.nNonlocal;
    else att += l.hidden * l.logits;
    return { conv: kernelFloats * plane, attention: att, assembly: wh.n * kernelFloats };
  },
  forward(ops, x, { node, group, temperature }) {
    return kwForward(ops, x, node, kwLayerGroup(group, node.id), temperature);
  },
};
