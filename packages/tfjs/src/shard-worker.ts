/**
 * The worker thread of {@link ShardWorkers}: builds a replica of the model on the backend the
 * trainer uses, then for every request writes the current weights, runs the shard's forward and
 * backward, and posts the gradients and BatchNorm statistics back (buffers transferred).
 */
import { initWeights, type ModelSpec } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from './backend.js';
import { buildModel, setMethodTemperature, setTemperature } from './model.js';
import {
  applyWasmKernelSettings,
  type ShardRequest,
  type ShardResult,
  shardGradients,
  shardVariables,
  type WasmKernelSettings,
  writeVariables,
} from './shards.js';
import { watchWasmFailures } from './wasm-guard.js';

// Node's worker_threads, typed here: the package builds without Node's types
const threads = 'node:worker_threads';
const { parentPort, workerData } = (await import(threads)) as {
  parentPort: {
    on(event: 'message', listener: (m: ShardRequest) => void): void;
    postMessage(message: unknown, transfer?: ArrayBuffer[]): void;
  };
  workerData: {
    spec: ModelSpec;
    backend: string;
    kernels: WasmKernelSettings;
  };
};
const port = parentPort;
const { spec, backend, kernels } = workerData;

try {
  // the main thread's kernel settings (the same numbers as the in-thread shards)
  applyWasmKernelSettings(kernels);
  await chooseBackend({ force: backend as never, report: null });
  const model = buildModel(spec, initWeights(spec, { seed: 0 }));
  const vars = shardVariables(model);
  // tfjs wasm reports an XNNPACK failure only as a line on this thread's stderr (wasm-guard.ts):
  // the main thread cannot see it, so each shard step is checked here
  const watch = watchWasmFailures();
  port.on('message', (req: ShardRequest) => {
    try {
      applyWasmKernelSettings(req.kernels);
      if (req.tau !== undefined) setTemperature(model, req.tau);
      if (req.temperature !== undefined) setMethodTemperature(model, req.temperature);
      writeVariables(vars.trainable, req.params);
      writeVariables(vars.stats, req.stats);
      const x = tf.tensor(req.x, req.xShape);
      const y = tf.tensor(req.y, req.yShape);
      const r: ShardResult = shardGradients(model, vars, x, y, req.gradsOut);
      tf.dispose([x, y]);
      watch.check('a shard step in a worker thread');
      // gradients written to shared memory are shared, not transferred (a SharedArrayBuffer
      // cannot be); new arrays are transferred
      const own = (a: Float32Array | null) =>
        a && !(a.buffer instanceof SharedArrayBuffer) ? [a.buffer as ArrayBuffer] : [];
      port.postMessage(r, [...r.grads, ...r.stats].flatMap(own));
    } catch (e) {
      port.postMessage({ error: e instanceof Error ? e.message : String(e) });
    }
  });
  port.postMessage({ ready: true });
} catch (e) {
  port.postMessage({ error: e instanceof Error ? e.message : String(e) });
}
