/**
 * `kw train`'s progress display over the Trainer's events. On a terminal one line is redrawn in
 * place (and cleared when the variant is done); elsewhere a line is printed at each epoch end,
 * each checkpoint and each phase start, so logs stay short.
 */
import type { TrainerEvent } from '@kernelwarehouse/tfjs';
import type { Io } from './io.js';

/** `75.3` -> `1m15s`, `4.2` -> `4.2s`. */
export const fmtTime = (s: number) =>
  s >= 60
    ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`
    : `${s.toFixed(1)}s`;

const CLEAR = '\x1b[K';

const PHASE_TEXT: Record<Exclude<TrainerEvent['phase'], 'train'>, string> = {
  'bn-recalibration': 'BatchNorm statistics',
  test: 'test set',
  export: 'ONNX export and check against tfjs',
};

/** Draws progress for one variant at a time. */
export class Progress {
  private tag = '';
  private phase: TrainerEvent['phase'] | undefined;
  private drawn = false;

  constructor(
    private readonly io: Io,
    private readonly tty: boolean,
    /** Images still to train after the current variant (for the ETA). */
    private readonly remainingAfter: () => number,
  ) {}

  /** Start a variant (`tag` prefixes its lines). */
  begin(tag: string): void {
    this.tag = tag;
    this.phase = undefined;
  }

  private draw(line: string, keep: boolean): void {
    if (this.tty) {
      this.io.err(`\r${line}${CLEAR}${keep ? '\n' : ''}`);
      this.drawn = !keep;
    } else if (keep) {
      this.io.err(`${line}\n`);
    }
  }

  /** One Trainer event (or an `export` event of the driver). */
  event(e: TrainerEvent & { batch?: number }): void {
    const first = this.phase !== e.phase;
    this.phase = e.phase;
    if (e.phase !== 'train') {
      const what = PHASE_TEXT[e.phase];
      const count = e.total > 1 ? ` ${e.done}/${e.total}` : '';
      // a terminal sees the count move; a log sees the phase start once
      if (this.tty) this.draw(`${this.tag} ${what}${count}`, false);
      else if (first) this.io.err(`${this.tag} ${what}...\n`);
      return;
    }
    const end = e.done === e.total;
    const width = 24;
    const bar = '#'.repeat(Math.round((e.done / e.total) * width)).padEnd(width, '.');
    const ips = e.imagesPerSecond ?? 0;
    const left = ((e.epochs - e.epoch) * e.total - e.done) * (e.batch ?? 0) + this.remainingAfter();
    const parts = [
      `${this.tag} epoch ${e.epoch + 1}/${e.epochs} [${bar}] ${e.done}/${e.total}`,
      `loss ${e.loss!.toFixed(4)}`,
      `acc ${e.accuracy!.toFixed(3)}`,
      e.tau !== undefined ? `tau ${e.tau.toFixed(3)}` : '',
      e.temperature !== undefined ? `T ${e.temperature.toFixed(2)}` : '',
      `${ips.toFixed(0)} img/s`,
      left > 0 && ips > 0 ? `ETA ${fmtTime(left / ips)}` : '',
    ].filter(Boolean);
    const line = parts.join(' ');
    if (this.tty) this.draw(line, end);
    else if (end || e.checkpoint) this.io.err(`${line}${end ? '' : ' (checkpoint)'}\n`);
  }

  /** The variant is done: clear the in-place line. */
  end(): void {
    if (this.tty && this.drawn) this.io.err(`\r${CLEAR}`);
    this.drawn = false;
  }
}
