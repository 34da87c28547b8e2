/**
 * spec + weights -> ONNX. Every core op maps to standard ONNX ops (opset 17); a dynamic layer
 * (KernelWarehouse or any other registered method) becomes the subgraph its one forward in core
 * builds on the ONNX implementation of the op seam (`ops.ts`), with a dynamic batch dimension.
 */
import {
  checkWeights,
  describeValue,
  foldSpec,
  KwError,
  layerContext,
  METHODS,
  type NodeSpec,
  paramTable,
  type Tensor,
  type WeightMap,
} from '@kernelwarehouse/core';
import { foldBnRows } from './methods.js';
import { type Dim, GraphBuilder, IR_VERSION, OPSET, onnxPads } from './onnx.js';
import { OnnxOps } from './ops.js';

/** Options of {@link toOnnx}. */
export interface ToOnnxOptions {
  /** KW temperature tau baked into the graph (0 = inference, the default). */
  temperature?: number;
  /** Fold BatchNorm into the static conv before it when nothing else reads the conv. Default true. */
  foldBatchNorm?: boolean;
  /**
   * Name of the graph input. Default `'input'`. A non-empty string without control characters
   * that is not also the name of a graph output (a spec output node id).
   */
  inputName?: string;
  /**
   * Fix the batch size at export and run each KW convolution as ONE `Conv` with
   * `group = batch x groups` on the batch folded into the channels (the PyTorch formulation).
   * Default: undefined, the batch stays dynamic (`N`) and the per-sample convolutions run as
   * {@link ToOnnxOptions.scanBatch} says. ONNX `Conv`'s `group` is a static attribute, so the
   * folded form cannot keep the batch dynamic.
   */
  batch?: number;
  /**
   * At a dynamic batch, each per-sample convolution (a KW, CondConv, DY-Conv, ODConv or
   * WeightNet layer on an assembled kernel) as an ONNX `Scan` over the batch whose body is one
   * plain `Conv` of one sample with its own kernel: onnxruntime's own conv, as at a fixed batch
   * (for a KW layer, the body assembles that kernel first: {@link ToOnnxOptions.scanAssembly}).
   * `false`: an im2col (a static one-hot depthwise `Conv`) followed by one batched `MatMul`, the
   * form without control flow. Default (undefined): `true` (onnxruntime-web wasm: 0.82-0.98x
   * the im2col form's time on KW ResNet18 224x224 at batch 1 and 8 on one thread, 0.93-1.0x on
   * two, `bench:ort` run 12; 0.52-0.88x on smaller models). Use `false` for a runtime without `Scan` or where control flow
   * costs more (`createSession` exports that form for WebGPU). Needs a dynamic batch: with
   * `batch` set each such layer is one grouped `Conv`. Only the speed differs; the values agree
   * to float rounding.
   */
  scanBatch?: boolean;
  /**
   * With the `Scan` form ({@link ToOnnxOptions.scanBatch}), a KernelWarehouse conv's kernel is
   * assembled a sample at a time inside the `Scan`'s body, right before that sample's conv,
   * with the warehouse read from the outer graph: one sample's kernel in memory at a time, in
   * cache when the conv reads it, and the assembly as the products a fixed batch of 1 exports.
   * `false`: every sample's kernel assembled before the `Scan` (one product for the batch; the
   * form before 2026-11-28; on native onnxruntime, `bench:ort-node`, KW 1x ran in 0.85-1.03x
   * the default's time with it, faster in 6 of 8 readings: its layers keep the broadcast
   * product, one per sample; the default is the faster one there for KW 1/2x, and on wasm on
   * balance). Default (undefined): `true` where `scanBatch` is. Needs the `Scan`
   * form: `true` with `scanBatch: false` or a fixed `batch` is refused. Only the speed and the
   * memory differ; the values agree to float rounding.
   */
  scanAssembly?: boolean;
  /**
   * The intra-op thread count the model will run with, when known (onnxruntime-web's wasm runs
   * on one thread in a browser page that is not cross-origin isolated). With `batch: 1` and one
   * thread, KW assembles the kernel of a layer whose input channels are split over several cells
   * (G_in > 1: the 3x3 layers of ResNet18 1/2x and 1/4x) as one wide product with the warehouse as its constant right operand, then two Transposes into
   * the conv's layout: measured faster on one thread (`bench:ort`, ResNet18 224x224: KW 1/2x 1.71 ->
   * 1.50x plain, KW 1/4x 1.36 -> 1.29x), not always on more (1/4x on two: 1.37 -> 1.45x), since onnxruntime's Transpose runs on one
   * thread while its products use them all. Default: undefined, the form that is faster on
   * several threads. Only the speed differs; the values agree to float rounding.
   */
  threads?: number;
  /**
   * KernelWarehouse convs tap by tap: the kernel assembled with the taps as the product's rows
   * (the warehouse as onnxruntime's packed constant right operand) and the conv as one batched
   * MatMul of each (tap, cell) kernel with the input's im2col patches, summed over taps; no
   * kernel is permuted into the conv's OIHW order. Default (undefined): for the layers where the
   * assembly costs much next to the conv, at any batch (ResNet18 224x224: stage 4, 0.75-0.94x
   * the time there at batch 1 and 8 on 1 and 2 threads, `bench:ort-assembly`; not reliably
   * faster at stage 3, mostly slower before it); `true`: every KW conv with more than one tap,
   * at any batch (for another runtime or execution provider where it pays, or to measure);
   * `false`: never. Only the speed differs; the values agree to float rounding.
   */
  tapMajor?: boolean;
  /**
   * KW convs in the mixed form: each sample's input taps (im2col patches) mixed by its
   * attention, then the warehouse applied once as a 1x1 product shared by the batch (one GEMM
   * over every sample's pixels), so no per-sample kernel is assembled or stored. Default
   * (undefined): for the layers where it costs at most the assembled form's multiply-adds, the
   * assembly's weighed twice (`tapMixingPays`), at any batch but a fixed 1 (ResNet18 224x224:
   * the 1/4x model's last three stage-4 convs; 1.07x faster at batch 8 on one thread,
   * `bench:ort`); `true`: every ungrouped, undilated KW conv (to measure, or for another
   * runtime); `false`: never. Only the speed and the memory differ; the values agree to float
   * rounding.
   */
  tapMixing?: boolean;
}

/** What {@link toOnnxWithInfo} reports besides the bytes. */
export interface OnnxExport {
  bytes: Uint8Array;
  opset: number;
  irVersion: number;
  /** Op histogram of the emitted graph. */
  ops: Record<string, number>;
  initializerBytes: number;
  /** Op histogram of the `Scan` bodies, all together (as `onnxInfo`'s `subgraphOps`). */
  subgraphOps: Record<string, number>;
  /** Bytes of initializer data in the `Scan` bodies (shapes and axes: the weights are outside). */
  subgraphInitializerBytes: number;
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

/** An on/off export option: undefined (the default) or a boolean. */
function checkFlag(name: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'boolean')
    throw new KwError('ARGUMENT_INVALID', `${name} must be true or false, found ${String(v)}`);
}

/** {@link toOnnx} plus the op histogram, initializer bytes and names. */
export function toOnnxWithInfo(
  spec: unknown,
  weights: WeightMap,
  options: ToOnnxOptions = {},
): OnnxExport {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `toOnnx: options must be an object (ToOnnxOptions) or undefined, found ${describeValue(options)}`,
      { field: 'options', found: options },
    );
  }
  checkWeights(spec, weights);
  // methods with an inference-time form (DO-Conv, SLaK) are exported folded into plain convs
  const foldable = paramTable(spec).analyzed.spec.nodes.some(
    (n) =>
      (n.op === 'dynamicConv2d' || n.op === 'dynamicLinear') && METHODS.get(n.method.kind)?.fold,
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
  const threads = options.threads;
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    throw new KwError('ARGUMENT_INVALID', `threads must be an integer >= 1, found ${threads}`);
  }
  for (const name of ['tapMajor', 'tapMixing', 'scanBatch', 'scanAssembly'] as const)
    checkFlag(name, options[name]);
  if (options.scanBatch === true && batch !== undefined) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `scanBatch applies to a dynamic batch, but batch is fixed at ${batch} (there each per-sample conv is one grouped Conv): leave one of the two out`,
    );
  }
  if (options.scanAssembly === true && (batch !== undefined || options.scanBatch === false)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `scanAssembly applies to the Scan form of a dynamic batch, but ${batch !== undefined ? `batch is fixed at ${batch}` : 'scanBatch is false'}: leave scanAssembly out`,
    );
  }
  const batchDim: Dim = batch ?? 'N';
  const inputName = checkInputName(
    options.inputName === undefined ? 'input' : options.inputName,
    s.outputs,
  );
  const g = new GraphBuilder();
  // the output names are the spec's output ids, declared last: reserve them first, so that no
  // generated name (`<node id>.weight_0`, `relu_3`, ...) can take one of them
  for (const o of s.outputs) g.reserve(o);
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
          pads: onnxPads(node.padding),
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
        const ops = new OnnxOps({
          g,
          id: node.id,
          inShape,
          outShape,
          batch,
          wideAssembly: batch === 1 && threads === 1,
          tapMajor: options.tapMajor,
          tapMixing: options.tapMixing,
          scanBatch: batch === undefined && options.scanBatch !== false,
          scanAssembly: options.scanAssembly,
          weight: (name) => weights.get(name),
        });
        const y = METHODS.get(node.method.kind)!.forward(
          ops,
          { name: xs[0]! },
          {
            ...layerContext(table, node),
            outShape,
            temperature: tau,
            methodTemperature: undefined,
          },
        );
        out = ops.v(y);
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
    subgraphOps: Object.fromEntries(g.subgraphOps),
    subgraphInitializerBytes: g.subgraphInitializerBytes,
    inputName,
    outputNames: [...s.outputs],
  };
}

/**
 * The graph input's name, checked: onnxruntime cannot load or feed a model whose input name is
 * empty, holds a NUL (its C API cuts the name there) or is also the name of a graph output.
 */
function checkInputName(name: unknown, outputs: readonly string[]): string {
  if (typeof name !== 'string') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `inputName must be a string, found ${name === null ? 'null' : `${typeof name} ${describeValue(name)}`}`,
      { field: 'inputName', expected: 'string', found: name },
    );
  }
  if (name.length === 0) {
    throw new KwError('ARGUMENT_INVALID', 'inputName must be a non-empty string, found ""', {
      field: 'inputName',
      found: name,
    });
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
  const ctrl = /[\u0000-\u001f\u007f-\u009f]/.exec(name);
  if (ctrl) {
    const code = ctrl[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new KwError(
      'ARGUMENT_INVALID',
      `inputName ${describeValue(name)} holds the control character U+${code} at index ${ctrl.index}; use printable characters only`,
      { field: 'inputName', found: name, index: ctrl.index },
    );
  }
  if (outputs.includes(name)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `inputName ${describeValue(name)} is also the name of a graph output (the spec's output node "${name}"); ONNX needs each name once, so choose another inputName`,
      { field: 'inputName', found: name, outputs: [...outputs] },
    );
  }
  return name;
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
    pads: onnxPads(node.padding),
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
