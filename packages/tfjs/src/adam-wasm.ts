/**
 * Adam whose per-variable update is one pass of the own wasm kernel (`adam` of adam-kernels.ts)
 * instead of tfjs's eleven ops (`Multiply`, `Add`, `Square`, `RealDiv`, `Sqrt`, ... each a pass
 * over the variable, each a kernel call). The same float32 operations in the same order, each
 * rounded to float32, so the weights and moments are bit-identical to `tf.train.adam`'s on wasm
 * (`adam-wasm.test.ts` checks it step by step). The state is `tf.AdamOptimizer`'s own (moments,
 * running powers of beta, step count): checkpoints, `getWeights` / `setWeights` and the class name
 * `Adam` are unchanged. Where the kernels do not apply (another backend, the own kernels off,
 * non-float32 tensors, a gradient whose shape is not its variable's) it is `tf.AdamOptimizer`.
 * The Trainer's `adam` and `adamw` use it.
 */
import * as tf from '@tensorflow/tfjs';
import { ADAM_SCALARS } from './adam-kernels.js';
import {
  activeOwnKernels,
  heapOffset,
  type KernelArgs,
  registerOwnKernels,
  requireKernels,
  type WasmBackend,
} from './conv-wasm.js';

const KERNEL = 'KwWasmAdam';
let on = true;

/**
 * Turn the fused update on or off (on by default; the own kernels' switch, `setOwnWasmKernels`,
 * turns it off too); returns the previous setting. For side-by-side benchmarks.
 */
export function setWasmFusedAdam(enabled: boolean): boolean {
  const was = on;
  on = enabled;
  return was;
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
 * `{p, m, v, g}` -> `[p', m', v']` (attrs: the scalars of {@link ADAM_SCALARS} by name): the
 * kernel over the multiples of 4, the last `size % 4` floats here with the same float32
 * operations (`Math.fround` of a double +, -, x, / or sqrt of float32 values is the float32
 * operation's result: double has more than twice float32's precision).
 */
function adamKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const be = backend as WasmBackend;
  const { p, m, v, g } = inputs as Record<'p' | 'm' | 'v' | 'g', tf.TensorInfo>;
  const n = p.shape.reduce((a, b) => a * b, 1);
  const outs = [p, m, v].map((t) => be.makeOutput([...t.shape], 'float32'));
  const sc = be.makeOutput([ADAM_SCALARS.length], 'float32');
  const scalars = ADAM_SCALARS.map((k) => Math.fround(attrs![k] as number));
  (be.typedArrayFromHeap(sc) as Float32Array).set(scalars);
  const n4 = Math.floor(n / 4);
  const K = requireKernels(be, KERNEL);
  const [po, mo, vo, go, so] = [p, m, v, g, sc].map((t) => heapOffset(be, t)) as number[];
  const [pOut, mOut, vOut] = outs.map((t) => heapOffset(be, t)) as number[];
  K.adam(po!, mo!, vo!, go!, pOut!, mOut!, vOut!, n4, so!);
  if (n % 4 !== 0) {
    // views after the last allocation (a growing heap moves)
    const [P, M, V, G] = [p, m, v, g].map((t) => be.typedArrayFromHeap(t) as Float32Array);
    const [P1, M1, V1] = outs.map((t) => be.typedArrayFromHeap(t) as Float32Array);
    const [b1, c1, b2, c2, o1, o2, eps, nlr] = scalars as [
      number,
      number,
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    const f = Math.fround;
    for (let i = n4 * 4; i < n; i++) {
      const gi = G![i]!;
      const mi = f(f(M![i]! * b1) + f(gi * c1));
      const vi = f(f(V![i]! * b2) + f(f(gi * gi) * c2));
      M1![i] = mi;
      V1![i] = vi;
      P1![i] = f(f(f(f(mi / o1) / f(f(Math.sqrt(f(vi / o2))) + eps)) * nlr) + P![i]!);
    }
  }
  be.disposeData(sc.dataId);
  return outs;
}

/**
 * `tf.AdamOptimizer` with the update of each variable fused into one pass on tfjs wasm (see the
 * file's header); the constructor takes `tf.train.adam`'s arguments (`epsilon` absent: the
 * backend's, as there).
 *
 * @example
 * const optimizer = new FusedAdamOptimizer(0.001);
 * optimizer.minimize(() => loss(model, x, y));
 */
export class FusedAdamOptimizer extends tf.AdamOptimizer {
  constructor(learningRate: number, beta1 = 0.9, beta2 = 0.999, epsilon?: number) {
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
    const fits = names.every((name, i) => {
      const value = vars[name];
      const g = gradOf(name, i);
      if (!value || value.dtype !== 'float32') return false;
      return g == null || (g.dtype === 'float32' && tf.util.arraysEqual(g.shape, value.shape));
    });
    if (!on || !activeOwnKernels() || !fits) {
      super.applyGradients(variableGradients);
      return;
    }
    registerOwnKernels([[KERNEL, adamKernel]]);
    const s = this as unknown as AdamState;
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
