import * as tf from '@tensorflow/tfjs';
import { afterEach, describe, expect, it } from 'vitest';
import { FusedAdamOptimizer } from '../src/adam-wasm.js';
import { loadOptimizerState, saveOptimizerState } from '../src/checkpoint.js';
import { setOwnWasmKernels } from '../src/conv-wasm.js';
import { useBackend } from './helpers.js';

// sizes with and without a remainder of 4 (the kernel's groups), a scalar-like [1], a matrix
const SHAPES = [[3, 3, 8, 12], [10], [7], [5, 3], [1], [6, 6]];
let uid = 0;

/** Two equal sets of variables with fresh random values (unique names). */
function twins(shapes: number[][] = SHAPES) {
  const a = shapes.map((s) => tf.variable(tf.randomNormal(s), true, `adam_t${uid++}`));
  const b = a.map((v) => tf.variable(v.clone(), true, `adam_t${uid++}`));
  return [a, b] as const;
}

/**
 * Gradients by variable name; a null one stays in the map (tf.AdamOptimizer keeps its moments by
 * position in the map, so a variable without a gradient keeps its place).
 */
const named = (vars: tf.Variable[], gs: (tf.Tensor | null)[]): Grads =>
  Object.fromEntries(vars.map((v, i) => [v.name, gs[i]])) as unknown as Grads;

/** What `applyGradients` takes (typed as variables by tfjs; gradients in practice). */
type Grads = Parameters<tf.AdamOptimizer['applyGradients']>[0];

/** Index of the first element where the two differ bit for bit, or -1. */
function firstDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = new Uint32Array(Float32Array.from(a.dataSync() as Float32Array).buffer);
  const y = new Uint32Array(Float32Array.from(b.dataSync() as Float32Array).buffer);
  if (x.length !== y.length) return 0;
  return x.findIndex((u, i) => u !== y[i]);
}

/**
 * Runs `steps` updates of `tf.train.adam` on one set and of the fused optimizer on the other with
 * the same fresh random gradients (one step with tiny gradients, where `sqrt(v) + eps` is ruled
 * by eps; the variable at `skip` without a gradient in the first step); returns both optimizers.
 */
function runBoth(steps: number, lr: number, form: 'map' | 'list', skip = 2) {
  const [a, b] = twins();
  const stock = tf.train.adam(lr);
  const fused = new FusedAdamOptimizer(lr);
  for (let t = 0; t < steps; t++) {
    const scale = t === 3 ? 1e-20 : 1;
    const gs = SHAPES.map((s, i) => (t === 0 && i === skip ? null : tf.randomNormal(s, 0, scale)));
    if (form === 'map') {
      stock.applyGradients(named(a, gs));
      fused.applyGradients(named(b, gs));
    } else {
      const list = (vars: tf.Variable[]) =>
        vars.map((v, i) => ({ name: v.name, tensor: gs[i] ?? tf.zeros(v.shape) }));
      stock.applyGradients(list(a));
      fused.applyGradients(list(b));
    }
    tf.dispose(gs.filter((g): g is tf.Tensor => g !== null));
    for (let i = 0; i < a.length; i++)
      expect(firstDiff(b[i]!, a[i]!), `step ${t} var ${i}`).toBe(-1);
  }
  return { a, b, stock, fused };
}

describe('FusedAdamOptimizer (wasm)', () => {
  afterEach(() => {
    setOwnWasmKernels(true);
  });

  it('gives tf.train.adam bit for bit, weights and both moments, for both gradient forms', async () => {
    await useBackend('wasm');
    for (const form of ['map', 'list'] as const) {
      const { a, b, stock, fused } = runBoth(8, 0.01, form);
      const [ws, wf] = [await stock.getWeights(), await fused.getWeights()];
      expect(wf.length).toBe(ws.length);
      ws.forEach((w, i) => {
        if (i > 0) expect(firstDiff(wf[i]!.tensor, w.tensor), w.name).toBe(-1);
      });
      expect(wf[0]!.tensor.dataSync()[0]).toBe(8); // the step count
      tf.dispose([...a, ...b]);
      stock.dispose();
      fused.dispose();
    }
  });

  it('runs its own kernel, one call per variable, and leaks no tensor', async () => {
    await useBackend('wasm');
    const [a, b] = twins();
    const fused = new FusedAdamOptimizer(0.001);
    const gs = SHAPES.map((s) => tf.randomNormal(s));
    fused.applyGradients(named(b, gs)); // creates the moments
    const before = tf.memory().numTensors;
    const p = await tf.profile(() => fused.applyGradients(named(b, gs)));
    expect(tf.memory().numTensors).toBe(before);
    const names = p.kernels.map((k) => k.name);
    expect(names.filter((n) => n === 'KwWasmAdam').length).toBe(SHAPES.length);
    for (const stockOp of ['Sqrt', 'RealDiv', 'Square']) expect(names).not.toContain(stockOp);
    tf.dispose([...a, ...b, ...gs]);
    fused.dispose();
  });

  it('is tf.AdamOptimizer where its kernel does not run: the own kernels off, the cpu backend', async () => {
    for (const where of ['kernels off', 'cpu'] as const) {
      await useBackend(where === 'cpu' ? 'cpu' : 'wasm');
      if (where === 'kernels off') setOwnWasmKernels(false);
      const { a, b, fused } = runBoth(3, 0.05, 'map');
      const p = await tf.profile(() =>
        fused.applyGradients(
          named(
            b,
            SHAPES.map((s) => tf.ones(s)),
          ),
        ),
      );
      expect(p.kernels.map((k) => k.name)).not.toContain('KwWasmAdam');
      expect(p.kernels.map((k) => k.name)).toContain('Sqrt');
      tf.dispose([...a, ...b]);
      setOwnWasmKernels(true);
    }
  });

  it('a checkpoint of tf.train.adam restores into it and both go on bit for bit', async () => {
    await useBackend('wasm');
    const { a, b, stock } = runBoth(4, 0.02, 'map');
    const bytes = await saveOptimizerState(stock);
    const resumed = new FusedAdamOptimizer(0.02);
    expect(resumed.getClassName()).toBe('Adam');
    // the fused optimizer continues from the stock one's state on b, which holds a's values
    // (the restored moments are by position: the same order of variables)
    await loadOptimizerState(resumed, bytes, 'test.safetensors');
    for (let t = 0; t < 3; t++) {
      const gs = SHAPES.map((s) => tf.randomNormal(s));
      stock.applyGradients(named(a, gs));
      resumed.applyGradients(named(b, gs));
      tf.dispose(gs);
      for (let i = 0; i < a.length; i++) expect(firstDiff(b[i]!, a[i]!), `after ${t}`).toBe(-1);
    }
    tf.dispose([...a, ...b]);
  });

  it('matches tf.train.adam bit for bit on NaN, infinities, zeros of both signs, subnormals and an empty variable', async () => {
    await useBackend('wasm');
    const vals = [Number.NaN, Infinity, -Infinity, 0, -0, 1e-45, 3e38, -3e38, 1, -1, 1e-20];
    const n = vals.length * 3; // 33: a tail of 1 after the groups of 4
    const g = tf.tensor(Array.from({ length: n }, (_, i) => vals[i % vals.length]!));
    const w = tf.tensor(Array.from({ length: n }, (_, i) => vals[(i * 7) % vals.length]!));
    const [a, b] = [w, w].map((t) => tf.variable(t.clone(), true, `adam_t${uid++}`));
    const [ea, eb] = [0, 1].map(() => tf.variable(tf.zeros([0, 3]), true, `adam_t${uid++}`));
    const empty = tf.zeros([0, 3]);
    const stock = tf.train.adam(0.1);
    const fused = new FusedAdamOptimizer(0.1);
    for (let t = 0; t < 3; t++) {
      stock.applyGradients({ [a!.name]: g, [ea!.name]: empty } as unknown as Grads);
      fused.applyGradients({ [b!.name]: g, [eb!.name]: empty } as unknown as Grads);
      expect(firstDiff(b!, a!), `step ${t}`).toBe(-1);
    }
    expect(Number.isNaN(b!.dataSync()[0])).toBe(true);
    expect(eb!.shape).toEqual([0, 3]);
    tf.dispose([g, w, a!, b!, ea!, eb!, empty]);
  });

  it('leaves moments kept for another variable to tf.AdamOptimizer (a list that changed between steps)', async () => {
    await useBackend('wasm');
    // tf.AdamOptimizer keeps moments by position in the gradient list: after {big, small}, the
    // list {small, big} hands small big's moments; the kernel would write 100 floats into a
    // buffer of 4 (and a subset would read past them), stock refuses the broadcast
    const big = tf.variable(tf.randomNormal([100]), true, `adam_t${uid++}`);
    const small = tf.variable(tf.randomNormal([4]), true, `adam_t${uid++}`);
    const [gb, gs] = [tf.ones([100]), tf.ones([4])];
    const fused = new FusedAdamOptimizer(0.01);
    fused.applyGradients({ [big.name]: gb, [small.name]: gs } as unknown as Grads);
    const before = Float32Array.from(small.dataSync() as Float32Array);
    for (const list of [{ [small.name]: gs, [big.name]: gb }, { [small.name]: gs }])
      expect(() => fused.applyGradients(list as unknown as Grads)).toThrow(
        /could not be broadcast/,
      );
    expect(Array.from(small.dataSync())).toEqual(Array.from(before));
    // the same list as the first step still runs on the kernel, and the heap is intact
    const p = await tf.profile(() =>
      fused.applyGradients({ [big.name]: gb, [small.name]: gs } as unknown as Grads),
    );
    expect(p.kernels.map((k) => k.name)).toContain('KwWasmAdam');
    expect(small.dataSync().every(Number.isFinite)).toBe(true);
    tf.dispose([big, small, gb, gs]);
  });

  it("defaults to tf.train.adam's settings (learning rate 0.001)", async () => {
    await useBackend('wasm');
    const [a, b] = twins([[9]]);
    const g = tf.randomNormal([9]);
    tf.train.adam().applyGradients({ [a[0]!.name]: g } as unknown as Grads);
    new FusedAdamOptimizer().applyGradients({ [b[0]!.name]: g } as unknown as Grads);
    expect(firstDiff(b[0]!, a[0]!)).toBe(-1);
    tf.dispose([...a, ...b, g]);
  });

  it('leaves a gradient of another shape to tf.AdamOptimizer (which refuses it)', async () => {
    await useBackend('wasm');
    const v = tf.variable(tf.randomNormal([4, 3]), true, `adam_t${uid++}`);
    const fused = new FusedAdamOptimizer(0.01);
    const g = tf.ones([3, 4]);
    // tfjs's own message: the stock route ran (the fused kernel would have read past the end)
    expect(() => fused.applyGradients({ [v.name]: g } as unknown as Grads)).toThrow(
      /could not be broadcast/,
    );
    tf.dispose([v, g]);
  });
});
