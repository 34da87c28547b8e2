// The watch for tfjs-backend-wasm's stderr-only kernel failures. The failure line below is
// copied from a real run (the long preset at batch 64 filled the 4 GB wasm heap); producing it
// for real needs a 4 GB heap, so the line is written the way the wasm module writes it
// (fs.writeSync on fd 2).
import fs from 'node:fs';
import { KwError } from '@kernelwarehouse/core';
import { afterEach, describe, expect, it } from 'vitest';
import { watchWasmFailures } from '../src/index.js';

const LINE =
  'XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.\n';
const SETUP =
  'XNN status for xnn_setup_convolution2d_nhwc_f32 is not successful. Got status 2. Use -c dbg to see XNN logs.\n';

describe('watchWasmFailures', () => {
  const originalWrite = fs.writeSync;
  afterEach(() => expect(fs.writeSync).toBe(originalWrite)); // every watch unhooked

  it('turns the XNNPACK failure lines into BACKEND_FAILED at the next check, then starts afresh', () => {
    const watch = watchWasmFailures();
    try {
      expect(watch.active).toBe(true);
      expect(() => watch.check('step 1')).not.toThrow();
      fs.writeSync(2, LINE);
      fs.writeSync(2, new TextEncoder().encode(SETUP));
      fs.writeSync(2, 'an unrelated warning\n');
      expect(watch.failures).toEqual([
        'xnn_create_convolution2d_nhwc_f32 failed with status 6 (out of memory)',
        'xnn_setup_convolution2d_nhwc_f32 failed with status 2 (invalid parameter)',
      ]);
      let err: unknown;
      try {
        watch.check('KW 1x step 7');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KwError);
      expect((err as KwError).code).toBe('BACKEND_FAILED');
      expect((err as Error).message).toMatch(
        /KW 1x step 7: tfjs wasm \(XNNPACK\) xnn_create_convolution2d_nhwc_f32 failed with status 6 \(out of memory\) and 1 more; .*lower the batch size/,
      );
      expect(() => watch.check('step 8')).not.toThrow(); // the failures were reported once
    } finally {
      watch.stop();
    }
  });

  it('ignores lines on stdout and after stop; stop leaves a later wrapper in place', () => {
    const watch = watchWasmFailures();
    fs.writeSync(1, ''); // stdout is not watched (an empty write keeps the test output clean)
    watch.stop();
    watch.stop();
    fs.writeSync(2, '');
    expect(watch.failures).toEqual([]);
    // a wrapper installed after ours survives our stop
    const a = watchWasmFailures();
    const mine = fs.writeSync;
    const b = watchWasmFailures();
    a.stop();
    expect(fs.writeSync).not.toBe(mine);
    b.stop();
    expect(fs.writeSync).toBe(mine); // b restored what it found: a's inert wrapper
    (fs as { writeSync: typeof fs.writeSync }).writeSync = originalWrite;
  });
});
