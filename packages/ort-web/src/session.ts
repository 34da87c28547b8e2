import { describeValue, KwError, type Tensor } from '@kernelwarehouse/core';
import * as ort from 'onnxruntime-web';
import { type ToOnnxOptions, toOnnx } from './export.js';

/** Options of {@link createSession}. */
export interface SessionOptions {
  /** `'wasm'` (default) or `'webgpu'`. WebGPU always runs with `preferredLayout: 'NCHW'`. */
  executionProvider?: 'wasm' | 'webgpu';
  /**
   * wasm threads. Default: the cores the machine has ({@link defaultThreads}: Node's
   * `os.availableParallelism()`, a browser's `navigator.hardwareConcurrency`; onnxruntime-web's
   * own default is 1 on a 2-core machine), at most {@link MAX_WASM_THREADS}. An integer in
   * [1, {@link MAX_WASM_THREADS}]. Takes effect on the first session of the process only (an
   * onnxruntime-web rule).
   */
  numThreads?: number;
  /**
   * Export options when a spec is given instead of bytes. For `executionProvider: 'webgpu'`,
   * `scanBatch` defaults to `false` there (onnxruntime-web's WebGPU EP has no `Scan` kernel: a
   * Scan would run on the CPU, with copies to and from the GPU).
   */
  export?: ToOnnxOptions;
}

let threadsSet = false;

/**
 * The most wasm threads {@link createSession} accepts. onnxruntime-web documents no maximum, but
 * its wasm build (emscripten pthreads) starts `numThreads - 1` workers, each with its own stack
 * and JS engine, before the first session: on a 2-core machine 64 threads take ~4.5 s and
 * 0.8 GB to create a session, 256 threads 15 s and 2.8 GB, 1000 never finish (~10 GB). 64 is
 * above the cores of any machine this runs on (onnxruntime-web's own default is at most 4), and
 * intra-op parallelism stops paying well before it on these models.
 */
export const MAX_WASM_THREADS = 64;

/**
 * The execution-provider list handed to onnxruntime-web. WebGPU always asks for the NCHW layout:
 * the default NHWC grouped Conv is wrong when a group has >= 4 output channels that are not a
 * multiple of 4 (onnxruntime-web 1.30, toolchain.md §3), and KW depthwise/grouped layers hit it.
 */
export function executionProviders(
  ep: 'wasm' | 'webgpu',
): ort.InferenceSession.ExecutionProviderConfig[] {
  return ep === 'webgpu' ? [{ name: 'webgpu', preferredLayout: 'NCHW' }] : ['wasm'];
}

/**
 * The default wasm thread count: the cores the machine has. In Node `os.availableParallelism()`
 * (read through `process.getBuiltinModule`, so browser bundles never import `node:os`), in a
 * browser `navigator.hardwareConcurrency`; 1 when neither is known.
 */
export function defaultThreads(): number {
  const proc = (
    globalThis as {
      process?: {
        getBuiltinModule?: (id: string) => { availableParallelism?: () => number } | undefined;
      };
    }
  ).process;
  const fromNode = proc?.getBuiltinModule?.('node:os')?.availableParallelism?.();
  const hc = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
    ?.hardwareConcurrency;
  const n = fromNode ?? hc ?? 1;
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

/**
 * The export options `createSession` uses for a spec on `ep`: for WebGPU, `scanBatch: false`
 * unless said otherwise (by `scanBatch`, or `scanAssembly: true`, which needs the Scan form):
 * onnxruntime-web's WebGPU EP has no `Scan` kernel. Anything but an
 * object or undefined goes to `toOnnx` as it is, which names the problem.
 */
export function exportOptionsFor(
  ep: 'wasm' | 'webgpu',
  options: ToOnnxOptions | undefined,
): ToOnnxOptions | undefined {
  const plain =
    options === undefined ||
    (typeof options === 'object' && options !== null && !Array.isArray(options));
  // (`scanAssembly: true` asks for the Scan form: it is not turned off under it)
  return ep === 'webgpu' && plain
    ? { ...options, scanBatch: options?.scanBatch ?? (options?.scanAssembly ? undefined : false) }
    : options;
}

/**
 * An onnxruntime-web InferenceSession for ONNX bytes (or a spec + weights, exported first).
 *
 * WebGPU: grouped convolutions with 4 or more output channels per group that are not a multiple of
 * 4 give wrong results in onnxruntime-web's default NHWC layout (toolchain.md §3); sessions here
 * always ask for `preferredLayout: 'NCHW'`, which is correct (a regression test guards it).
 *
 * @example
 * const session = await createSession(toOnnx(spec, weights), { executionProvider: 'wasm' });
 * const [logits] = await runSession(session, input);
 */
export async function createSession(
  model: Uint8Array | ArrayBuffer | { spec: unknown; weights: Map<string, Tensor> },
  options: SessionOptions = {},
): Promise<ort.InferenceSession> {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `createSession: options must be an object (SessionOptions) or undefined, found ${describeValue(options)}`,
      { field: 'options', found: options },
    );
  }
  const ep = options.executionProvider ?? 'wasm';
  if (ep !== 'wasm' && ep !== 'webgpu') {
    throw new KwError(
      'ARGUMENT_INVALID',
      `executionProvider must be "wasm" or "webgpu", found ${String(ep)}`,
    );
  }
  // checked on every call, though only the first session's count takes effect
  const asked = options.numThreads;
  if (
    asked !== undefined &&
    !(Number.isInteger(asked) && (asked as number) >= 1 && (asked as number) <= MAX_WASM_THREADS)
  ) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `numThreads must be an integer in [1, ${MAX_WASM_THREADS}] (MAX_WASM_THREADS), found ${describeValue(asked)}`,
      { field: 'numThreads', expected: `1..${MAX_WASM_THREADS}`, found: asked },
    );
  }
  let bytes: Uint8Array;
  if (model instanceof Uint8Array) bytes = model;
  else if (model instanceof ArrayBuffer)
    bytes = new Uint8Array(model); // fetch().arrayBuffer()
  else if (model !== null && typeof model === 'object' && 'spec' in model && 'weights' in model)
    bytes = toOnnx(model.spec, model.weights, exportOptionsFor(ep, options.export));
  else {
    throw new KwError(
      'ARGUMENT_INVALID',
      `createSession: model must be ONNX bytes (a Uint8Array or an ArrayBuffer) or { spec, weights }, found ${describeModel(model)}`,
      { field: 'model', found: describeModel(model) },
    );
  }
  if (!threadsSet) {
    ort.env.wasm.numThreads = asked ?? Math.min(defaultThreads(), MAX_WASM_THREADS);
    threadsSet = true;
  }
  const providers = executionProviders(ep);
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    throw new KwError('ONNX_INVALID', `onnxruntime-web refused the model: ${(e as Error).message}`);
  }
}

/** What was passed where a model or a session belongs, for the error message. */
const describeModel = (m: unknown): string => {
  if (m === null || m === undefined) return String(m);
  if (ArrayBuffer.isView(m)) return `${m.constructor.name} of ${m.byteLength} bytes`;
  if (typeof m === 'object')
    return `${m.constructor?.name ?? 'object'} with keys [${Object.keys(m).slice(0, 8).join(', ')}]`;
  return `${typeof m} ${describeValue(m)}`;
};

const describeData = (d: unknown) =>
  d === null || d === undefined
    ? String(d)
    : ((d as object).constructor?.name ?? typeof d) +
      (typeof (d as { length?: unknown }).length === 'number'
        ? ` of length ${(d as { length: number }).length}`
        : '');

/**
 * Check an input against the session's declared input before onnxruntime sees it, so a wrong
 * tensor gets a KwError naming the dim, the expected and the found value (onnxruntime's own
 * messages name neither the model's layout nor the fix).
 */
function checkInput(session: ort.InferenceSession, input: Tensor): void {
  const name = session.inputNames[0]!;
  if (!(input?.data instanceof Float32Array)) {
    throw new KwError(
      'TENSOR_DTYPE',
      `input "${name}" must be a Tensor with Float32Array data; found ${describeData(input?.data)}`,
      { expected: 'Float32Array', found: describeData(input?.data) },
    );
  }
  const shape = input.shape;
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new KwError(
      'TENSOR_SHAPE',
      `input "${name}" has an invalid shape ${Array.isArray(shape) ? `[${shape.join(', ')}]` : JSON.stringify(shape)}: dims must be integers >= 1`,
      { found: shape },
    );
  }
  const size = shape.reduce((a, b) => a * b, 1);
  if (size !== input.data.length) {
    throw new KwError(
      'TENSOR_SHAPE',
      `input "${name}" has shape [${shape.join(', ')}] (${size} values) but ${input.data.length} values of data`,
      { expected: size, found: input.data.length },
    );
  }
  const meta = (
    session as unknown as { inputMetadata?: { name: string; shape?: (number | string)[] }[] }
  ).inputMetadata?.find((m) => m.name === name);
  const want = meta?.shape;
  if (want) {
    const show = `[${want.join(', ')}]`;
    if (want.length !== shape.length) {
      throw new KwError(
        'TENSOR_SHAPE',
        `input "${name}" expects rank ${want.length} ${show} (NCHW); found rank ${shape.length} [${shape.join(', ')}]`,
        { expected: want, found: shape },
      );
    }
    want.forEach((d, i) => {
      if (typeof d === 'number' && d !== shape[i]) {
        const what = want.length === 4 ? ['batch', 'channels', 'height', 'width'][i] : `dim ${i}`;
        throw new KwError(
          'TENSOR_SHAPE',
          `input "${name}" expects ${show} (NCHW); found [${shape.join(', ')}]: ${what} is ${shape[i]}, expected ${d}`,
          { expected: want, found: shape, dim: i },
        );
      }
    });
  }
  const bad = input.data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new KwError(
      'TENSOR_NOT_FINITE',
      `input "${name}" holds ${input.data[bad]} at flat index ${bad}; every value must be finite`,
      { index: bad, found: input.data[bad] },
    );
  }
}

/**
 * Run a session on one NCHW float32 batch; returns the outputs (core Tensors) in the session's
 * output order. The input's shape is checked against the model's first input.
 */
export async function runSession(session: ort.InferenceSession, input: Tensor): Promise<Tensor[]> {
  const s = session as Partial<ort.InferenceSession> | null | undefined;
  if (
    s === null ||
    typeof s !== 'object' ||
    typeof s.run !== 'function' ||
    !Array.isArray(s.inputNames) ||
    s.inputNames.length === 0
  ) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `runSession: session must be an InferenceSession from createSession(), found ${describeModel(session)}`,
      { field: 'session' },
    );
  }
  checkInput(session, input);
  const feeds = {
    [session.inputNames[0]!]: new ort.Tensor('float32', input.data, [...input.shape]),
  };
  let res: ort.InferenceSession.OnnxValueMapType;
  try {
    res = await session.run(feeds);
  } catch (e) {
    throw new KwError(
      'TENSOR_SHAPE',
      `onnxruntime-web could not run this input [${input.shape.join(', ')}]: ${(e as Error).message}`,
    );
  }
  return session.outputNames.map((n) => {
    const t = res[n] as ort.Tensor;
    return { shape: t.dims.map(Number), data: t.data as Float32Array };
  });
}
