/**
 * `buildModel(spec, weights?)`: a core spec as a `tf.LayersModel`; weight maps in and out by
 * the spec's names; temperature control.
 */
import {
  type AnalyzedSpec,
  checkMethodTemperature,
  checkTensor,
  type DynamicNode,
  foldSpec,
  getMethod,
  INPUT,
  initWeights,
  KwError,
  type ModelSpec,
  paramTable,
  type Tensor,
  type WeightMap,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { type LayerWeightDecl, SpecNode } from './layers.js';
import { DynamicLayer, type GroupSpec, METHOD_LAYERS, SharedTensor } from './methods.js';

/**
 * Most nodes {@link buildModel} builds into one `tf.LayersModel`. tfjs-layers orders and
 * serialises the layer graph recursively, so a deeper chain overflows the call stack (measured:
 * a plain relu chain of 5,000 nodes); the limit refuses such specs with `BACKEND_UNSUPPORTED` first.
 */
export const MAX_MODEL_NODES = 2000;

/** Options of {@link buildModel}. */
export interface BuildOptions {
  /** Batch size fixed in the model input (default: dynamic). */
  batchSize?: number;
}

/**
 * Realise a core spec as a `tf.LayersModel`. The model input is **NHWC**
 * (`[N, H, W, C]` for image specs, `[N, F]` for feature specs); 4-D outputs are NHWC.
 * Without `weights`, the spec is initialised with core's `initWeights`.
 *
 * @example
 * const model = buildModel(tinyKwSpec(), initWeights(tinyKwSpec()));
 * const y = model.predict(tf.zeros([1, 8, 8, 3])) as tf.Tensor;
 */
export function buildModel(
  spec: ModelSpec,
  weights?: WeightMap,
  options: BuildOptions = {},
): tf.LayersModel {
  const table = paramTable(spec);
  const s = table.analyzed.spec;
  if (s.nodes.length > MAX_MODEL_NODES) {
    throw new KwError(
      'BACKEND_UNSUPPORTED',
      `buildModel: spec "${s.name}" has ${s.nodes.length} nodes; a tfjs LayersModel holds at most ${MAX_MODEL_NODES} (tfjs-layers walks the layer graph recursively and overflows the stack on deeper chains)`,
      { expected: `<= ${MAX_MODEL_NODES}`, actual: s.nodes.length },
    );
  }
  const { batchSize } = options;
  if (batchSize !== undefined && !(Number.isInteger(batchSize) && batchSize >= 1)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `buildModel: batchSize must be an integer >= 1 (or left out: a dynamic batch), found ${batchSize}`,
      { expected: 'integer >= 1', actual: batchSize },
    );
  }
  const [c, ...rest] = s.inputShape;
  const shape = s.inputShape.length === 3 ? [...rest, c!] : [...s.inputShape];
  const input = tf.input(
    batchSize ? { batchShape: [batchSize, ...shape], name: 'input' } : { shape, name: 'input' },
  );
  const acts = new Map<string, tf.SymbolicTensor>([[INPUT, input]]);
  // tensors shared across layers (KW warehouses): one layer each, owned by this model
  const shared = new Map<string, tf.SymbolicTensor>();
  for (const p of table.params) {
    if (p.node !== undefined) continue;
    const layer = new SharedTensor({ specName: p.name, shape: p.shape });
    shared.set(p.name, layer.apply(input) as tf.SymbolicTensor);
  }
  for (const node of s.nodes) {
    const xs = node.inputs.map((i) => acts.get(i)!);
    let out: tf.SymbolicTensor;
    if (node.op === 'dynamicConv2d' || node.op === 'dynamicLinear') {
      const Cls =
        METHOD_LAYERS[`${node.method.kind}:${node.op}`] ??
        METHOD_LAYERS[node.method.kind] ??
        DynamicLayer;
      const layer = new Cls({
        node,
        inShape: [...table.analyzed.shapes.get(node.inputs[0]!)!],
        group: groupSpec(table.analyzed, node),
      });
      const sharedName = layer.sharedName();
      const inputs = sharedName === undefined ? xs[0]! : [xs[0]!, shared.get(sharedName)!];
      out = layer.apply(inputs) as tf.SymbolicTensor;
    } else {
      const decls: LayerWeightDecl[] = [];
      for (const p of table.params) {
        if (p.node !== node.id) continue;
        decls.push({
          name: p.name.slice(node.id.length + 1),
          shape: p.shape,
          trainable: p.role === 'param',
        });
      }
      const layer = new SpecNode({ node, decls });
      out = layer.apply(xs.length === 1 ? xs[0]! : xs) as tf.SymbolicTensor;
    }
    acts.set(node.id, out);
  }
  const model = tf.model({
    inputs: input,
    outputs: s.outputs.map((o) => acts.get(o)!),
    name: s.name,
  });
  loadWeights(model, weights ?? initWeights(s));
  return model;
}

/**
 * The group spec of a node whose method shares tensors across layers: its warehouse's spec and
 * every member node (in spec order) with its input shape; undefined for other nodes.
 */
function groupSpec(a: AnalyzedSpec, node: DynamicNode): GroupSpec | undefined {
  const group = getMethod(node.method.kind)?.groupOf?.(node.method);
  if (group === undefined) return undefined;
  const members: GroupSpec['members'] = [];
  for (const n of a.spec.nodes) {
    if (n.op !== 'dynamicConv2d' && n.op !== 'dynamicLinear') continue;
    if (n.method.kind !== node.method.kind) continue;
    if (getMethod(n.method.kind)?.groupOf?.(n.method) !== group) continue;
    members.push({ node: n, inShape: [...a.shapes.get(n.inputs[0]!)!] });
  }
  return { warehouses: a.spec.warehouses.filter((w) => w.id === group), members };
}

/** Every `[spec name, variable]` of a model built by {@link buildModel} (warehouses once). */
export function specVariables(model: tf.LayersModel): Map<string, tf.LayerVariable> {
  const out = new Map<string, tf.LayerVariable>();
  for (const l of model.layers) {
    const sw = (l as unknown as { specWeights?: () => [string, tf.LayerVariable][] }).specWeights;
    if (sw) for (const [n, v] of sw.call(l)) out.set(n, v);
  }
  return out;
}

/** Read every weight of the model into a core `WeightMap` with the spec's names and layouts. */
export function exportWeights(model: tf.LayersModel): WeightMap {
  const out: WeightMap = new Map();
  for (const [name, v] of specVariables(model)) {
    out.set(name, { shape: [...v.shape] as number[], data: v.read().dataSync() as Float32Array });
  }
  return out;
}

/**
 * Write a core `WeightMap` (spec names and layouts) into the model. Every model tensor must be
 * present with its shape and finite Float32Array data, and no other tensor may be: all are
 * checked before any is written (a failed load leaves the model as it was).
 */
export function loadWeights(model: tf.LayersModel, weights: WeightMap): void {
  if (!(weights instanceof Map)) {
    throw new KwError('ARGUMENT_INVALID', 'loadWeights: weights must be a Map<string, Tensor>');
  }
  const vars = specVariables(model);
  const load: [tf.LayerVariable, Tensor][] = [];
  for (const [name, v] of vars) {
    const t: Tensor | undefined = weights.get(name);
    if (!t) {
      throw new KwError('WEIGHTS_MISSING', `loadWeights: missing tensor "${name}"`, {
        name,
      });
    }
    const want = v.shape.join(',');
    if (!Array.isArray(t.shape) || t.shape.join(',') !== want) {
      throw new KwError(
        'WEIGHTS_SHAPE',
        `loadWeights: "${name}" expected shape [${want}], found [${Array.isArray(t.shape) ? t.shape.join(',') : String(t.shape)}]`,
        { name, expected: [...v.shape], actual: t.shape },
      );
    }
    // dtype, data length, finiteness
    checkTensor(name, t, v.shape as number[]);
    load.push([v, t]);
  }
  const extra = [...weights.keys()].filter((k) => !vars.has(k));
  if (extra.length) {
    throw new KwError(
      'WEIGHTS_UNEXPECTED',
      `loadWeights: ${extra.length} tensor(s) are not part of model "${model.name}": ${extra.slice(0, 8).join(', ')}${extra.length > 8 ? ', ...' : ''}`,
      { extra },
    );
  }
  for (const [v, t] of load) {
    tf.tidy(() => {
      v.write(tf.tensor(t.data, v.shape as number[]));
    });
  }
}

/** Set tau of every KernelWarehouse layer of a model. */
export function setTemperature(model: tf.LayersModel, tau: number): void {
  if (!(tau >= 0 && tau <= 1)) {
    throw new KwError('ARGUMENT_INVALID', `temperature must be in [0, 1], found ${tau}`, {
      expected: '[0, 1]',
      actual: tau,
    });
  }
  for (const l of model.layers) if (l instanceof DynamicLayer) l.tau = tau;
}

/**
 * Set the softmax / sigmoid temperature of every DY-Conv and ODConv layer of a model (each
 * starts at its node's `method.temperature`). Anneal it 30 → 1 during training with core's
 * `temperatureAt`; run inference at 1.
 */
export function setMethodTemperature(model: tf.LayersModel, tau: number): void {
  // the same rule as a node's method.temperature (finite, >= MIN_METHOD_TEMPERATURE)
  checkMethodTemperature('setMethodTemperature', tau);
  for (const l of model.layers) if (l instanceof DynamicLayer) l.methodTemperature = tau;
}

/**
 * The inference form of a model with DO-Conv / SLaK layers: its weights are read, folded by
 * core's `foldSpec` (DO-Conv kernels composed, SLaK branches and BatchNorms merged into one or
 * two depthwise convs) and built as a new model of plain tf layers. `spec` is the spec `model`
 * was built from. Other nodes keep their weights; the result equals `model` in inference mode.
 *
 * @example
 * const plain = foldModel(model, spec);
 */
export function foldModel(
  model: tf.LayersModel,
  spec: ModelSpec,
  options: BuildOptions = {},
): tf.LayersModel {
  const folded = foldSpec(spec, exportWeights(model));
  return buildModel(folded.spec, folded.weights, options);
}

/** NCHW Float32 tensor (core layout) -> NHWC tf tensor (model input layout). */
export function toModelInput(x: Tensor): tf.Tensor {
  const t = tf.tensor(x.data, [...x.shape]);
  if (x.shape.length !== 4) return t;
  const out = tf.transpose(t, [0, 2, 3, 1]);
  t.dispose();
  return out;
}

/** NHWC tf tensor -> NCHW core `Tensor` (2-D tensors pass through). */
export function fromModelOutput(y: tf.Tensor): Tensor {
  const t = y.rank === 4 ? tf.transpose(y, [0, 3, 1, 2]) : y;
  const out = { shape: [...t.shape] as number[], data: t.dataSync() as Float32Array };
  if (t !== y) t.dispose();
  return out;
}
