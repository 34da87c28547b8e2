/**
 * A watch for the kernel failures tfjs-backend-wasm reports only as a line on stderr.
 *
 * When XNNPACK cannot create or set up an operator (most often out of memory: the wasm heap is
 * capped at 4 GB), tfjs-backend-wasm 4.22 prints `XNN status for xnn_create_convolution2d_nhwc_f32
 * is not successful. Got status 6. ...` and carries on: the op's output is left uncomputed and the
 * step goes on with whatever the buffer held. Nothing throws. A training run that outgrows the
 * heap would silently train on garbage; this watch turns that line into an error.
 *
 * In Node the wasm module writes those lines with `fs.writeSync(2, ...)`; the watch wraps that
 * function (and passes every line through). Elsewhere (browsers) there is nothing to wrap and
 * the watch reports `active: false`.
 */
import { KwError } from '@kernelwarehouse/core';

type WriteSync = (fd: number, data: unknown, ...rest: unknown[]) => number;

/** What {@link watchWasmFailures} returns. */
export interface WasmFailureWatch {
  /** Whether the watch could hook the stream (Node); false where it cannot see the lines. */
  readonly active: boolean;
  /** The failure lines seen since the watch started (or since the last {@link check}). */
  readonly failures: readonly string[];
  /**
   * Throw `BACKEND_FAILED` naming `where` and the first failure if any line was seen; the
   * results computed since the last check are not to be trusted.
   */
  check(where: string): void;
  /** Unhook. Idempotent. */
  stop(): void;
}

const FAILURE = /XNN status for (\w+) is not successful\. Got status (\d+)/;

/** XNNPACK's status codes (xnnpack.h) that tfjs-backend-wasm prints. */
const XNN_STATUS: Record<string, string> = {
  '1': 'uninitialized',
  '2': 'invalid parameter',
  '3': 'invalid state',
  '4': 'unsupported parameter',
  '5': 'unsupported hardware',
  '6': 'out of memory',
};

interface FsLike {
  writeSync: WriteSync;
}

function nodeFs(): FsLike | undefined {
  const p = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const fs = p?.getBuiltinModule?.('fs') as FsLike | undefined;
  return fs && typeof fs.writeSync === 'function' ? fs : undefined;
}

/**
 * Start watching for tfjs-backend-wasm kernel failures. Call `check(where)` after each training
 * step or prediction; `stop()` when done.
 *
 * @example
 * const watch = watchWasmFailures();
 * try {
 *   for (const batch of batches) {
 *     await trainStep(batch);
 *     watch.check(`step ${i}`); // throws BACKEND_FAILED if XNNPACK failed during the step
 *   }
 * } finally {
 *   watch.stop();
 * }
 */
export function watchWasmFailures(): WasmFailureWatch {
  const fs = nodeFs();
  const seen: string[] = [];
  let stopped = false;
  const original = fs?.writeSync;
  let wrapped: WriteSync | undefined;
  if (fs && original) {
    wrapped = function (this: unknown, fd, data, ...rest) {
      if (fd === 2 && !stopped) {
        const text =
          typeof data === 'string'
            ? data
            : data instanceof Uint8Array
              ? String.fromCharCode(...data.subarray(0, 256)) // the line is ASCII
              : '';
        const m = FAILURE.exec(text);
        if (m) seen.push(`${m[1]} failed with status ${m[2]} (${XNN_STATUS[m[2]!] ?? 'unknown'})`);
      }
      return original.call(this, fd, data, ...rest);
    };
    fs.writeSync = wrapped;
  }
  return {
    active: fs !== undefined,
    get failures() {
      return seen.slice();
    },
    check(where: string) {
      if (seen.length === 0) return;
      const first = seen[0]!;
      const count = seen.length;
      seen.length = 0;
      throw new KwError(
        'BACKEND_FAILED',
        `${where}: tfjs wasm (XNNPACK) ${first}${count > 1 ? ` and ${count - 1} more` : ''}; the op's output was never computed, so the results since the last check are invalid. Out of memory means the wasm heap (4 GB at most) is full: lower the batch size or the model width`,
        { actual: first },
      );
    },
    stop() {
      if (stopped) return;
      stopped = true;
      // restore unless someone wrapped it after us (then our wrapper stays, passing through)
      if (fs && original && fs.writeSync === wrapped) fs.writeSync = original;
    },
  };
}
