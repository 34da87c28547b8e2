/**
 * Data-parallel training steps. A batch is cut into `k` shards; each shard runs forward and
 * backward on its own (its BatchNorm layers normalise with the shard's statistics, as PyTorch
 * DDP without SyncBatchNorm does); the gradients are averaged (weighted by shard size) and one
 * optimizer update is applied. The running BatchNorm statistics become the same weighted average
 * of what each shard would leave, each starting from the same values: for the running means that
 * is exactly the full-batch update.
 *
 * The shards run either one after another in this process or each in its own worker thread
 * (Node's worker_threads; one tfjs backend per worker), and both give the same numbers: a worker
 * holds a replica of the model, gets the current weights and its shard with every step, and
 * returns its gradients and statistics; the averaging and the update happen here in both cases.
 */
import { KwError, type ModelSpec } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { setWasmBatchNorm, wasmBatchNormSetting } from './bn-wasm.js';
import {
  applyOwnWasmKernelSettings,
  type OwnKernelSettings,
  ownWasmKernelSettings,
} from './conv-wasm.js';
import { setWasmGlobalAvgPool, wasmGlobalAvgPoolSetting } from './gap-wasm.js';
import { setWasmTapMixing, wasmTapMixingSetting } from './mix-wasm.js';

/** What one shard's forward and backward gives. */
export interface ShardResult {
  /** Gradients, one per trainable variable (in the model's order); null where the loss does not reach the variable. */
  grads: (Float32Array | null)[];
  /** The non-trainable values (BatchNorm running statistics) after the shard's forward. */
  stats: Float32Array[];
  /** The shard's mean loss. */
  loss: number;
  /** Correct predictions in the shard. */
  correct: number;
}

/** The variables of a model that a shard step reads and writes, each once. */
export interface ShardVariables {
  trainable: tf.Variable[];
  stats: tf.Variable[];
}

/** The trainable and the non-trainable variables of `model`, each once, in the model's order. */
export function shardVariables(model: tf.LayersModel): ShardVariables {
  const unique = (ws: tf.LayerVariable[]) => {
    const seen = new Set<tf.Variable>();
    const out: tf.Variable[] = [];
    for (const w of ws) {
      const v = w.read() as tf.Variable;
      if (!seen.has(v)) {
        seen.add(v);
        out.push(v);
      }
    }
    return out;
  };
  return { trainable: unique(model.trainableWeights), stats: unique(model.nonTrainableWeights) };
}

/**
 * The training loss of a batch (training mode: softmax cross-entropy on the logits, its mean over
 * the batch), its gradients by variable name, and the number of correct predictions. The caller
 * disposes the three.
 */
export function lossAndGradients(
  model: tf.LayersModel,
  vars: tf.Variable[],
  x: tf.Tensor,
  y: tf.Tensor,
): { value: tf.Scalar; grads: tf.NamedTensorMap; correct: tf.Tensor } {
  let correct: tf.Tensor | undefined;
  const { value, grads } = tf.tidy(() =>
    tf.variableGrads(() => {
      const logits = model.apply(x, { training: true }) as tf.Tensor;
      correct = tf.keep(
        tf.sum(tf.cast(tf.equal(tf.argMax(logits, -1), tf.argMax(y, -1)), 'float32')),
      );
      return tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar;
    }, vars),
  );
  return { value, grads, correct: correct! };
}

/**
 * One shard's forward and backward ({@link lossAndGradients}) as arrays to send or average. With
 * `gradsOut` (one array per trainable variable, of its size: a shard worker's shared-memory
 * slots) the gradients are written there and returned as those arrays; new arrays otherwise.
 */
export function shardGradients(
  model: tf.LayersModel,
  vars: ShardVariables,
  x: tf.Tensor,
  y: tf.Tensor,
  gradsOut?: Float32Array[],
): ShardResult {
  const { value, grads, correct } = lossAndGradients(model, vars.trainable, x, y);
  const out: ShardResult = {
    grads: vars.trainable.map((v, j) => {
      const g = grads[v.name];
      if (!g) return null;
      const data = g.dataSync() as Float32Array;
      const slot = gradsOut?.[j];
      if (!slot) return data.slice();
      slot.set(data);
      return slot;
    }),
    stats: vars.stats.map((v) => (v.dataSync() as Float32Array).slice()),
    loss: value.dataSync()[0]!,
    correct: correct.dataSync()[0]!,
  };
  tf.dispose([value, correct, ...Object.values(grads)]);
  return out;
}

/**
 * Float32Array views of one new SharedArrayBuffer, one of each size in `sizes` (in order):
 * memory the main thread and the shard workers read and write without copies.
 */
export function sharedViews(sizes: number[]): Float32Array[] {
  const total = sizes.reduce((a, b) => a + b, 0);
  const buffer = new SharedArrayBuffer(4 * total);
  let at = 0;
  return sizes.map((n) => {
    const v = new Float32Array(buffer, 4 * at, n);
    at += n;
    return v;
  });
}

/** Write `values` into `vars` (same order and sizes). */
export function writeVariables(vars: tf.Variable[], values: Float32Array[]): void {
  tf.tidy(() => {
    vars.forEach((v, i) => {
      v.assign(tf.tensor(values[i]!, v.shape));
    });
  });
}

/** The `[start, end)` of each of `k` shards of `n` images (sizes differ by at most one). */
export function shardBounds(n: number, k: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < k; i++)
    out.push([Math.floor((i * n) / k), Math.floor(((i + 1) * n) / k)] as [number, number]);
  return out.filter(([a, b]) => b > a);
}

/**
 * Sum of `w[i] * xs[i]` element by element, accumulated in float64 in the order of `xs` and
 * rounded to float32 once. Element by element in one pass (the float64 sum in a local): no
 * float64 array and no second pass over it, which the shard average of a step (~1M floats,
 * serial between the shard workers' steps) paid before. `into` (of the same length), when
 * given, receives the sum instead of a new array (the trainer reuses one per variable).
 */
export function weightedSum(xs: Float32Array[], w: number[], into?: Float32Array): Float32Array {
  const n = xs[0]!.length;
  const out = into ?? new Float32Array(n);
  if (xs.length === 2) {
    // the common case (two shards), without the inner loop
    const [a, b] = xs as [Float32Array, Float32Array];
    const [wa, wb] = w as [number, number];
    for (let j = 0; j < n; j++) out[j] = 0 + wa * a[j]! + wb * b[j]!;
    return out;
  }
  for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let i = 0; i < xs.length; i++) acc += w[i]! * xs[i]![j]!;
    out[j] = acc;
  }
  return out;
}

/**
 * The switches of the own wasm kernels that a shard's forward and backward goes through (the
 * optimizer update runs in the main thread only): a worker starts with the main thread's, so
 * workers and in-thread shards compute the same numbers whatever was switched.
 */
export interface WasmKernelSettings {
  own: OwnKernelSettings;
  tapMixing: boolean | 'always';
  batchNorm: boolean;
  globalAvgPool: boolean;
}

/** This thread's {@link WasmKernelSettings}. */
export function wasmKernelSettings(): WasmKernelSettings {
  return {
    own: ownWasmKernelSettings(),
    tapMixing: wasmTapMixingSetting(),
    batchNorm: wasmBatchNormSetting(),
    globalAvgPool: wasmGlobalAvgPoolSetting(),
  };
}

/** Take `s` (in a shard worker, the main thread's {@link wasmKernelSettings}). */
export function applyWasmKernelSettings(s: WasmKernelSettings): void {
  applyOwnWasmKernelSettings(s.own);
  setWasmTapMixing(s.tapMixing);
  setWasmBatchNorm(s.batchNorm);
  setWasmGlobalAvgPool(s.globalAvgPool);
}

/** A step's message to a shard worker. */
export interface ShardRequest {
  /** The main thread's kernel switches at this step (a switch flipped between steps is followed). */
  kernels: WasmKernelSettings;
  /** The trainable variables' values: views of one SharedArrayBuffer (no copy per worker). */
  params: Float32Array[];
  /** Where the worker writes its gradients: views of its own SharedArrayBuffer, one per variable. */
  gradsOut?: Float32Array[];
  stats: Float32Array[];
  x: Float32Array;
  xShape: number[];
  y: Float32Array;
  yShape: number[];
  tau?: number;
  temperature?: number;
}

/**
 * The part of Node's worker_threads this module uses, typed here: the package builds without
 * Node's types (it runs in browsers too) and loads the module only when workers are asked for.
 */
interface WorkerLike {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void;
  on(event: string, listener: (arg: never) => void): void;
  off(event: string, listener: (arg: never) => void): void;
  terminate(): Promise<number>;
}
interface WorkerThreads {
  Worker: new (url: object, options: { workerData: unknown }) => WorkerLike;
}

/** Node's worker_threads, or undefined where there is none (a browser). */
async function workerThreads(): Promise<WorkerThreads | undefined> {
  const name = 'node:worker_threads';
  try {
    return (await import(name)) as WorkerThreads;
  } catch {
    return undefined;
  }
}

interface Pending {
  resolve: (r: ShardResult) => void;
  reject: (e: Error) => void;
}

/** Worker threads that each hold a replica of a model and run shard steps (Node only). */
export class ShardWorkers {
  private readonly pending: (Pending | undefined)[];
  private failure: Error | undefined;
  private closing = false;

  private constructor(private readonly workers: WorkerLike[]) {
    this.pending = workers.map(() => undefined);
    workers.forEach((w, i) => {
      w.on('message', (m: { error?: string } & ShardResult) => {
        const p = this.pending[i];
        this.pending[i] = undefined;
        if (!p) return;
        if (m.error !== undefined) p.reject(new KwError('BACKEND_FAILED', m.error));
        else p.resolve(m as ShardResult);
      });
      const fail = (why: string) => {
        if (this.closing) return;
        this.failure = new KwError('BACKEND_FAILED', `shard worker ${i}: ${why}`);
        const p = this.pending[i];
        this.pending[i] = undefined;
        p?.reject(this.failure);
      };
      w.on('error', (e: Error) => fail(e.message));
      w.on('exit', (code: number) => fail(`exited with code ${code}`));
    });
  }

  /** Start `count` workers, each building `spec` on `backend`; resolves when all are ready. */
  static async start(spec: ModelSpec, count: number, backend: string): Promise<ShardWorkers> {
    const wt = await workerThreads();
    if (!wt)
      throw new KwError(
        'BACKEND_UNSUPPORTED',
        'Trainer: shard workers need Node worker_threads (use shardWorkers: false in a browser)',
      );
    // the built worker beside this module (tests run src/*.ts: they use the package's dist/)
    const here = (import.meta as { url?: string }).url ?? '';
    const Url = (globalThis as unknown as { URL: new (s: string, base: string) => object }).URL;
    const url = here.endsWith('.ts')
      ? new Url('../dist/shard-worker.js', here)
      : new Url('./shard-worker.js', here);
    const workers = Array.from(
      { length: count },
      () =>
        new wt.Worker(url, {
          workerData: {
            spec,
            backend,
            kernels: wasmKernelSettings(),
          },
        }),
    );
    try {
      await Promise.all(
        workers.map(
          (w, i) =>
            new Promise<void>((resolve, reject) => {
              // (only our own listeners come off: Node's Worker keeps internal ones)
              const done = (f: () => void) => {
                w.off('message', onMessage);
                w.off('error', onError);
                w.off('exit', onExit);
                f();
              };
              const bad = (why: string) =>
                done(() =>
                  reject(new KwError('BACKEND_FAILED', `shard worker ${i} did not start: ${why}`)),
                );
              const onMessage = (m: { ready?: boolean; error?: string }) =>
                m.ready ? done(resolve) : bad(m.error ?? 'no ready message');
              const onError = (e: Error) => bad(e.message);
              const onExit = (code: number) => bad(`exited with code ${code}`);
              w.on('message', onMessage);
              w.on('error', onError);
              w.on('exit', onExit);
            }),
        ),
      );
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new ShardWorkers(workers);
  }

  get size(): number {
    return this.workers.length;
  }

  /** Run one shard step on worker `i`. */
  run(i: number, req: ShardRequest): Promise<ShardResult> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending[i] = { resolve, reject };
      this.workers[i]!.postMessage(req);
    });
  }

  /** Stop every worker. */
  async terminate(): Promise<void> {
    this.closing = true;
    const ws = this.workers.splice(0);
    await Promise.all(ws.map((w) => w.terminate()));
  }
}
