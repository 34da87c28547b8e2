/**
 * @kernelwarehouse/core: KernelWarehouse planning, CAF attention math, model specs,
 * safetensors weights and the Float32Array reference executor. Zero runtime dependencies.
 *
 * @packageDocumentation
 */
export { KwError, KW_ERROR_CODES, type KwErrorCode, isKwError } from './errors.js';
export { type Tensor, type WeightMap, tensor, numel, assertShape, maxRelativeError } from './tensor.js';
export { Rng } from './rng.js';
export * from './spec/types.js';
export { analyzeSpec, validateSpec, OPS, type AnalyzedSpec } from './spec/validate.js';
export { SpecBuilder } from './spec/builder.js';
export {
  planKw,
  kwAssignment,
  kwBeta,
  kwCellPosition,
  tilingBudgets,
  type KwPlan,
  type KwLayerPlan,
  type KwWarehousePlan,
} from './kw/plan.js';
export { caf, CAF_EPS, temperatureAt, type TemperatureSchedule } from './kw/attention.js';
export { parseBudget, formatBudget } from './kw/budget.js';
export {
  paramTable,
  countParams,
  warehouseParamName,
  type ParamDecl,
  type ParamTable,
  type InitRule,
} from './params.js';
export { planModel, staticBaseline, type ModelPlan, type NodePlan } from './plan.js';
export { initWeights, type InitOptions } from './init.js';
export { checkWeights, checkTensor, type CheckWeightsOptions } from './weights/check.js';
export { runReference, type RunOptions } from './reference/executor.js';
export { kwAttention, kwAssemble, kwForward, KW_ATTENTION_NORM_EPS, type KwForwardOptions } from './reference/kw.js';
export * as ops from './reference/ops.js';
export {
  METHODS,
  type DynamicMethod,
  type DynamicNode,
  type LayerMacs,
  type MethodForwardOptions,
} from './methods/registry.js';
