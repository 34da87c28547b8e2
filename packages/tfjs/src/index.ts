/**
 * `@kernelwarehouse/tfjs`: KernelWarehouse specs as TensorFlow.js layers models.
 */

export {
  BACKEND_ORDER,
  type BackendCandidate,
  type BackendChoice,
  type ChooseBackendOptions,
  chooseBackend,
  resetBackendReport,
} from './backend.js';
export { registerTrainingKernels, TRAINING_KERNELS } from './grads.js';
export { KWConv2D, KWLayer, KWLinear, type KwLayerConfig } from './kw.js';
export { type Kwargs, type LayerWeightDecl, SpecNode } from './layers.js';
export {
  type BuildOptions,
  buildModel,
  exportWeights,
  fromModelOutput,
  loadWeights,
  setTemperature,
  specVariables,
  toModelInput,
} from './model.js';
export { applyWeightDecay, decayGroups, stepTemperature, temperatureCallback } from './train.js';
