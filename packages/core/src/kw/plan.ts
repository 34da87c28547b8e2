/**
 * KernelWarehouse planning, exact to the official `Warehouse_Manager`
 * (OSVAI/KernelWarehouse modules/kernel_warehouse.py, `store()` L266-305, `allocate()`
 * L307-326, `Attention.init_temperature` L68-86; reference/kernelwarehouse.md §1-2).
 */
import { KwError } from '../errors.js';
import type { DynamicConv2dNode, DynamicLinearNode, KwWarehouseSpec } from '../spec/types.js';
import type { AnalyzedSpec } from '../spec/validate.js';

/** The plan of one KW layer. */
export interface KwLayerPlan {
  /** Node id. */
  node: string;
  warehouse: string;
  /** 'conv2d' for dynamicConv2d, 'linear' for dynamicLinear (a 1-D conv of kernel 1 officially). */
  kind: 'conv2d' | 'linear';
  /** Static kernel shape the layer assembles per sample: `[O, I/g, kh, kw]` or `[O, I]`. */
  weightShape: number[];
  /** Input channels seen by the attention (C_in, all groups). */
  inChannels: number;
  groups: number;
  /** Output-channel blocks G_out = O / c_out. */
  gOut: number;
  /** Input-channel blocks G_in = (I/g) / c_in. */
  gIn: number;
  /** Spatial positions G_sp = kh*kw (cells are 1x1). */
  gSp: number;
  /** Cells (mixtures) of this layer, m = G_sp * G_out * G_in. */
  m: number;
  /** First warehouse cell this layer owns (allocate() pointer). */
  start: number;
  /** One past the last owned cell; `end - start` cells are Kaiming-initialised for this layer. */
  end: number;
  /** Attention hidden width max(int(C_in * r), 16). */
  hidden: number;
  /** Logits per sample: m * (n + 1) (one zero-cell logit per mixture). */
  logits: number;
  /** Non-local basis variant sizes; undefined when the plain attention is used. */
  basis: { nLocal: number; nNonlocal: number; nBasis: number } | undefined;
  /** Trainable parameters of the attention module. */
  attentionParams: number;
  /** Output bias parameters (O when the layer has a bias). */
  biasParams: number;
}

/** The plan of one warehouse. */
export interface KwWarehousePlan extends KwWarehouseSpec {
  /** Position in spec.warehouses (official warehouse id, `warehouse_manager.weights.<index>`). */
  index: number;
  /** gcd of output channels over the member layers. */
  gcdOut: number;
  /** gcd of input channels per group over the member layers. */
  gcdIn: number;
  /** Cell output channels c_out. */
  cellOut: number;
  /** Cell input channels c_in. */
  cellIn: number;
  /** Warehouse tensor shape: `[n, c_out, c_in, 1, 1]` (conv2d) or `[n, c_out, c_in, 1]` (linear). */
  shape: number[];
  /** Member layer ids in module (spec node) order. */
  layers: string[];
  /** m_t: cells of all member layers. */
  mt: number;
  /** n = max(int(b * m_t), 1). */
  n: number;
  /** n * c_out * c_in. */
  params: number;
}

/** The KernelWarehouse plan of a whole spec. */
export interface KwPlan {
  warehouses: KwWarehousePlan[];
  /** Layer plans by node id, in module order. */
  layers: Map<string, KwLayerPlan>;
}

type KwNode = (DynamicConv2dNode | DynamicLinearNode) & {
  method: { kind: 'kw'; warehouse: string };
};

function isKwNode(n: { op: string; method?: { kind: string } }): n is KwNode {
  return (n.op === 'dynamicConv2d' || n.op === 'dynamicLinear') && n.method?.kind === 'kw';
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Python's int() on a float: truncation toward zero. */
const pyInt = Math.trunc;

/**
 * Walk the one-to-one assignment (official `init_temperature`) for one layer.
 * Returns for every mixture the warehouse cell it selects at tau = 1 (or `n` for the zero
 * cell) and the pointer after the layer.
 */
export function kwAssignment(
  m: number,
  budget: number,
  start: number,
  n: number,
): { beta: Int32Array; end: number } {
  const beta = new Int32Array(m);
  let ptr = start;
  if (budget >= 1) {
    const step = pyInt(budget);
    for (let i = 0; i < m; i++) {
      beta[i] = ptr;
      ptr += step;
    }
  } else {
    const p = pyInt(1 / budget);
    for (let i = 0; i < m; i++) {
      if (i % p === Math.floor(i / p) % p) {
        beta[i] = ptr;
        ptr += 1;
      } else {
        beta[i] = n;
      }
    }
  }
  return { beta, end: ptr };
}

interface Member {
  node: KwNode;
  weightShape: number[];
  inChannels: number;
  groups: number;
}

/**
 * Budgets that tile every layer of a warehouse evenly: 1/p for p in 2..64 where every layer's m
 * is a multiple of p^2, and the integers 1..8. (The official rule also accepts some other 1/p
 * by coincidence of counts; those are not suggested.)
 */
export function tilingBudgets(ms: readonly number[]): number[] {
  const ok: number[] = [];
  for (let p = 64; p >= 2; p--) if (ms.every((m) => m % (p * p) === 0)) ok.push(1 / p);
  for (let b = 1; b <= 8; b++) ok.push(b);
  return ok;
}

function fmtBudget(b: number): string {
  if (b >= 1) return `${b}x`;
  const p = Math.round(1 / b);
  return Math.abs(1 / p - b) < 1e-12 ? `1/${p}x` : String(b);
}

/**
 * Plan every warehouse and KW layer of an analyzed spec: cell shape, m per layer, m_t, n,
 * owned cells, attention sizes. Throws PLAN_CELL_DOES_NOT_DIVIDE when a cell does not
 * divide a member layer, BUDGET_CANNOT_TILE when the one-to-one assignment would not use
 * exactly the n cells (the official code's final assertion), naming budgets that would.
 */
export function planKw(a: AnalyzedSpec): KwPlan {
  const { spec, shapes } = a;
  const members = new Map<string, Member[]>(spec.warehouses.map((w) => [w.id, []]));
  for (const node of spec.nodes) {
    if (!isKwNode(node)) continue;
    const inShape = shapes.get(node.inputs[0]!)!;
    const cin = inShape[0]!;
    const m: Member =
      node.op === 'dynamicConv2d'
        ? {
            node,
            weightShape: [
              node.outChannels,
              cin / node.groups,
              node.kernelSize[0],
              node.kernelSize[1],
            ],
            inChannels: cin,
            groups: node.groups,
          }
        : { node, weightShape: [node.outFeatures, cin], inChannels: cin, groups: 1 };
    members.get(node.method.warehouse)!.push(m);
  }

  const warehouses: KwWarehousePlan[] = [];
  const layers = new Map<string, KwLayerPlan>();
  spec.warehouses.forEach((w, index) => {
    const mem = members.get(w.id)!;
    const where = `warehouse "${w.id}"`;
    const dims = new Set(mem.map((x) => x.weightShape.length));
    if (dims.size > 1) {
      throw new KwError(
        'PLAN_MIXED_DIMENSIONS',
        `${where}: mixes conv2d and linear layers (${mem.map((x) => x.node.id).join(', ')}); give each kind its own warehouse`,
      );
    }
    let gcdOut = mem[0]!.weightShape[0]!;
    let gcdIn = mem[0]!.weightShape[1]!;
    for (const x of mem) {
      gcdOut = gcd(gcdOut, x.weightShape[0]!);
      gcdIn = gcd(gcdIn, x.weightShape[1]!);
    }
    const cellIn = Math.max(pyInt(gcdIn * w.cellInRatio), 1);
    const cellOut = Math.max(pyInt(gcdOut * w.cellOutRatio), 1);
    let mt = 0;
    const ms: number[] = [];
    for (const x of mem) {
      const [o, i] = x.weightShape as [number, number];
      if (o % cellOut !== 0 || i % cellIn !== 0) {
        throw new KwError(
          'PLAN_CELL_DOES_NOT_DIVIDE',
          `${where}: cell ${cellOut}x${cellIn} (gcd ${gcdOut}x${gcdIn} times cell ratios ${w.cellOutRatio}, ${w.cellInRatio}) does not divide layer "${x.node.id}" with kernel [${x.weightShape.join(', ')}]`,
          { warehouse: w.id, layer: x.node.id },
        );
      }
      const gSp = x.weightShape.length === 4 ? x.weightShape[2]! * x.weightShape[3]! : 1;
      const m = gSp * (o / cellOut) * (i / cellIn);
      ms.push(m);
      mt += m;
    }
    const n = Math.max(pyInt(mt * w.budget), 1);
    // allocate(): walk the layers in module order with a running pointer
    let ptr = 0;
    mem.forEach((x, k) => {
      const m = ms[k]!;
      const start = ptr;
      ptr = kwAssignment(m, w.budget, start, n).end;
      const [o, i] = x.weightShape as [number, number];
      const hidden = Math.max(pyInt(x.inChannels * w.reduction), 16);
      const logits = m * (n + 1);
      let basis: KwLayerPlan['basis'];
      let attentionParams = x.inChannels * hidden + (w.norm === 'layer' ? hidden : 0) + 2 * hidden;
      if (w.nonlocalBasisRatio < 1) {
        const nLocal = pyInt(w.budget * m);
        const nNonlocal = n - nLocal;
        const nBasis = Math.max(pyInt(nNonlocal * w.nonlocalBasisRatio), 16);
        basis = { nLocal, nNonlocal, nBasis };
        attentionParams += hidden * m * (nLocal + nBasis + 1) + nBasis * nNonlocal + logits;
      } else {
        attentionParams += hidden * logits + logits;
      }
      layers.set(x.node.id, {
        node: x.node.id,
        warehouse: w.id,
        kind: x.weightShape.length === 4 ? 'conv2d' : 'linear',
        weightShape: x.weightShape,
        inChannels: x.inChannels,
        groups: x.groups,
        gOut: o / cellOut,
        gIn: i / cellIn,
        gSp: x.weightShape.length === 4 ? x.weightShape[2]! * x.weightShape[3]! : 1,
        m,
        start,
        end: ptr,
        hidden,
        logits,
        basis,
        attentionParams,
        biasParams: x.node.bias ? o : 0,
      });
    });
    if (ptr !== n) {
      const valid = tilingBudgets(ms);
      const why =
        w.budget >= 1 && !Number.isInteger(w.budget)
          ? `a budget >= 1 gives every cell int(b) = ${pyInt(w.budget)} warehouse cells, so b must be an integer`
          : w.budget < 1 && Math.abs(1 / pyInt(1 / w.budget) - w.budget) > 1e-12
            ? `a budget < 1 must be 1/p for an integer p (found 1/${(1 / w.budget).toPrecision(6)})`
            : `with b = ${fmtBudget(w.budget)} every layer's m must be a multiple of ${pyInt(1 / w.budget) ** 2} (layer m: ${ms.join(', ')})`;
      throw new KwError(
        'BUDGET_CANNOT_TILE',
        `${where}: budget ${fmtBudget(w.budget)} cannot tile: the one-to-one init assigns ${ptr} cells but n = int(b * m_t) = ${n} (m_t = ${mt}); ${why}. Budgets that tile every layer of this warehouse evenly: ${valid.map(fmtBudget).join(', ')}`,
        { warehouse: w.id, budget: w.budget, assigned: ptr, n, mt, validBudgets: valid },
      );
    }
    const dims2 = mem[0]!.weightShape.length === 4;
    warehouses.push({
      ...w,
      index,
      gcdOut,
      gcdIn,
      cellOut,
      cellIn,
      shape: dims2 ? [n, cellOut, cellIn, 1, 1] : [n, cellOut, cellIn, 1],
      layers: mem.map((x) => x.node.id),
      mt,
      n,
      params: n * cellOut * cellIn,
    });
  });
  return { warehouses, layers };
}

/** β of a planned layer: the selected cell of each mixture at tau = 1 (n = the zero cell). */
export function kwBeta(layer: KwLayerPlan, warehouse: KwWarehousePlan): Int32Array {
  return kwAssignment(layer.m, warehouse.budget, layer.start, warehouse.n).beta;
}

/**
 * Where cell `i` of a layer lands in its kernel (official reshape/permute, L144-147):
 * `i = s * (G_out * G_in) + o * G_in + q` with `s = h * kw + w`.
 */
export function kwCellPosition(
  layer: KwLayerPlan,
  i: number,
): { h: number; w: number; o: number; q: number } {
  const per = layer.gOut * layer.gIn;
  const s = Math.floor(i / per);
  const r = i % per;
  const kw = layer.kind === 'conv2d' ? layer.weightShape[3]! : 1;
  return { h: Math.floor(s / kw), w: s % kw, o: Math.floor(r / layer.gIn), q: r % layer.gIn };
}
