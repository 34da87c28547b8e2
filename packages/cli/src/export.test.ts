import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWeights, maxRelativeError, runReference } from '@kernelwarehouse/core';
import { Rng, randomInput } from '@kernelwarehouse/core/testing';
import { createSession, onnxInfo, runSession } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';

describe('kw export and kw onnx-info', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kw-export-'));

  it('exports a zoo model with seeded weights, writes them, and re-exports identically from them', async () => {
    const onnx = join(dir, 'r8.onnx');
    const st = join(dir, 'r8.safetensors');
    const r = await run(
      'export',
      'resnet8_cifar',
      '--budget',
      '1/2x',
      '--seed',
      '3',
      '--out',
      onnx,
      '--weights-out',
      st,
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/opset 17, IR 8, input input \[N, 3, 32, 32\]/);
    const again = join(dir, 'r8b.onnx');
    expect(
      (await run('export', 'resnet8_cifar', '--budget', '1/2x', '--weights', st, '--out', again))
        .code,
    ).toBe(0);
    expect(readFileSync(again)).toEqual(readFileSync(onnx));
    // the exported model computes what the reference computes with the written weights
    const spec = createModel('resnet8_cifar', { budget: '1/2x' });
    const w = loadWeights(spec, new Uint8Array(readFileSync(st)));
    const session = await createSession(new Uint8Array(readFileSync(onnx)));
    const x = randomInput(new Rng(1), [2, 3, 32, 32]);
    const [y] = await runSession(session, x);
    expect(maxRelativeError(y!.data, runReference(spec, w, x).get('fc')!.data)).toBeLessThan(1e-4);
    // no temporary files left behind
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('--method exports a peer-method model (ODConv 4x) that computes what the reference computes', async () => {
    const onnx = join(dir, 'od.onnx');
    const st = join(dir, 'od.safetensors');
    const r = await run(
      'export',
      'resnet8_cifar',
      '--method',
      'odconv:4',
      '--input',
      '16x16x3',
      '--out',
      onnx,
      '--weights-out',
      st,
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/input input \[N, 3, 16, 16\]/);
    const spec = createModel('resnet8_cifar', {
      method: { kind: 'odconv', kernels: 4 },
      inputShape: [3, 16, 16],
    });
    const w = loadWeights(spec, new Uint8Array(readFileSync(st)));
    const session = await createSession(new Uint8Array(readFileSync(onnx)));
    const x = randomInput(new Rng(4), [3, 3, 16, 16]);
    const [y] = await runSession(session, x);
    expect(maxRelativeError(y!.data, runReference(spec, w, x).get('fc')!.data)).toBeLessThan(1e-4);
  });

  it('--triton-repo writes a Triton model repository entry: NAME/1/model.onnx and NAME/config.pbtxt', async () => {
    const repo = join(dir, 'models');
    const r = await run(
      'export',
      'resnet8_cifar',
      '--budget',
      '1x',
      '--triton-repo',
      repo,
      '--triton-name',
      'r8_kw1x',
      '--max-batch',
      '32',
      '--instances',
      '2',
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /config\.pbtxt: Triton onnxruntime backend, max_batch_size 32, 2 instance/,
    );
    const onnx = new Uint8Array(readFileSync(join(repo, 'r8_kw1x', '1', 'model.onnx')));
    const config = readFileSync(join(repo, 'r8_kw1x', 'config.pbtxt'), 'utf8');
    expect(config).toMatch(/^name: "r8_kw1x"$/m);
    expect(config).toMatch(/^max_batch_size: 32$/m);
    expect(config).toMatch(/name: "input"\s+data_type: TYPE_FP32\s+dims: \[ 3, 32, 32 \]/);
    expect(config).toMatch(/name: "fc"\s+data_type: TYPE_FP32\s+dims: \[ 10 \]/);
    // the model file is the plain export of the same spec and weights
    const plainOut = join(dir, 'r8kw.onnx');
    expect((await run('export', 'resnet8_cifar', '--budget', '1x', '--out', plainOut)).code).toBe(
      0,
    );
    expect(onnx).toEqual(new Uint8Array(readFileSync(plainOut)));
    // flags that only make sense with a repository, and both destinations at once, are usage errors
    expect((await run('export', 'resnet8_cifar', '--out', plainOut, '--max-batch', '4')).code).toBe(
      2,
    );
    expect(
      (await run('export', 'resnet8_cifar', '--out', plainOut, '--triton-repo', repo)).code,
    ).toBe(2);
    const bad = await run('export', 'resnet8_cifar', '--triton-repo', repo, '--triton-name', 'a b');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--triton-name must be letters/);
  });

  it('--batch fixes the batch (--threads 1: the one-thread assembly form) and computes what the reference computes', async () => {
    const onnx = join(dir, 'b1.onnx');
    const st = join(dir, 'b1.safetensors');
    const args = ['resnet18', '--budget', '1/4x', '--classes', '10', '--input', '32x32x3'];
    const r = await run(
      'export',
      ...args,
      '--batch',
      '1',
      '--threads',
      '1',
      '--out',
      onnx,
      '--weights-out',
      st,
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/input input \[1, 3, 32, 32\]/);
    const info = await run('onnx-info', onnx);
    expect(info.out).toMatch(/inputs: {2}input \[1, 3, 32, 32\]/);
    const spec = createModel('resnet18', { budget: '1/4x', classes: 10, inputShape: [3, 32, 32] });
    const w = loadWeights(spec, new Uint8Array(readFileSync(st)));
    const session = await createSession(new Uint8Array(readFileSync(onnx)));
    const x = randomInput(new Rng(5), [1, 3, 32, 32]);
    const [y] = await runSession(session, x);
    const want = runReference(spec, w, x).get(spec.outputs[0]!)!;
    expect(maxRelativeError(y!.data, want.data)).toBeLessThan(1e-4);
    // the one-thread form is another graph than the default fixed-batch one
    const other = join(dir, 'b1-default.onnx');
    expect((await run('export', ...args, '--batch', '1', '--out', other)).code).toBe(0);
    expect(new Uint8Array(readFileSync(other))).not.toEqual(new Uint8Array(readFileSync(onnx)));
    // --tap-major on: every KW 3x3 conv tap by tap, at a dynamic batch too; same values
    const tapOut = join(dir, 'tap.onnx');
    // (--tap-mixing off: by default the small-pixel layers of this 32x32 model mix their taps)
    const assembled = ['--tap-mixing', 'off', '--seed', '3'];
    const tr = await run('export', ...args, '--tap-major', 'on', ...assembled, '--out', tapOut);
    expect(tr.code, tr.err).toBe(0);
    const offOut = join(dir, 'tap-off.onnx');
    expect(
      (await run('export', ...args, '--tap-major', 'off', ...assembled, '--out', offOut)).code,
    ).toBe(0);
    const reduceSums = (f: string) => {
      // at a dynamic batch, in the per-sample Scan bodies
      const info = onnxInfo(new Uint8Array(readFileSync(f)));
      return (info.ops.ReduceSum ?? 0) + (info.subgraphOps.ReduceSum ?? 0);
    };
    expect(reduceSums(tapOut) - reduceSums(offOut)).toBe(16); // the 16 3x3 KW convs
    const x3 = randomInput(new Rng(6), [3, 3, 32, 32]);
    const [a] = await runSession(await createSession(new Uint8Array(readFileSync(tapOut))), x3);
    const [b] = await runSession(await createSession(new Uint8Array(readFileSync(offOut))), x3);
    expect(maxRelativeError(a!.data, b!.data)).toBeLessThan(1e-4);
    const badTap = await run('export', ...args, '--tap-major', 'yes', '--out', tapOut);
    expect(badTap.code).toBe(2);
    expect(badTap.err).toMatch(/--tap-major must be auto, on or off; found "yes"/);
    // --tap-mixing on / auto: the same values as every KW conv assembled; a bad value is a usage error
    const mixOut = join(dir, 'mix.onnx');
    const mr = await run('export', ...args, '--tap-mixing', 'on', '--seed', '3', '--out', mixOut);
    expect(mr.code, mr.err).toBe(0);
    const mixBytes = new Uint8Array(readFileSync(mixOut));
    expect(mixBytes).not.toEqual(new Uint8Array(readFileSync(offOut)));
    const [c] = await runSession(await createSession(mixBytes), x3);
    expect(maxRelativeError(c!.data, b!.data)).toBeLessThan(1e-4);
    const badMix = await run('export', ...args, '--tap-mixing', '1', '--out', mixOut);
    expect(badMix.code).toBe(2);
    expect(badMix.err).toMatch(/--tap-mixing must be auto, on or off; found "1"/);
    // --scan-batch off: the per-sample convs as im2col + MatMul instead of a Scan over the
    // images (the default at a dynamic batch); the same values; on with --batch is refused
    const scanOut = join(dir, 'scan.onnx');
    const im2colOut = join(dir, 'im2col.onnx');
    expect((await run('export', ...args, ...assembled, '--out', scanOut)).code).toBe(0);
    const noScan = await run(
      'export',
      ...args,
      ...assembled,
      '--scan-batch',
      'off',
      '--out',
      im2colOut,
    );
    expect(noScan.code, noScan.err).toBe(0);
    const scans = (f: string) => onnxInfo(new Uint8Array(readFileSync(f))).ops.Scan ?? 0;
    expect(scans(scanOut)).toBeGreaterThan(0);
    expect(scans(im2colOut)).toBe(0);
    const [d] = await runSession(await createSession(new Uint8Array(readFileSync(im2colOut))), x3);
    const [e] = await runSession(await createSession(new Uint8Array(readFileSync(scanOut))), x3);
    expect(maxRelativeError(d!.data, b!.data)).toBeLessThan(1e-4);
    expect(maxRelativeError(e!.data, b!.data)).toBeLessThan(1e-4);
    const badScan = await run(
      'export',
      ...args,
      '--scan-batch',
      'on',
      '--batch',
      '2',
      '--out',
      scanOut,
    );
    expect(badScan.code).toBe(2);
    expect(badScan.err).toMatch(/--scan-batch on needs a dynamic batch/);
    const badScan2 = await run('export', ...args, '--scan-batch', 'auto', '--out', scanOut);
    expect(badScan2.code).toBe(2);
    expect(badScan2.err).toMatch(/--scan-batch must be on or off; found "auto"/);
    // --scan-assembly off: every image's KW kernels assembled before the Scan (the default
    // assembles them in its body); the same values; on without the Scan form is refused
    const beforeOut = join(dir, 'scan-before.onnx');
    const before = await run(
      'export',
      ...args,
      ...assembled,
      '--scan-assembly',
      'off',
      '--out',
      beforeOut,
    );
    expect(before.code, before.err).toBe(0);
    const bodyMatMuls = (f: string) =>
      onnxInfo(new Uint8Array(readFileSync(f))).subgraphOps.MatMul ?? 0;
    expect(bodyMatMuls(scanOut)).toBeGreaterThan(0);
    // (the 4 layers that run tap by tap take no Scan at all when assembled before it)
    expect([scans(beforeOut), bodyMatMuls(beforeOut)]).toEqual([scans(scanOut) - 4, 0]);
    const [f] = await runSession(await createSession(new Uint8Array(readFileSync(beforeOut))), x3);
    expect(maxRelativeError(f!.data, b!.data)).toBeLessThan(1e-4);
    for (const [extra, why] of [
      [['--batch', '2'], '--batch fixes the batch'],
      [['--scan-batch', 'off'], '--scan-batch is off'],
    ] as const) {
      const bad = await run(
        'export',
        ...args,
        '--scan-assembly',
        'on',
        ...extra,
        '--out',
        beforeOut,
      );
      expect(bad.code).toBe(2);
      expect(bad.err).toContain(
        `--scan-assembly on needs the Scan form of a dynamic batch, but ${why}`,
      );
    }
    // a fixed-batch Triton entry: Triton cannot batch it, so max_batch_size 0 and the full dims
    const repo = join(dir, 'fixed-repo');
    const t = await run('export', 'resnet8_cifar', '--batch', '2', '--triton-repo', repo);
    expect(t.code, t.err).toBe(0);
    const config = readFileSync(join(repo, 'resnet8_cifar', 'config.pbtxt'), 'utf8');
    expect(config).toMatch(/^max_batch_size: 0$/m);
    expect(config).toMatch(/name: "input"\s+data_type: TYPE_FP32\s+dims: \[ 2, 3, 32, 32 \]/);
    // bad values are usage errors naming the flag
    for (const [flag, v] of [
      ['--batch', '0'],
      ['--batch', '1.5'],
      ['--threads', '0'],
    ] as const) {
      const bad = await run('export', 'resnet8_cifar', flag, v, '--out', join(dir, 'x.onnx'));
      expect(bad.code).toBe(2);
      expect(bad.err).toContain(flag);
    }
  });

  it('onnx-info prints inputs, outputs, opset and the op histogram', async () => {
    const onnx = join(dir, 'r8.onnx');
    const r = await run('onnx-info', onnx);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/IR 8, opsets ai\.onnx 17/);
    expect(r.out).toMatch(/inputs: {2}input \[N, 3, 32, 32\]/);
    expect(r.out).toMatch(/outputs: fc \[N, 10\]/);
    // the KW convs' Scans, whose bodies assemble each sample's kernel (MatMul) for its Conv
    expect(r.out).toMatch(/op\s+count\s+in control-flow bodies \(Scan, Loop, If\)/);
    expect(r.out).toMatch(/\nScan\s+[1-9]\d*\s+0\n/);
    expect(r.out).toMatch(/\nMatMul\s+\d+\s+[1-9]\d*\n/);
    const json = JSON.parse((await run('onnx-info', onnx, '--json')).out);
    expect(json.opsets['']).toBe(17);
    expect(json.subgraphOps.MatMul).toBe(json.ops.Scan);
  });

  it('bad files and paths fail clearly and write nothing', async () => {
    const junk = join(dir, 'junk.onnx');
    writeFileSync(junk, 'this is not onnx at all');
    const r1 = await run('onnx-info', junk);
    expect(r1.code).toBe(1);
    expect(r1.err).toMatch(/ONNX_INVALID/);
    expect((await run('onnx-info', join(dir, 'missing.onnx'))).err).toMatch(
      /cannot read .*missing\.onnx: no such file/,
    );
    const blocked = join(junk, 'x.onnx'); // a path under a file
    const r2 = await run('export', 'resnet8_cifar', '--out', blocked);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/IO_ERROR.*cannot write .*nothing was written/);
    const r3 = await run(
      'export',
      'resnet8_cifar',
      '--weights',
      junk,
      '--out',
      join(dir, 'y.onnx'),
    );
    expect(r3.err).toMatch(/SAFETENSORS_/);
    expect(existsSync(join(dir, 'y.onnx'))).toBe(false);
    const r4 = await run('export', 'resnet8_cifar');
    expect([r4.code, r4.err]).toEqual([
      2,
      'kw export: --out model.onnx (or --triton-repo DIR) is required\n',
    ]);
    const r5 = await run(
      'export',
      'resnet8_cifar',
      '--out',
      join(dir, 'z.onnx'),
      '--weights',
      junk,
      '--seed',
      '1',
    );
    expect(r5.err).toMatch(/not both/);
  });
});
