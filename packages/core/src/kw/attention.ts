/**
 * Contrasting-driven attention function (CAF) and the temperature schedule
 * (official modules/kernel_warehouse.py L100-103, engine.py L10-14 / L45-48;
 * reference/kernelwarehouse.md §2.2, §2.7).
 */
import { KwError } from '../errors.js';

/** Epsilon in the CAF denominator, as in the official code. */
export const CAF_EPS = 1e-3;

/**
 * CAF on one batch of logits.
 *
 * `logits` holds `rows` rows of `n + 1` values (the last is the zero cell). Each row z becomes
 * `alpha = (1 - tau) * z / (sum|z| + 1e-3) + tau * beta_row`, where `beta_row` is one-hot at
 * `beta[row % m]`; the zero-cell column is dropped. Returns `rows * n` attentions.
 *
 * @param beta per-mixture selected cell (length m), `n` meaning the zero cell.
 */
export function caf(
  logits: Float32Array,
  rows: number,
  n: number,
  tau: number,
  beta: Int32Array,
): Float32Array {
  if (!(tau >= 0 && tau <= 1)) {
    throw new KwError('ARGUMENT_INVALID', `temperature tau must be in [0, 1], found ${tau}`);
  }
  if (logits.length !== rows * (n + 1)) {
    throw new KwError(
      'TENSOR_SHAPE',
      `CAF logits: expected ${rows} x ${n + 1} values, found ${logits.length}`,
    );
  }
  const m = beta.length;
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const base = r * (n + 1);
    let s = 0;
    for (let j = 0; j <= n; j++) s += Math.abs(logits[base + j]!);
    const inv = (1 - tau) / (s + CAF_EPS);
    const sel = beta[r % m]!;
    for (let j = 0; j < n; j++) out[r * n + j] = logits[base + j]! * inv + (j === sel ? tau : 0);
  }
  return out;
}

/** Settings of the official temperature schedule (engine.py `get_temperature`). */
export interface TemperatureSchedule {
  /** Epochs over which the value falls (official `temp_epoch`: 20, or 15 for MobileNetV2). */
  epochs: number;
  /** Micro-batches per epoch (`len(data_loader)`). */
  itersPerEpoch: number;
  /** Starting value (official `temp_init_value`: 1 for KW; DY-Conv anneals from 30). */
  initValue?: number;
  /** Final value (official `temp_end`: 0 for KW; 1 for DY-Conv). */
  endValue?: number;
}

/**
 * The temperature for a training micro-batch, exactly as the official loop computes it:
 * `T = itersPerEpoch * epochs`, `t = itersPerEpoch * epoch + step + 1`,
 * `value = end + max(0, (init - end) * (T - t) / max(1, T))`. `epoch` is 0-based and `step`
 * the 0-based micro-batch index within the epoch. With the defaults (1 -> 0) this is KW's tau.
 *
 * @example
 * temperatureAt({ epochs: 20, itersPerEpoch: 100 }, 0, 0); // 0.9995
 */
export function temperatureAt(schedule: TemperatureSchedule, epoch: number, step: number): number {
  const { epochs, itersPerEpoch } = schedule;
  const init = schedule.initValue ?? 1;
  const end = schedule.endValue ?? 0;
  if (!Number.isInteger(itersPerEpoch) || itersPerEpoch < 1) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `itersPerEpoch must be an integer >= 1, found ${itersPerEpoch}`,
    );
  }
  if (!Number.isFinite(epochs) || epochs < 0) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `temperature epochs must be a finite number >= 0, found ${epochs}`,
    );
  }
  if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(step) || step < 0) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `epoch and step must be integers >= 0, found epoch=${epoch}, step=${step}`,
    );
  }
  if (!Number.isFinite(init) || !Number.isFinite(end)) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `initValue and endValue must be finite, found ${init} and ${end}`,
    );
  }
  const total = itersPerEpoch * epochs;
  const t = itersPerEpoch * epoch + step + 1;
  return end + Math.max(0, (init - end) * ((total - t) / Math.max(1, total)));
}
