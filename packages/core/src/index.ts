/**
 * @kernelwarehouse/core: KernelWarehouse planning, CAF attention math, model specs,
 * safetensors weights and the Float32Array reference executor. Zero runtime dependencies.
 *
 * @packageDocumentation
 */
export {
  isKwError,
  KW_ERROR_CODES,
  KW_ERROR_DESCRIPTIONS,
  KwError,
  type KwErrorCode,
} from './errors.js';
export { type InitOptions, initWeights } from './init.js';
export { CAF_EPS, caf, type TemperatureSchedule, temperatureAt } from './kw/attention.js';
export { formatBudget, parseBudget } from './kw/budget.js';
export {
  type KwLayerPlan,
  type KwPlan,
  type KwWarehousePlan,
  kwAssignment,
  kwBeta,
  kwCellPosition,
  planKw,
  tilingBudgets,
} from './kw/plan.js';
export {
  type CondConvRef,
  condConvMethod,
  condConvParamCount,
  condConvRouting,
} from './methods/condconv.js';
export {
  composeDoConvKernel,
  type DoConvRef,
  doConvDiag,
  doConvDMul,
  doConvMethod,
  doConvParamCount,
} from './methods/doconv.js';
export {
  type DyConvRef,
  dyConvAttention,
  dyConvHidden,
  dyConvMethod,
  dyConvParamCount,
} from './methods/dyconv.js';
export { foldSpec } from './methods/fold.js';
export {
  type OdConvAttentions,
  type OdConvHeads,
  type OdConvRef,
  odConvAttentions,
  odConvHeads,
  odConvHidden,
  odConvKernel,
  odConvMethod,
  odConvParamCount,
} from './methods/odconv.js';
export {
  type DynamicMethod,
  type DynamicNode,
  type FoldResult,
  type LayerMacs,
  METHODS,
  type MethodForwardOptions,
} from './methods/registry.js';
export {
  addSqueezeExcite,
  type SqueezeExciteOptions,
  seHidden,
  seParamCount,
} from './methods/se.js';
export {
  addCentred,
  foldBnIntoDepthwise,
  type SlakRef,
  slakMethod,
  slakParamCount,
} from './methods/slak.js';
export {
  applyMask,
  cosinePruneRate,
  erkDensities,
  isUpdateStep,
  pruneByMagnitude,
  randomMask,
  regrowRandom,
  snipDensities,
} from './methods/sparsity.js';
export {
  type WeightNetRef,
  weightNetKernel,
  weightNetMethod,
  weightNetParamCount,
  weightNetReduce,
} from './methods/weightnet.js';
export {
  countParams,
  decays,
  type InitRule,
  type ParamDecl,
  type ParamTable,
  paramDecl,
  paramTable,
  warehouseParamName,
} from './params.js';
export { type ModelPlan, type NodePlan, planModel, staticBaseline } from './plan.js';
export { type RunOptions, runReference } from './reference/executor.js';
export {
  KW_ATTENTION_NORM_EPS,
  type KwConvGeometry,
  type KwForwardOptions,
  kwAssemble,
  kwAttention,
  kwForward,
} from './reference/kw.js';
export * as ops from './reference/ops.js';
export { Rng } from './rng.js';
export { type ConvOptions, type PairIn, SpecBuilder } from './spec/builder.js';
export * from './spec/types.js';
export {
  type AnalyzedSpec,
  analyzeSpec,
  MAX_TENSOR_ELEMENTS,
  OPS,
  validateSpec,
} from './spec/validate.js';
export {
  assertShape,
  maxRelativeError,
  numel,
  type Tensor,
  tensor,
  type WeightMap,
} from './tensor.js';
export { type CheckWeightsOptions, checkTensor, checkWeights } from './weights/check.js';
export { loadWeights, saveWeights } from './weights/io.js';
export {
  assertOfficialStem,
  exportOfficialStateDict,
  fromOfficialName,
  importOfficialStateDict,
  specStem,
  toOfficialName,
} from './weights/official.js';
export {
  bf16ToF32,
  f16ToF32,
  MAX_HEADER_BYTES,
  readSafetensors,
  SAFETENSORS_DTYPES,
  type SafetensorsFile,
  type StoredTensor,
  safetensorsToWeights,
  writeSafetensors,
} from './weights/safetensors.js';
