/**
 * spec + weights -> ONNX. Every core op maps to standard ONNX ops (opset 17); KernelWarehouse
 * layers become a subgraph (GAP -> attention -> CAF at the exported tau -> MatMul with the
 * warehouse -> cell re-ordering -> per-sample convolution) with a dynamic batch dimension.
 */
import {
  CAF_EPS,
  checkWeights,
  foldSpec,
  KW_ATTENTION_NORM_EPS,
  KwError,
  type KwLayerPlan,
  type KwWarehousePlan,
  kwBeta,
  METHODS,
  type NodeSpec,
  paramTable,
  type Tensor,
  type WeightMap,
  warehouseParamName,
} from '@kernelwarehouse/core';
import { foldBnRows, gapNC, methodLayer, perSampleConv } from './methods.js';
import { type Dim, GraphBuilder, IR_VERSION, OPSET } from './onnx.js';

/** Options of {@link toOnnx}. */
export interface ToOnnxOptions {
  /** KW temperature tau baked into the graph (0 = inference, the default). */
  temperature?: number;
  /** Fold BatchNorm into the static conv before it when nothing else reads the conv. Default true. */
  foldBatchNorm?: boolean;
  /** Name of the graph input. Default `'input'`. */
  inputName?: string;
  /**
   * Fix the batch size at export and run each KW convolution as ONE `Conv` with
   * `group = batch x groups` on the batch folded into the channels (the PyTorch formulation).
   * Default: undefined, the batch stays dynamic (`N`) and the per-sample convolution is an im2col
   * (static one-hot depthwise `Conv`) followed by one batched `MatMul`. ONNX `Conv`'s `group` is a
   * static attribute, so the folded form cannot keep the batch dynamic.
   */
  batch?: number;
}

/** What {@link toOnnxWithInfo} reports besides the bytes. */
export interface OnnxExport {
  bytes: Uint8Array;
  opset: number;
  irVersion: number;
  /** Op histogram of the emitted graph. */
  ops: Record<string, number>;
  initializerBytes: number;
  inputName: string;
  /** Graph output names (the spec's output node ids). */
  outputNames: string[];
}

/**
 * Export a spec and its weights as an ONNX model (opset 17, IR 8) with a dynamic batch
 * dimension `N`: input `[N, ...spec.inputShape]`, one output per spec output, named by node id.
 *
 * @example
 * const bytes = toOnnx(spec, weights);            // tau = 0
 * const session = await createSession(bytes);    // onnxruntime-web
 */
export function toOnnx(spec: unknown, weights: WeightMap, options: ToOnnxOptions = {}): Uint8Array {
  return toOnnxWithInfo(spec, weights, options).bytes;
}

/** {@link toOnnx} plus the op histogram, initializer bytes and names. */
export function toOnnxWithInfo(
  spec: unknown,
  weights: WeightMap,
  options: ToOnnxOptions = {},
): OnnxExport {
  checkWeights(spec, weights);
  // methods with an inference-time form (DO-Conv, SLaK) are exported folded into plain convs
  const foldable = paramTable(spec).analyzed.spec.nodes.some(
    (n) =>
      (n.op === 'dynamicConv2d' || n.op === 'dynamicLinear') &&
      n.method.kind !== 'kw' &&
      METHODS.get(n.method.kind)?.fold,
  );
  if (foldable) ({ spec, weights } = foldSpec(spec, weights));
  const table = paramTable(spec);
  const { spec: s, shapes } = table.analyzed;
  const tau = options.temperature ?? 0;
  if (!(tau >= 0 && tau <= 1))
    throw new KwError('ARGUMENT_INVALID', `temperature must be in [0, 1], found ${tau}`);
  const fold = options.foldBatchNorm ?? true;
  const batch = options.batch;
  if (batch !== undefined && !(Number.isInteger(batch) && batch >= 1)) {
    throw new KwError('ARGUMENT_INVALID', `batch must be an integer >= 1, found ${batch}`);
  }
  const batchDim: Dim = batch ?? 'N';
  const g = new GraphBuilder();
  const inputName = options.inputName ?? 'input';
  const values = new Map<string, string>();
  values.set('input', g.input(inputName, [batchDim, ...s.inputShape]));
  const W = (name: string): Tensor => weights.get(name)!;

  // uses of each value, to fold BN only into a conv nothing else reads
  const uses = new Map<string, number>();
  for (const n of s.nodes) for (const i of n.inputs) uses.set(i, (uses.get(i) ?? 0) + 1);
  for (const o of s.outputs) uses.set(o, (uses.get(o) ?? 0) + 1);
  const folded = new Set<string>();

  for (const node of s.nodes) {
    if (folded.has(node.id)) continue;
    const xs = node.inputs.map((i) => values.get(i)!);
    const inShape = shapes.get(node.inputs[0]!)!;
    const outShape = shapes.get(node.id)!;
    let out: string;
    switch (node.op) {
      case 'conv2d': {
        let weight = W(`${node.id}.weight`).data;
        let bias = node.bias ? W(`${node.id}.bias`).data : undefined;
        const next = s.nodes.find((n) => n.op === 'batchNorm' && n.inputs[0] === node.id);
        if (fold && next && next.op === 'batchNorm' && uses.get(node.id) === 1) {
          ({ weight, bias } = foldBn(weight, bias, node.outChannels, next, W));
          folded.add(next.id);
          const fused = convOp(g, xs[0]!, node, weight, bias, inShape[0]!);
          values.set(next.id, fused);
          values.set(node.id, fused);
          continue;
        }
        out = convOp(g, xs[0]!, node, weight, bias, inShape[0]!);
        break;
      }
      case 'linear': {
        const b = node.bias ? W(`${node.id}.bias`).data : new Float32Array(node.outFeatures);
        out = g.op(
          'Gemm',
          [
            xs[0]!,
            g.float(
              `${node.id}.weight`,
              W(`${node.id}.weight`).shape as number[],
              W(`${node.id}.weight`).data,
            ),
            g.float(`${node.id}.bias`, [node.outFeatures], b),
          ],
          { transB: 1 },
        );
        break;
      }
      case 'batchNorm': {
        const c = inShape[0]!;
        out = g.op(
          'BatchNormalization',
          [
            xs[0]!,
            g.float('bn_scale', [c], W(`${node.id}.weight`).data),
            g.float('bn_bias', [c], W(`${node.id}.bias`).data),
            g.float('bn_mean', [c], W(`${node.id}.running_mean`).data),
            g.float('bn_var', [c], W(`${node.id}.running_var`).data),
          ],
          { epsilon: { float: node.eps } },
        );
        break;
      }
      case 'layerNorm':
        out = layerNormChannels(
          g,
          xs[0]!,
          inShape.length,
          W(`${node.id}.weight`).data,
          W(`${node.id}.bias`).data,
          node.eps,
        );
        break;
      case 'relu':
        out = g.op('Relu', [xs[0]!]);
        break;
      case 'relu6':
        out = g.op('Clip', [xs[0]!, g.scalar('zero', 0), g.scalar('six', 6)]);
        break;
      case 'sigmoid':
        out = g.op('Sigmoid', [xs[0]!]);
        break;
      case 'gelu': {
        const e = g.op('Erf', [g.op('Div', [xs[0]!, g.scalar('sqrt2', Math.SQRT2)])]);
        out = g.op('Mul', [
          g.op('Mul', [xs[0]!, g.scalar('half', 0.5)]),
          g.op('Add', [e, g.scalar('one', 1)]),
        ]);
        break;
      }
      case 'add':
        out = xs.length === 2 ? g.op('Add', xs) : g.op('Sum', xs);
        break;
      case 'mul':
        if (xs.length === 2) out = g.op('Mul', xs);
        else {
          const c = inShape[0]!;
          const dims = inShape.length === 3 ? [c, 1, 1] : [c];
          out = g.op('Mul', [
            xs[0]!,
            g.float(`${node.id}.gamma`, dims, W(`${node.id}.gamma`).data),
          ]);
        }
        break;
      case 'maxPool':
      case 'avgPool': {
        const attrs: Record<string, number[] | number> = {
          kernel_shape: node.kernelSize,
          strides: node.stride,
          pads: [node.padding[0], node.padding[1], node.padding[0], node.padding[1]],
        };
        if (node.op === 'avgPool') attrs.count_include_pad = 1;
        out = g.op(node.op === 'maxPool' ? 'MaxPool' : 'AveragePool', [xs[0]!], attrs);
        break;
      }
      case 'globalAvgPool':
        out = g.op('GlobalAveragePool', [xs[0]!]);
        break;
      case 'flatten':
        out = g.op('Flatten', [xs[0]!], { axis: 1 });
        break;
      case 'dropout':
      case 'identity':
        out = g.op('Identity', [xs[0]!]);
        break;
      case 'dynamicConv2d':
      case 'dynamicLinear': {
        if (node.method.kind !== 'kw') {
          out = methodLayer(g, xs[0]!, node, W, inShape, outShape, batch);
          break;
        }
        const layer = table.kw.layers.get(node.id)!;
        const wh = table.kw.warehouses.find((w) => w.id === layer.warehouse)!;
        out = kwLayer(g, xs[0]!, node, layer, wh, W, inShape, outShape, tau, batch);
        break;
      }
    }
    values.set(node.id, out);
  }
  for (const o of s.outputs) g.output(o, values.get(o)!, [batchDim, ...shapes.get(o)!] as Dim[]);
  const bytes = g.model(s.name, `${s.name} exported by @kernelwarehouse/ort-web (KW tau = ${tau})`);
  return {
    bytes,
    opset: OPSET,
    irVersion: IR_VERSION,
    ops: Object.fromEntries(g.ops),
    initializerBytes: g.initializerBytes,
    inputName,
    outputNames: [...s.outputs],
  };
}

function foldBn(
  weight: Float32Array,
  bias: Float32Array | undefined,
  o: number,
  bn: NodeSpec & { op: 'batchNorm' },
  W: (n: string) => Tensor,
) {
  return foldBnRows(
    weight,
    bias,
    o,
    {
      gamma: W(`${bn.id}.weight`).data,
      beta: W(`${bn.id}.bias`).data,
      mean: W(`${bn.id}.running_mean`).data,
      variance: W(`${bn.id}.running_var`).data,
    },
    bn.eps,
  );
}

function convOp(
  g: GraphBuilder,
  x: string,
  node: NodeSpec & { op: 'conv2d' },
  weight: Float32Array,
  bias: Float32Array | undefined,
  cin: number,
): string {
  const [kh, kw] = node.kernelSize;
  const inputs = [
    x,
    g.float(`${node.id}.weight`, [node.outChannels, cin / node.groups, kh, kw], weight),
  ];
  if (bias) inputs.push(g.float(`${node.id}.bias`, [node.outChannels], bias));
  return g.op('Conv', inputs, {
    kernel_shape: [kh, kw],
    strides: node.stride,
    pads: [node.padding[0], node.padding[1], node.padding[0], node.padding[1]],
    dilations: node.dilation,
    group: node.groups,
  });
}

/** LayerNorm over axis 1: rank-2 directly, rank-4 through NHWC. */
function layerNormChannels(
  g: GraphBuilder,
  x: string,
  rank: number,
  scale: Float32Array,
  bias: Float32Array,
  eps: number,
): string {
  const c = scale.length;
  const s = g.float('ln_scale', [c], scale);
  const b = g.float('ln_bias', [c], bias);
  if (rank === 1)
    return g.op('LayerNormalization', [x, s, b], { axis: -1, epsilon: { float: eps } });
  const t = g.op('Transpose', [x], { perm: [0, 2, 3, 1] });
  const n = g.op('LayerNormalization', [t, s, b], { axis: -1, epsilon: { float: eps } });
  return g.op('Transpose', [n], { perm: [0, 3, 1, 2] });
}

/** The KW attention, CAF and assembly: returns `[N, m, n]` attentions and the per-sample kernels. */
function kwLayer(
  g: GraphBuilder,
  x: string,
  node: NodeSpec & { op: 'dynamicConv2d' | 'dynamicLinear' },
  layer: KwLayerPlan,
  wh: KwWarehousePlan,
  W: (n: string) => Tensor,
  inShape: number[],
  outShape: number[],
  tau: number,
  batch: number | undefined,
): string {
  const id = node.id;
  const a = (n: string) => W(`${id}.attention.${n}`);
  const h = layer.hidden;
  const c = layer.inChannels;
  const n = wh.n;
  const m = layer.m;
  const pooled = gapNC(g, x, inShape.length);
  // fc1 (+ BatchNorm1d folded in at inference, or LayerNorm)
  let hid: string;
  if (wh.norm === 'batch') {
    const { weight: wf, bias: bf } = foldBnRows(
      a('fc1.weight').data,
      undefined,
      h,
      {
        gamma: a('norm1.weight').data,
        beta: a('norm1.bias').data,
        mean: a('norm1.running_mean').data,
        variance: a('norm1.running_var').data,
      },
      KW_ATTENTION_NORM_EPS,
    );
    hid = g.op(
      'Gemm',
      [pooled, g.float(`${id}.fc1`, [h, c], wf), g.float(`${id}.fc1_b`, [h], bf)],
      { transB: 1 },
    );
  } else {
    const lin = g.op(
      'Gemm',
      [
        pooled,
        g.float(`${id}.fc1`, [h, c], a('fc1.weight').data),
        g.float(`${id}.fc1_b`, [h], a('fc1.bias').data),
      ],
      { transB: 1 },
    );
    hid = g.op(
      'LayerNormalization',
      [
        lin,
        g.float('ln_s', [h], a('norm1.weight').data),
        g.float('ln_b', [h], a('norm1.bias').data),
      ],
      {
        axis: -1,
        epsilon: { float: KW_ATTENTION_NORM_EPS },
      },
    );
  }
  hid = g.op('Relu', [hid]);
  // logits [N, m*(n+1)]
  let logits: string;
  if (layer.basis) {
    const { nLocal, nNonlocal, nBasis } = layer.basis;
    const per = nLocal + nBasis + 1;
    const raw = g.op('MatMul', [
      hid,
      g.float(`${id}.fc2T`, [h, m * per], transpose(a('fc2.weight').data, m * per, h)),
    ]);
    const rows = g.op('Reshape', [raw, g.int64('shape', [-1, per])]);
    const sl = (from: number, to: number) =>
      g.op('Slice', [rows, g.int64('st', [from]), g.int64('en', [to]), g.int64('ax', [1])]);
    const local = sl(0, nLocal);
    const zero = sl(per - 1, per);
    const parts: string[] = [];
    if (nNonlocal > 0) {
      const non = g.op('MatMul', [
        sl(nLocal, nLocal + nBasis),
        g.float(
          `${id}.fc3T`,
          [nBasis, nNonlocal],
          transpose(a('fc3.weight').data, nNonlocal, nBasis),
        ),
      ]);
      const cut = Math.min(layer.start, nNonlocal);
      const nsl = (from: number, to: number) =>
        g.op('Slice', [non, g.int64('st', [from]), g.int64('en', [to]), g.int64('ax', [1])]);
      if (cut > 0) parts.push(nsl(0, cut));
      parts.push(local);
      if (cut < nNonlocal) parts.push(nsl(cut, nNonlocal));
    } else parts.push(local);
    parts.push(zero);
    const cat = g.op('Concat', parts, { axis: 1 });
    logits = g.op('Add', [
      g.op('Reshape', [cat, g.int64('shape', [-1, m * (n + 1)])]),
      g.float(`${id}.basis_bias`, [m * (n + 1)], a('basis_bias').data),
    ]);
  } else {
    logits = g.op(
      'Gemm',
      [
        hid,
        g.float(`${id}.fc2`, [m * (n + 1), h], a('fc2.weight').data),
        g.float(`${id}.fc2_b`, [m * (n + 1)], a('fc2.bias').data),
      ],
      { transB: 1 },
    );
  }
  // CAF: z / (sum|z| + 1e-3) per mixture, (1 - tau) * z + tau * beta, zero cell dropped
  const z = g.op('Reshape', [logits, g.int64('shape', [-1, m, n + 1])]);
  const denom = g.op('Add', [
    g.op('ReduceSum', [g.op('Abs', [z]), g.int64('axes', [2])], { keepdims: 1 }),
    g.scalar('eps', CAF_EPS),
  ]);
  let alpha = g.op('Div', [z, denom]);
  if (tau > 0) {
    const beta = new Float32Array(m * (n + 1));
    kwBeta(layer, wh).forEach((j, i) => {
      beta[i * (n + 1) + j] = tau;
    });
    alpha = g.op('Add', [
      g.op('Mul', [alpha, g.scalar('one_minus_tau', 1 - tau)]),
      g.float(`${id}.beta`, [m, n + 1], beta),
    ]);
  }
  alpha = g.op('Slice', [alpha, g.int64('st', [0]), g.int64('en', [n]), g.int64('ax', [2])]);
  // assembly: [N, m, n] x [n, c_out*c_in] -> [N, m, c_out*c_in] -> kernel
  // the warehouse initializer is shared by every layer that draws from it (stored once)
  const warehouse = g.shared(`warehouse:${wh.id}`, () =>
    g.float(`${wh.id}.warehouse`, [n, wh.cellOut * wh.cellIn], W(warehouseParamName(wh.id)).data),
  );
  const cells = g.op('MatMul', [alpha, warehouse]);
  const o = layer.weightShape[0]!;
  const ig = layer.weightShape[1]!;
  const bias = layer.biasParams ? W(`${id}.bias`).data : undefined;
  if (layer.kind === 'linear') {
    // [N, G_out, G_in, c_out, c_in] -> [N, G_out, c_out, G_in, c_in] -> [N, O, I]
    const r = g.op('Reshape', [
      cells,
      g.int64('shape', [-1, layer.gOut, layer.gIn, wh.cellOut, wh.cellIn]),
    ]);
    const k = g.op('Reshape', [
      g.op('Transpose', [r], { perm: [0, 1, 3, 2, 4] }),
      g.int64('shape', [-1, o, ig]),
    ]);
    const xcol = g.op('Unsqueeze', [x, g.int64('axes', [2])]);
    let y = g.op('Reshape', [g.op('MatMul', [k, xcol]), g.int64('shape', [-1, o])]);
    if (bias) y = g.op('Add', [y, g.float(`${id}.bias`, [o], bias)]);
    return y;
  }
  const conv = node as NodeSpec & { op: 'dynamicConv2d' };
  const [kh, kw] = conv.kernelSize;
  // [N, kh, kw, G_out, G_in, c_out, c_in] -> [N, G_out, c_out, G_in, c_in, kh, kw] = [N, O, I/g, kh, kw]
  const r = g.op('Reshape', [
    cells,
    g.int64('shape', [-1, kh, kw, layer.gOut, layer.gIn, wh.cellOut, wh.cellIn]),
  ]);
  const oihw = g.op('Transpose', [r], { perm: [0, 3, 5, 4, 6, 1, 2] });
  return perSampleConv(
    g,
    x,
    id,
    conv,
    oihw,
    inShape,
    outShape,
    batch,
    bias ? { shared: bias } : undefined,
  );
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]!;
  return t;
}
