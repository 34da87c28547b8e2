// tfjs wasm prints a failed XNNPACK op (out of memory near its 4 GB heap) on stderr and goes on
// with the op's output uncomputed. kw train must stop instead of training on garbage, and keep
// nothing from the failed step. Filling a 4 GB heap in a test is not practical, so the third
// train step writes the failure line exactly as the wasm module does (fs.writeSync on fd 2;
// the line is copied from a real run).
import fs, { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FusedAdamOptimizer } from '@kernelwarehouse/tfjs';
import { describe, expect, it, vi } from 'vitest';
import { run } from '../test/harness.js';

const LINE =
  'XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.\n';

describe('kw train and a failed wasm kernel', () => {
  it('stops with BACKEND_FAILED naming the step, and the checkpoint holds the step before it', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kw-xnn-')), 'run');
    // the Trainer applies the gradients once per step (its Adam is the package's fused one)
    const original = FusedAdamOptimizer.prototype.applyGradients;
    let calls = 0;
    const spy = vi
      .spyOn(FusedAdamOptimizer.prototype, 'applyGradients')
      .mockImplementation(function (
        this: FusedAdamOptimizer,
        grads: Parameters<typeof original>[0],
      ) {
        original.call(this, grads);
        if (++calls === 3) fs.writeSync(2, LINE);
      });
    // the line reaches the watch (installed by kw train over this filter) but not the test log
    const realWrite = fs.writeSync;
    (fs as { writeSync: typeof fs.writeSync }).writeSync = ((fd: number, data: string, ...rest) =>
      data === LINE ? 0 : realWrite(fd, data, ...(rest as []))) as typeof fs.writeSync;
    try {
      const r = await run(
        'train',
        '--jobs',
        '1',
        '--seeds',
        '1',
        '--methods',
        'kw:1x',
        '--train-size',
        '160',
        '--test-size',
        '32',
        '--batch',
        '32',
        '--epochs',
        '1',
        '--checkpoint-every',
        '2',
        '--out',
        out,
      );
      expect(calls).toBe(3);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        /kw train: \[BACKEND_FAILED\] KW 1x epoch 1 step 3: tfjs wasm \(XNNPACK\) xnn_create_convolution2d_nhwc_f32 failed with status 6 \(out of memory\); .*Nothing from this step was kept; .*kw train --resume /,
      );
      const ck = JSON.parse(readFileSync(join(out, 'checkpoint', 'checkpoint.json'), 'utf8'));
      expect([ck.state.current.epoch, ck.state.current.step]).toEqual([0, 2]);
    } finally {
      spy.mockRestore();
      (fs as { writeSync: typeof fs.writeSync }).writeSync = realWrite;
    }
  });
});
