/**
 * @kernelwarehouse/ort-web: export core specs + weights to ONNX and run them with onnxruntime-web.
 *
 * @packageDocumentation
 */
export { type OnnxExport, type ToOnnxOptions, toOnnx, toOnnxWithInfo } from './export.js';
export { type OnnxInfo, onnxInfo, type ValueInfo } from './info.js';
export { IR_VERSION, OPSET } from './onnx.js';
export {
  createSession,
  defaultThreads,
  executionProviders,
  exportOptionsFor,
  MAX_WASM_THREADS,
  runSession,
  type SessionOptions,
} from './session.js';
export { isModelName, type TritonConfigOptions, tritonConfig } from './triton.js';
