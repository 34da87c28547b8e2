// `kw train --shards N`: each batch in N shards trained in worker threads (tfjs Trainer
// shards + shardWorkers); recorded with the run's options; bad values refused by the flag table.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';

const TINY = [
  '--jobs',
  '1',
  '--seeds',
  '1',
  '--methods',
  'plain,kw:1x',
  '--width',
  '0.5',
  '--train-size',
  '96',
  '--test-size',
  '32',
  '--batch',
  '32',
  '--epochs',
  '1',
  '--bn-passes',
  '2',
];

describe('kw train --shards', () => {
  it('trains each batch in 2 worker shards, records the setting, and learns the same way', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kw-shards-'));
    const r = await run('train', ...TINY, '--shards', '2', '--out', join(dir, 'two'));
    expect(r.code, r.err).toBe(0);
    const res = JSON.parse(readFileSync(join(dir, 'two', 'results.json'), 'utf8'));
    expect(res.config.shards).toBe(2);
    expect(res.results).toHaveLength(2);
    const one = await run('train', ...TINY, '--out', join(dir, 'one'));
    expect(one.code, one.err).toBe(0);
    const base = JSON.parse(readFileSync(join(dir, 'one', 'results.json'), 'utf8'));
    for (const [i, x] of res.results.entries()) {
      // 3 steps each; shards normalise BatchNorm over half a batch, so the curves are close to
      // the unsharded run's, not equal (the exact equality is the tfjs package's shards test)
      expect(x.curve).toHaveLength(3);
      expect(x.curve[0].loss).toBeCloseTo(base.results[i].curve[0].loss, 0);
      expect(
        x.curve.some((c: { loss: number }, k: number) => c.loss !== base.results[i].curve[k].loss),
      ).toBe(true);
      expect(x.onnxMaxRelError).toBeLessThan(1e-4);
    }
  });

  it('refuses --shards 0, 65 and more shards than images in a batch', async () => {
    for (const [v, re] of [
      ['0', /--shards.*1\.\.64|--shards/],
      ['65', /--shards/],
      ['0x2', /--shards/],
    ] as const) {
      const r = await run('train', ...TINY, '--shards', v, '--out', join(tmpdir(), 'never'));
      expect(r.code).not.toBe(0);
      expect(r.err).toMatch(re);
      expect(r.err).toMatch(/ARGUMENT_INVALID/);
    }
    const small = TINY.map((a, i) => (TINY[i - 1] === '--batch' ? '4' : a));
    const r = await run('train', ...small, '--shards', '8', '--out', join(tmpdir(), 'never'));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/8 shards of a batch of 4/);
  });
});
