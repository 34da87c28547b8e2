/**
 * @kernelwarehouse/core: KernelWarehouse planning, CAF attention math, model specs,
 * safetensors weights and the Float32Array reference executor. Zero runtime dependencies.
 *
 * @packageDocumentation
 */
export {
  boundedJson,
  describeValue,
  isKwError,
  KW_ERROR_CODES,
  KW_ERROR_DESCRIPTIONS,
  KwError,
  type KwErrorCode,
} from './errors.js';
export { type InitOptions, initWeights, MAX_SEED } from './init.js';
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
export { checkMethodTemperature, MIN_METHOD_TEMPERATURE } from './methods/common.js';
export {
  CONDCONV_DEFAULT_EXPERTS,
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
  doConvKernel,
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
  KW_ATTENTION_NORM_EPS,
  KW_ATTENTION_NORM_MOMENTUM,
  KW_CELLS_TO_OIHW,
  type KwConvGeometry,
  type KwForwardOptions,
  type KwLayerGroup,
  kwAssemble,
  kwAttention,
  kwCaf,
  kwForward,
  kwLayerGroup,
  kwLogits,
  kwMethod,
  kwStaticKernel,
} from './methods/kw.js';
export {
  type OdConvAttentions,
  type OdConvHeads,
  type OdConvRef,
  odConvAttentions,
  odConvAttentionValues,
  odConvHeads,
  odConvHidden,
  odConvKernel,
  odConvMethod,
  odConvParamCount,
} from './methods/odconv.js';
export {
  type AnyMethod,
  type DynamicMethod,
  type DynamicNode,
  type FoldResult,
  type ForwardContext,
  getMethod,
  type LayerContext,
  type LayerMacs,
  METHODS,
  type NormalizeContext,
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
export { methodTextForms, type ParsedMethod, parseMethodText } from './methods/text.js';
export type { MethodTextForm } from './methods/types.js';
export {
  type WeightNetRef,
  weightNetKernel,
  weightNetKernels,
  weightNetMethod,
  weightNetParamCount,
  weightNetReduce,
} from './methods/weightnet.js';
export { simplifyTranspose } from './ops/layout.js';
export { ReferenceOps, type ReferenceOpsOptions } from './ops/reference.js';
export {
  type ConvAttrs,
  convOutputLength,
  convOutputSize,
  type MixTapsAttrs,
  type Ops,
  type SampleBias,
} from './ops/seam.js';
export {
  countParams,
  decays,
  type InitRule,
  layerContext,
  type ParamDecl,
  type ParamTable,
  paramDecl,
  paramTable,
  warehouseParamName,
} from './params.js';
export { type ModelPlan, type NodePlan, planModel, staticBaseline } from './plan.js';
export { type RunOptions, runReference } from './reference/executor.js';
export * as ops from './reference/ops.js';
export { Rng } from './rng.js';
export { type ConvOptions, type PairIn, SpecBuilder } from './spec/builder.js';
export * from './spec/types.js';
export {
  type AnalyzedSpec,
  analyzeSpec,
  MAX_MODEL_ELEMENTS,
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
