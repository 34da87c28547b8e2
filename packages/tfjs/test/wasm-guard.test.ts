// The watch for tfjs-backend-wasm's stderr-only kernel failures. The failure lines below are
// copied from a real run (the long preset at batch 64 filled the 4 GB wasm heap); producing them
// for real needs a 4 GB heap, so they are written the way the wasm module writes them
// (fs.writeSync on fd 2). A stub under the watch takes the writes, so the test's output stays
// clean and the pass-through is checked.
import fs from 'node:fs';
import { KwError } from '@kernelwarehouse/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { watchWasmFailures } from '../src/index.js';

const LINE =
  'XNN status for xnn_create_convolution2d_nhwc_f32 is not successful. Got status 6. Use -c dbg to see XNN logs.\n';
const SETUP =
  'XNN status for xnn_setup_convolution2d_nhwc_f32 is not successful. Got status 2. Use -c dbg to see XNN logs.\n';

type Write = typeof fs.writeSync;
const realWrite = fs.writeSync;
let written: [number, string][] = [];
const stub = ((fd: number, data: string | Uint8Array) => {
  written.push([fd, typeof data === 'string' ? data : Buffer.from(data).toString()]);
  return 0;
}) as Write;

describe('watchWasmFailures', () => {
  beforeEach(() => {
    written = [];
    (fs as { writeSync: Write }).writeSync = stub;
  });
  afterEach(() => {
    expect(fs.writeSync).toBe(stub); // every watch unhooked
    (fs as { writeSync: Write }).writeSync = realWrite;
  });

  it('turns the XNNPACK failure lines into BACKEND_FAILED at the next check, then starts afresh', () => {
    const watch = watchWasmFailures();
    try {
      expect(watch.active).toBe(true);
      expect(() => watch.check('step 1')).not.toThrow();
      fs.writeSync(2, LINE);
      fs.writeSync(2, new TextEncoder().encode(SETUP));
      fs.writeSync(2, 'an unrelated warning\n');
      expect(written.map(([fd]) => fd)).toEqual([2, 2, 2]); // every line still reaches stderr
      expect(written[1]![1]).toBe(SETUP);
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

  it('ignores stdout and lines after stop; stop leaves a later wrapper in place', () => {
    const watch = watchWasmFailures();
    fs.writeSync(1, LINE);
    watch.stop();
    watch.stop();
    fs.writeSync(2, LINE);
    expect(watch.failures).toEqual([]);
    expect(written).toHaveLength(2);
    // a wrapper installed after ours survives our stop
    const a = watchWasmFailures();
    const mine = fs.writeSync;
    const b = watchWasmFailures();
    a.stop();
    expect(fs.writeSync).not.toBe(mine);
    b.stop();
    expect(fs.writeSync).toBe(mine); // b restored what it found: a's inert wrapper
    (fs as { writeSync: Write }).writeSync = stub;
  });
});
