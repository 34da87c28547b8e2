/**
 * `buildModel(spec, weights?)`: a core spec as a `tf.LayersModel`; weight maps in and out by
 * the spec's names; temperature control.
 */
import {
  foldSpec,
  INPUT,
  initWeights,
  KwError,
  kwBeta,
  type ModelSpec,
  paramTable,
  type Tensor,
  type WeightMap,
} from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { KWConv2D, KWLayer, KWLinear } from './kw.js';
import { type LayerWeightDecl, SpecNode } from './layers.js';
import { DyConv2D, METHOD_LAYERS, ODConv2D } from './methods.js';

let modelCounter = 0;

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
  const key = `kw${++modelCounter}`;
  const [c, ...rest] = s.inputShape;
  const shape = s.inputShape.length === 3 ? [...rest, c!] : [...s.inputShape];
  const input = tf.input(
    options.batchSize
      ? { batchShape: [options.batchSize, ...shape], name: 'input' }
      : { shape, name: 'input' },
  );
  const acts = new Map<string, tf.SymbolicTensor>([[INPUT, input]]);
  const owned = new Set<string>();
  for (const node of s.nodes) {
    const decls: LayerWeightDecl[] = [];
    for (const p of table.params) {
      if (p.node !== node.id) continue;
      decls.push({
        name: p.name.slice(node.id.length + 1),
        shape: p.shape,
        trainable: p.role === 'param',
      });
    }
    const xs = node.inputs.map((i) => acts.get(i)!);
    let layer: tf.layers.Layer;
    if ((node.op === 'dynamicConv2d' || node.op === 'dynamicLinear') && node.method.kind === 'kw') {
      const lp = table.kw.layers.get(node.id)!;
      const wh = table.kw.warehouses.find((w) => w.id === lp.warehouse)!;
      const owner = !owned.has(wh.id);
      owned.add(wh.id);
      const Cls = node.op === 'dynamicConv2d' ? KWConv2D : KWLinear;
      layer = new Cls({
        node,
        decls,
        layer: lp,
        warehouse: {
          id: wh.id,
          n: wh.n,
          cellOut: wh.cellOut,
          cellIn: wh.cellIn,
          norm: wh.norm,
          shape: wh.shape,
        },
        beta: Array.from(kwBeta(lp, wh)),
        owner,
        modelKey: key,
      });
    } else if (node.op === 'dynamicConv2d' || node.op === 'dynamicLinear') {
      const Cls = METHOD_LAYERS[node.method.kind];
      if (!Cls) {
        throw new KwError(
          'SPEC_UNKNOWN_METHOD',
          `buildModel: method "${node.method.kind}" of node "${node.id}" has no tfjs layer; known: kw, ${Object.keys(METHOD_LAYERS).join(', ')}`,
          { node: node.id, actual: node.method.kind },
        );
      }
      layer = new Cls({ node, decls });
    } else {
      layer = new SpecNode({ node, decls });
    }
    acts.set(node.id, layer.apply(xs.length === 1 ? xs[0]! : xs) as tf.SymbolicTensor);
  }
  const model = tf.model({
    inputs: input,
    outputs: s.outputs.map((o) => acts.get(o)!),
    name: s.name,
  });
  loadWeights(model, weights ?? initWeights(s));
  return model;
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

/** Write a core `WeightMap` (spec names and layouts) into the model. Every model tensor must be present. */
export function loadWeights(model: tf.LayersModel, weights: WeightMap): void {
  for (const [name, v] of specVariables(model)) {
    const t: Tensor | undefined = weights.get(name);
    if (!t) {
      throw new KwError('WEIGHTS_MISSING', `loadWeights: missing tensor "${name}"`, {
        name,
      });
    }
    const want = v.shape.join(',');
    if (t.shape.join(',') !== want) {
      throw new KwError(
        'WEIGHTS_SHAPE',
        `loadWeights: "${name}" expected shape [${want}], found [${t.shape.join(',')}]`,
        { name, expected: [...v.shape], actual: [...t.shape] },
      );
    }
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
  for (const l of model.layers) if (l instanceof KWLayer) l.temperature = tau;
}

/**
 * Set the softmax / sigmoid temperature of every DY-Conv and ODConv layer of a model (each
 * starts at its node's `method.temperature`). Anneal it 30 → 1 during training with core's
 * `temperatureAt`; run inference at 1.
 */
export function setMethodTemperature(model: tf.LayersModel, tau: number): void {
  if (!(Number.isFinite(tau) && tau > 0)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `method temperature must be a finite number > 0, found ${tau}`,
      {
        expected: '> 0',
        actual: tau,
      },
    );
  }
  for (const l of model.layers) {
    if (l instanceof DyConv2D || l instanceof ODConv2D) l.temperature = tau;
  }
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
