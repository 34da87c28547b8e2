/**
 * Adam whose per-variable update is one pass of the own wasm kernel (`adam` of adam-kernels.ts)
 * instead of tfjs's eleven ops (`Multiply`, `Add`, `Square`, `RealDiv`, `Sqrt`, ... each a pass
 * over the variable, each a kernel call). The same float32 operations in the same order, each
 * rounded to float32, so the weights and moments are bit-identical to `tf.train.adam`'s on wasm
 * (`adam-wasm.test.ts` checks it step by step, infinities, zeros of both signs and subnormals
 * included). One exception, in NaN bits only: where two NaNs meet in a variable of one element,
 * which of them comes out (payload, sign) can differ, as tfjs's scalar path picks otherwise. The
 * state is `tf.AdamOptimizer`'s own (moments, running powers of beta, step count): checkpoints,
 * `getWeights` / `setWeights` and the class name `Adam` are unchanged. Where the kernels do not apply (another backend, the own kernels off,
 * non-float32 tensors, a gradient whose shape is not its variable's, or moments kept at a
 * variable's place that are not of its shape: tf.AdamOptimizer keeps them by position in the
 * gradient list, so a list that changes between steps hands a variable another's moments) it is
 * `tf.AdamOptimizer`, which refuses what does not broadcast.
 * The Trainer's `adam` and `adamw` use it.
 */
import * as tf from '@tensorflow/tfjs';
import { ADAM_SCALARS } from './adam-kernels.js';
import {
  heapOffset,
  type KernelArgs,
  OwnKernelPath,
  registerOwnKernels,
  requireKernels,
  type WasmBackend,
} from './conv-wasm.js';

const KERNEL = 'KwWasmAdam';
const path = new OwnKernelPath();

/**
 * Turn the fused update on or off (on by default; the own kernels' switch, `setOwnWasmKernels`,
 * turns it off too); returns the previous setting. For side-by-side benchmarks.
 */
export function setWasmFusedAdam(enabled: boolean): boolean {
  return path.set(enabled);
}

/** What `applyGradients` takes: gradients by variable name, or `{ name, tensor }` in order. */
type Gradients = Parameters<tf.AdamOptimizer['applyGradients']>[0];

/** `tf.AdamOptimizer`'s fields (private in its types, public at run time), as tfjs 4.22 has them. */
interface AdamState {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  accumulatedFirstMoment: ({ originalName: string; variable: tf.Variable } | undefined)[];
  accumulatedSecondMoment: ({ originalName: string; variable: tf.Variable } | undefined)[];
  incrementIterations(): void;
}

/**
 * `{p, m, v, g}` -> `[p', m', v']` (attrs: the scalars of {@link ADAM_SCALARS} by name; the four
 * inputs of one size, which the optimizer checks). The kernel runs over the groups of 4 floats in
 * place; the last `size % 4` floats go through it as one group copied into scratch with zeros
 * after them, so every float takes the same SIMD instructions.
 */
function adamKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { p, m, v, g } = inputs as Record<'p' | 'm' | 'v' | 'g', tf.TensorInfo>;
  const n = p.shape.reduce((a, b) => a * b, 1);
  const made: tf.TensorInfo[] = [];
  const make = (shape: number[]) => {
    const t = be.makeOutput(shape, 'float32');
    made.push(t);
    return t;
  };
  try {
    const outs = [p, m, v].map((t) => make([...t.shape]));
    // scratch: the scalars, then 7 groups of 4 floats (p, m, v, g in; p', m', v' out) for the tail
    const sc = make([ADAM_SCALARS.length + 28]);
    const S = be.typedArrayFromHeap(sc) as Float32Array;
    S.fill(0);
    S.set(ADAM_SCALARS.map((k) => attrs![k] as number));
    const K = requireKernels(be, KERNEL);
    // byte offsets: p, m, v, g, p', m', v', then the scratch (the scalars first)
    const at = [p, m, v, g, ...outs, sc].map((t) => heapOffset(be, t));
    const so = at[7]!;
    const n4 = Math.floor(n / 4);
    K.adam(...at.slice(0, 7), n4, so);
    const rest = n - 4 * n4;
    if (rest > 0) {
      // views after the last allocation (a growing heap moves)
      const T = be.typedArrayFromHeap(sc) as Float32Array;
      const tail = ADAM_SCALARS.length;
      [p, m, v, g].forEach((t, q) => {
        const X = be.typedArrayFromHeap(t) as Float32Array;
        T.set(X.subarray(4 * n4, n), tail + 4 * q);
      });
      const slot = (q: number) => so + 4 * (tail + 4 * q);
      K.adam(slot(0), slot(1), slot(2), slot(3), slot(4), slot(5), slot(6), 1, so);
      outs.forEach((t, q) => {
        const Y = be.typedArrayFromHeap(t) as Float32Array;
        Y.set(T.subarray(tail + 4 * (4 + q), tail + 4 * (4 + q) + rest), 4 * n4);
      });
    }
    be.disposeData(sc.dataId);
    return outs;
  } catch (e) {
    for (const t of made) be.disposeData(t.dataId);
    throw e;
  }
}

/**
 * `tf.AdamOptimizer` with the update of each variable fused into one pass on tfjs wasm (see the
 * file's header); the constructor takes `tf.train.adam`'s arguments with its defaults (learning
 * rate 0.001, betas 0.9 and 0.999, `epsilon` absent: the backend's).
 *
 * @example
 * const optimizer = new FusedAdamOptimizer(0.001);
 * optimizer.minimize(() => loss(model, x, y));
 */
export class FusedAdamOptimizer extends tf.AdamOptimizer {
  constructor(learningRate = 0.001, beta1 = 0.9, beta2 = 0.999, epsilon?: number) {
    super(learningRate, beta1, beta2, epsilon ?? (null as unknown as number));
  }

  /**
   * One Adam step with these gradients (by variable name, or `{ name, tensor }` in order), as
   * `tf.AdamOptimizer.applyGradients`: a null gradient leaves its variable as it is, and the
   * moments are kept by position in the list.
   */
  override applyGradients(variableGradients: Gradients): void {
    const names = Array.isArray(variableGradients)
      ? variableGradients.map((v) => v.name)
      : Object.keys(variableGradients);
    const gradOf = (name: string, i: number): tf.Tensor | undefined =>
      Array.isArray(variableGradients)
        ? variableGradients[i]?.tensor
        : (variableGradients as Record<string, tf.Tensor | undefined>)[name];
    const vars = tf.engine().registeredVariables;
    const s = this as unknown as AdamState;
    // the gradient and the moments already kept at the variable's place (by position, as
    // tf.AdamOptimizer keeps them) of its shape, or tf.AdamOptimizer's own update (which refuses
    // what does not broadcast): the kernel reads and writes the variable's size of each
    const same = (t: tf.Tensor | undefined, value: tf.Variable) =>
      t == null || (t.dtype === 'float32' && tf.util.arraysEqual(t.shape, value.shape));
    const fits = names.every((name, i) => {
      const value = vars[name];
      if (value?.dtype !== 'float32') return false;
      return (
        same(gradOf(name, i), value) &&
        same(s.accumulatedFirstMoment[i]?.variable, value) &&
        same(s.accumulatedSecondMoment[i]?.variable, value)
      );
    });
    if (!fits || !path.active()) {
      super.applyGradients(variableGradients);
      return;
    }
    registerOwnKernels([[KERNEL, adamKernel]]);
    const [a1, a2] = [s.accBeta1, s.accBeta2].map((t) => t.dataSync()[0]!) as [number, number];
    const attrs = {
      b1: s.beta1,
      c1: 1 - s.beta1,
      b2: s.beta2,
      c2: 1 - s.beta2,
      o1: 1 - a1,
      o2: 1 - a2,
      eps: s.epsilon,
      nlr: -s.learningRate,
    };
    tf.tidy(() => {
      names.forEach((name, i) => {
        const value = vars[name]!;
        // the moments as tf.AdamOptimizer makes them: by position, zeros, not trainable
        const moment = (list: AdamState['accumulatedFirstMoment'], tag: string) => {
          list[i] ??= {
            originalName: `${name}/${tag}`,
            variable: tf.tidy(() => tf.zerosLike(value).variable(false)),
          };
          return list[i]!.variable;
        };
        const m = moment(s.accumulatedFirstMoment, 'm');
        const v = moment(s.accumulatedSecondMoment, 'v');
        const g = gradOf(name, i);
        if (g == null) return;
        const [p1, m1, v1] = tf
          .engine()
          .runKernel(KERNEL, { p: value, m, v, g }, attrs) as unknown as tf.Tensor[];
        m.assign(m1!);
        v.assign(v1!);
        value.assign(p1!);
      });
      s.accBeta1.assign(tf.mul(s.accBeta1, s.beta1));
      s.accBeta2.assign(tf.mul(s.accBeta2, s.beta2));
    });
    s.incrementIterations();
  }
}
