import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';

describe('kw train (the main job, tiny configuration)', () => {
  it('trains plain and KW on real MNIST (wasm), exports, and ONNX agrees with tfjs', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kw-train-')), 'run');
    const r = await run(
      'train',
      '--seeds',
      '1',
      '--budgets',
      'plain,1x',
      '--tau-fraction',
      '0.5',
      '--train-size',
      '256',
      '--test-size',
      '200',
      '--epochs',
      '1',
      '--batch',
      '32',
      '--out',
      out,
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/method\s+params\s+vs plain\s+test acc/);
    expect(r.out).toMatch(/plain\s+77,754\s+\+0\.0%/);
    expect(r.out).toMatch(/KW 1x\s+123,108\s+\+58\.3%/);
    for (const f of [
      'plain.safetensors',
      'plain.onnx',
      'KW-1x.safetensors',
      'KW-1x.onnx',
      'report.md',
      'results.json',
      'loss.svg',
      'tau.svg',
    ]) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    expect(res.results).toHaveLength(2);
    for (const x of res.results) {
      expect(x.onnxAgreement).toBeGreaterThanOrEqual(0.999);
      expect(x.onnxMaxRelError).toBeLessThan(1e-4);
      expect(x.testAccuracy).toBeGreaterThan(0);
    }
    expect(r.err).toMatch(/epoch 1\/1 \[#+\] 8\/8 loss \d/);
    expect(r.err).toMatch(
      /BatchNorm statistics re-estimated over 32 training batches before testing/,
    );
    // tau falls from ~1 to 0 over the first half epoch (default --temp-epochs = epochs / 2), per step
    const taus = res.results[1].curve.map((c: { tau: number }) => c.tau);
    expect(taus).toHaveLength(8);
    expect(taus[0]).toBeGreaterThan(0.7);
    expect(taus.at(-1)).toBe(0);
    expect(readFileSync(join(out, 'loss.svg'), 'utf8')).toMatch(/<polyline[^>]+points="[\d., ]+"/);
  });

  it('kw train --winograd off runs the direct conv kernels: recorded, and another rounding', async () => {
    const curve = async (flags: string[]) => {
      const out = join(mkdtempSync(join(tmpdir(), 'kw-train-')), 'run');
      const r = await run(
        'train',
        ...['--seeds', '1', '--methods', 'plain', '--width', '0.5', '--train-size', '64'],
        ...['--test-size', '32', '--batch', '16', '--bn-passes', '0', '--out', out, ...flags],
      );
      expect(r.code, r.err).toBe(0);
      const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
      return {
        config: res.config,
        losses: res.results[0].curve.map((c: { loss: number }) => c.loss),
      };
    };
    const on = await curve([]);
    const off = await curve(['--winograd', 'off']);
    expect(on.config.winograd).toBe('on');
    expect(off.config.winograd).toBe('off');
    // the same seed and images: the first step's loss is the same forward up to rounding, and the
    // runs part by float rounding only (the plain ResNet-8's 3x3 stride-1 convs take Winograd)
    expect(off.losses).toHaveLength(4);
    expect(off.losses).not.toEqual(on.losses);
    for (const [i, l] of (off.losses as number[]).entries())
      expect(Math.abs(l - on.losses[i]) / Math.abs(on.losses[i]), `step ${i}`).toBeLessThan(1e-3);
  });

  it('trains every peer method (tfjs layers), exports each to ONNX, and ONNX agrees with tfjs', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kw-train-')), 'run');
    const methods = ['odconv:4', 'dyconv:4', 'condconv:4', 'weightnet', 'se', 'doconv'];
    const r = await run(
      'train',
      '--seeds',
      '1',
      '--methods',
      methods.join(','),
      '--width',
      '0.5',
      '--train-size',
      '64',
      '--test-size',
      '64',
      '--epochs',
      '1',
      '--out',
      out,
    );
    expect(r.code, r.err).toBe(0);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    expect(res.results.map((x: { method: string }) => x.method)).toEqual(methods);
    for (const x of res.results) {
      expect(x.onnxAgreement, x.method).toBe(1);
      expect(x.onnxMaxRelError, x.method).toBeLessThan(1e-4);
      expect(Number.isFinite(x.finalLoss), x.method).toBe(true);
    }
    for (const m of methods)
      expect(existsSync(join(out, `${m.replace(':', '-')}.onnx`)), m).toBe(true);
  });

  it('kw train --methods dyconv:4,odconv:4 anneals the temperature 30 -> 1 per iteration (official schedule)', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kw-train-')), 'run');
    const r = await run(
      'train',
      '--seeds',
      '1',
      '--methods',
      'plain,dyconv:4,odconv:4',
      '--width',
      '0.5',
      '--train-size',
      '64',
      '--test-size',
      '32',
      '--batch',
      '16',
      '--epochs',
      '2',
      '--method-temp-epochs',
      '1',
      '--bn-passes',
      '2',
      '--out',
      out,
    );
    expect(r.code, r.err).toBe(0);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    // official ODConv / DY-Conv: T = 1 + max(0, 29 (N - t) / N), N = 4 steps x 1 epoch, t = step + 1
    const want = Array.from({ length: 8 }, (_, i) => 1 + Math.max(0, (29 * (4 - (i + 1))) / 4));
    for (const m of ['dyconv:4', 'odconv:4']) {
      const x = res.results.find((y: { method: string }) => y.method === m);
      const temps = x.curve.map((c: { temperature: number }) => c.temperature);
      expect(temps, m).toHaveLength(8);
      for (const [i, t] of (temps as number[]).entries())
        expect(t, `${m} step ${i}`).toBeCloseTo(want[i]!, 12);
      expect(x.curve.every((c: { tau?: number }) => c.tau === undefined)).toBe(true);
    }
    const plain = res.results.find((y: { method: string }) => y.method === 'plain');
    expect(plain.curve.every((c: object) => !('tau' in c) && !('temperature' in c))).toBe(true);
    expect(existsSync(join(out, 'temperature.svg'))).toBe(true);
    expect(existsSync(join(out, 'tau.svg'))).toBe(false);
    // the progress shows the temperature for these and no tau column for any (no KW here)
    expect(r.err).toMatch(/dyconv:4 epoch 1\/2 \[#+\] 4\/4 loss \d.* T 1\.00 /);
    expect(r.err).not.toMatch(/ tau /);
    expect(r.err).toMatch(/plain {4}epoch 2\/2 \[#+\] 4\/4 loss [\d.]+ acc [\d.]+ \d+ img\/s/);
    // a visible status during BatchNorm re-estimation, the test set and the ONNX export
    for (const s of ['BatchNorm statistics', 'test set', 'ONNX export and check against tfjs'])
      expect(r.err).toContain(`odconv:4 ${s}...`);
    expect(r.err).toContain('DY-Conv/ODConv temperature 30 -> 1 over 1 epochs');
  });

  it('refuses bad options with exit code 2', async () => {
    for (const [argv, pattern] of [
      [['train', '--budgets', 'plain,abc'], /bad budget "abc"/],
      [['train', '--epochs', '0'], /--epochs must be an integer in \[1, 100000\]; found "0"/],
      [['train', '--bn-passes=-1'], /--bn-passes must be an integer in \[0, 100000\]/],
      [
        ['train', '--bn-passes', '-1'],
        /--bn-passes must be an integer in \[0, 100000\]; found "-1"/,
      ],
      [['train', '--bn-passes', '1.5'], /--bn-passes must be an integer in \[0, 100000\]/],
      [['train', '--model', 'resnet19'], /unknown model "resnet19"/],
      [['train', '--backend', 'webgl'], /--backend must be wasm or cpu/],
      [['train', '--train-size', '99999999'], /exceed the data set \(60000 train, 10000 test/],
    ] as [string[], RegExp][]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(pattern);
    }
    const r = await run('train', '--dataset', 'cifar');
    expect(r.err).toMatch(/unknown dataset "cifar"; accepted: mnist, fashion-mnist/);
  });
});
