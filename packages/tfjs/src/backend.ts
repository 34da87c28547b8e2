/**
 * Backend choice: `tensorflow` (tfjs-node-gpu, then tfjs-node), then `wasm`, then `cpu`.
 * Each native package is an optional peer, loaded only by dynamic import; a missing one is
 * skipped. The choice and the reason are reported once per process.
 */
import { describeValue, KwError } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { enableRelaxedSimd, ownWasmKernelsStatus, setWasmFusedMultiplyAdd } from './conv-wasm.js';
import { registerFastWasmKernels } from './fast-wasm.js';
import { registerTrainingKernels } from './grads.js';

/** A candidate backend, in order of preference. */
export type BackendCandidate = 'tfjs-node-gpu' | 'tfjs-node' | 'wasm' | 'cpu';

/** Default preference order. */
export const BACKEND_ORDER: readonly BackendCandidate[] = [
  'tfjs-node-gpu',
  'tfjs-node',
  'wasm',
  'cpu',
];

/** Options of {@link chooseBackend}. */
export interface ChooseBackendOptions {
  /** Use this one (fail if it cannot load) instead of the preference order. */
  force?: BackendCandidate;
  /** Where the single report line goes (default `console.info`); `null` silences it. */
  report?: ((line: string) => void) | null;
  /** Module loader (tests inject one); default dynamic `import()`. */
  importer?: (name: string) => Promise<unknown>;
  /** Register `registerTrainingKernels` when wasm or cpu is chosen (default true). */
  trainingKernels?: boolean;
  /** Register {@link registerFastWasmKernels} when wasm is chosen (default true). */
  fastKernels?: boolean;
  /**
   * Relaxed SIMD's fused multiply-add in the own wasm conv kernels: `true` allows it and, on
   * wasm, switches relaxed SIMD on where the engine has it behind a flag (Node 20:
   * {@link enableRelaxedSimd}, process-wide); `false` forbids it ({@link setWasmFusedMultiplyAdd}:
   * the same numbers on every engine). Unset: leave the setting as it is (allowed by default, used
   * where the engine has relaxed SIMD without a flag).
   */
  fusedMultiplyAdd?: boolean;
}

/** Result of {@link chooseBackend}. */
export interface BackendChoice {
  candidate: BackendCandidate;
  /** The tfjs backend name now active (`tensorflow`, `wasm` or `cpu`). */
  backend: string;
  /** Why it was chosen, including what was skipped. */
  reason: string;
}

let reported = false;

async function tryCandidate(
  c: BackendCandidate,
  importer: (n: string) => Promise<unknown>,
): Promise<string> {
  if (c === 'tfjs-node-gpu' || c === 'tfjs-node') {
    await importer(`@tensorflow/${c}`);
    if (!(await tf.setBackend('tensorflow')))
      throw new Error('backend "tensorflow" did not initialise');
    return 'tensorflow';
  }
  if (c === 'wasm') await importer('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend(c))) throw new Error(`backend "${c}" did not initialise`);
  return c;
}

/**
 * Pick and activate the fastest available backend (or the forced one) and report the choice
 * once. On wasm and cpu, the training kernels of `registerTrainingKernels` are registered
 * (wasm lacks them; cpu's own are ~12x slower).
 *
 * @example
 * const { backend, reason } = await chooseBackend(); // e.g. 'wasm' (tfjs-node-gpu, tfjs-node not installed)
 */
export async function chooseBackend(options: ChooseBackendOptions = {}): Promise<BackendChoice> {
  const fma = options.fusedMultiplyAdd;
  if (fma !== undefined && fma !== true && fma !== false)
    throw new KwError(
      'ARGUMENT_INVALID',
      `chooseBackend: fusedMultiplyAdd must be true, false or undefined, found ${describeValue(fma)}`,
      { field: 'fusedMultiplyAdd', expected: 'true, false or undefined', found: fma },
    );
  const importer = options.importer ?? ((n: string) => import(n));
  const order = options.force ? [options.force] : BACKEND_ORDER;
  const skipped: string[] = [];
  for (const c of order) {
    try {
      const backend = await tryCandidate(c, importer);
      await tf.ready();
      // before anything binds the own kernels (the report below does)
      if (options.fusedMultiplyAdd !== undefined) setWasmFusedMultiplyAdd(options.fusedMultiplyAdd);
      if (options.fusedMultiplyAdd && backend === 'wasm') await enableRelaxedSimd();
      if ((backend === 'wasm' || backend === 'cpu') && options.trainingKernels !== false)
        registerTrainingKernels(backend);
      if (backend === 'wasm' && options.fastKernels !== false) registerFastWasmKernels();
      let reason = options.force
        ? `forced by the caller`
        : skipped.length
          ? `first available; skipped ${skipped.join('; ')}`
          : 'first in the preference order';
      if (backend === 'wasm') {
        const own = ownWasmKernelsStatus();
        reason += `; own WebAssembly SIMD conv kernels: ${own.active ? own.reason : `off (${own.reason})`}`;
      }
      const report =
        options.report === undefined
          ? (line: string) =>
              (globalThis as unknown as { console: { info(s: string): void } }).console.info(line)
          : options.report;
      if (report && !reported) {
        reported = true;
        report(`@kernelwarehouse/tfjs: using backend "${backend}" (${c}): ${reason}`);
      }
      return { candidate: c, backend, reason };
    } catch (e) {
      const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
      skipped.push(`${c} (${msg})`);
      if (options.force)
        throw new KwError(
          'BACKEND_UNAVAILABLE',
          `chooseBackend: forced backend ${c} is not available: ${msg}`,
          { candidate: c },
        );
    }
  }
  throw new KwError(
    'BACKEND_UNAVAILABLE',
    `chooseBackend: no backend available: ${skipped.join('; ')}`,
    {
      skipped,
    },
  );
}

/** Allow the next {@link chooseBackend} call to report again (tests). */
export function resetBackendReport(): void {
  reported = false;
}
