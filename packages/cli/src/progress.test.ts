import { describe, expect, it } from 'vitest';
import { Progress } from './progress.js';

const ev = (done: number, extra: object = {}) => ({
  phase: 'train' as const,
  epoch: 0,
  epochs: 1,
  done,
  total: 2,
  loss: 1.5,
  accuracy: 0.5,
  imagesPerSecond: 100,
  batch: 10,
  ...extra,
});

describe('the progress line', () => {
  it('on a terminal: redrawn in place with clear-to-end, no ETA once nothing is left, cleared at the end', () => {
    let err = '';
    const p = new Progress({ out: () => {}, err: (s) => (err += s) }, true, () => 0);
    p.begin('KW 1x   ');
    p.event(ev(1, { tau: 0.5 }));
    p.event(ev(2, { tau: 0 }));
    p.event({ phase: 'bn-recalibration', epoch: 0, epochs: 1, done: 3, total: 32 });
    p.end();
    const frames = err.split('\r').filter(Boolean);
    expect(frames[0]).toBe(
      'KW 1x    epoch 1/1 [############............] 1/2 loss 1.5000 acc 0.500 tau 0.500 100 img/s ETA 0.1s\x1b[K',
    );
    // the last training frame ends the epoch: no ETA left, kept with a newline
    expect(frames[1]).toBe(
      'KW 1x    epoch 1/1 [########################] 2/2 loss 1.5000 acc 0.500 tau 0.000 100 img/s\x1b[K\n',
    );
    expect(frames[2]).toBe('KW 1x    BatchNorm statistics 3/32\x1b[K');
    // the status line is cleared when the variant is done
    expect(frames.at(-1)).toBe('\x1b[K');
  });

  it('no tau or T column for a model without them; a log gets one line per phase', () => {
    let err = '';
    const p = new Progress({ out: () => {}, err: (s) => (err += s) }, false, () => 0);
    p.begin('plain   ');
    p.event(ev(1));
    p.event(ev(2));
    p.event({ phase: 'test', epoch: 0, epochs: 1, done: 8, total: 16 });
    p.event({ phase: 'test', epoch: 0, epochs: 1, done: 16, total: 16 });
    p.event({ phase: 'export', epoch: 0, epochs: 1, done: 0, total: 1 });
    p.end();
    expect(err).toBe(
      'plain    epoch 1/1 [########################] 2/2 loss 1.5000 acc 0.500 100 img/s\n' +
        'plain    test set...\n' +
        'plain    ONNX export and check against tfjs...\n',
    );
  });
});
