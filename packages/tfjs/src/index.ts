/**
 * `@kernelwarehouse/tfjs`: KernelWarehouse specs as TensorFlow.js layers models.
 */

export { FusedAdamOptimizer } from './adam-wasm.js';
export {
  BACKEND_ORDER,
  type BackendCandidate,
  type BackendChoice,
  type ChooseBackendOptions,
  chooseBackend,
  resetBackendReport,
} from './backend.js';
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_MANIFEST,
  CHECKPOINT_VERSION,
  CheckpointDir,
  type CheckpointFile,
  type CheckpointFs,
  type CheckpointManifest,
  type CheckpointWrite,
  canonicalJson,
  loadOptimizerState,
  nodeCheckpointFs,
  saveOptimizerState,
  sha256Hex,
} from './checkpoint.js';
export {
  enableRelaxedSimd,
  matMulWasm,
  ownWasmKernelsStatus,
  setOwnWasmKernels,
  setWasmFusedMultiplyAdd,
  setWasmWinograd,
} from './conv-wasm.js';
export {
  FAST_WASM_KERNELS,
  registerFastWasmKernels,
  unregisterFastWasmKernels,
} from './fast-wasm.js';
export { registerTrainingKernels, TRAINING_KERNELS } from './grads.js';
export {
  type ConvGeometryLike,
  type Kwargs,
  type LayerWeightDecl,
  oihwBatchToHwio,
  perSampleConv,
  SpecLayerBase,
  SpecNode,
} from './layers.js';
export {
  CondConv2D,
  DOConv2D,
  DyConv2D,
  DynamicLayer,
  type GroupSpec,
  KWConv2D,
  KWLayer,
  KWLinear,
  METHOD_LAYERS,
  MethodConvLayer,
  type MethodLayerArgs,
  ODConv2D,
  SharedTensor,
  SLaKConv2D,
  WeightNet2D,
} from './methods.js';
export { setWasmTapMixing, TAP_MIX_COSTS, tapMixingPays } from './mix-wasm.js';
export {
  type BuildOptions,
  buildModel,
  exportWeights,
  foldModel,
  fromModelOutput,
  loadWeights,
  MAX_MODEL_NODES,
  setMethodTemperature,
  setTemperature,
  specVariables,
  toModelInput,
} from './model.js';
export { TfOps } from './ops.js';
export {
  applyWeightDecay,
  decayGroups,
  methodSchedule,
  methodTemperatureCallback,
  type RecalibrateOptions,
  recalibrateBatchNorm,
  stepMethodTemperature,
  stepTemperature,
  temperatureCallback,
} from './train.js';
export {
  type CurvePoint,
  epochOrder,
  type KwTemperatureOptions,
  type MethodTemperatureOptions,
  type OptimizerOptions,
  type TrainData,
  Trainer,
  type TrainerEvent,
  type TrainerOptions,
  type TrainerPhase,
  type TrainerSnapshot,
  type TrainerState,
} from './trainer.js';
export { type WasmFailureWatch, watchWasmFailures } from './wasm-guard.js';
