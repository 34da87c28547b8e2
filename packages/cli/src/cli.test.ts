import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CONDCONV_DEFAULT_EXPERTS, parseMethodText, planModel } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';

describe('kw plan', () => {
  it('prints warehouses, KW layers and totals for ResNet18 1x', async () => {
    const r = await run('plan', 'resnet18', '--budget', '1x');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/stage0\s+1x\s+64x64x1x1\s+6\s+56\s+56\s+229,376/);
    expect(r.out).toMatch(
      /layer2\.0\.downsample\.0\s+128x64x1x1\s+stage0\s+2\s+\[54, 56\)\s+2,994/,
    );
    expect(r.out).toMatch(/params: total\s+11,932,148 \(11\.93M\)/);
    expect(r.out).toMatch(/params: plain baseline\s+11,689,512/);
    expect(r.out).toMatch(/MACs\/image: assembly\s+384\.91 MMAC/);
  });

  it('--json has the documented fields', async () => {
    const r = await run('plan', 'resnet18', '--budget', '1/2x', '--json');
    const j = JSON.parse(r.out);
    expect(j.model).toBe('resnet18');
    expect(j.budget).toBe('1/2x');
    expect(j.params.total).toBe(7_431_044);
    expect(j.params.baseline).toBe(11_689_512);
    expect(
      j.warehouses.map((w: { id: string; cell: number[]; mt: number; n: number }) => [
        w.id,
        w.cell,
        w.mt,
        w.n,
      ]),
    ).toEqual([
      ['stage0', [32, 32], 224, 112],
      ['stage1', [64, 64], 188, 94],
      ['stage2', [128, 128], 188, 94],
      ['stage3', [256, 256], 108, 54],
    ]);
    expect(j.warehouses[0].layers[0]).toEqual({
      id: 'layer1.0.conv1',
      shape: [64, 64, 3, 3],
      m: 36,
      ownedCells: [0, 18],
      attentionParams: 70_212,
    });
    expect(j.macs.total).toBe(j.macs.conv + j.macs.attention + j.macs.assembly);
  });

  it('classes, input and numeric budgets', async () => {
    const j = JSON.parse(
      (
        await run(
          'plan',
          'resnet8_cifar',
          '--budget',
          '0.5',
          '--classes',
          '10',
          '--input',
          '28x28x1',
          '--json',
        )
      ).out,
    );
    expect(j.input).toEqual([1, 28, 28]);
    expect(j.classes).toBe(10);
    expect(j.budgetValue).toBe(0.5);
    const plain = await run('plan', 'mobilenetv2_050');
    expect(plain.out).toMatch(/No KernelWarehouse layers/);
    expect(plain.out).toMatch(/1,968,680/);
  });

  it('bad input: exit code 2 and one line saying what is accepted', async () => {
    for (const [argv, pattern] of [
      [['plan', 'resnet19'], /unknown model "resnet19"; accepted: resnet18, resnet50/],
      [
        ['plan', 'resnet18', '--budget', 'abc'],
        /bad budget "abc"; accepted: 1\/4x, 1\/2x, 1x, 2x, 4x/,
      ],
      [['plan', 'resnet18', '--budget=-1'], /bad budget "-1"/],
      [['plan', 'resnet18', '--budget', '1/8x'], /cannot tile.*evenly: 1\/2x, 1x/],
      [['plan', 'resnet18', '--input', '224x224'], /--input must be HxWxC/],
      [['plan', 'resnet18', '--classes', '0'], /--classes must be an integer in \[1, 1000000\]/],
      [['plan'], /a model is required/],
      [['plan', 'resnet18', '--frobnicate'], /Unknown option '--frobnicate'/],
      [['teleport'], /unknown command "teleport"; accepted: plan, models/],
    ] as [string[], RegExp][]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(pattern);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.out).toBe('');
    }
  });
});

describe('kw plan --method', () => {
  it('plans the other methods at their official placement', async () => {
    const od = JSON.parse((await run('plan', 'resnet18', '--method', 'odconv:4', '--json')).out);
    expect(od.params.total).toBe(44_901_640);
    expect(od.warehouses).toEqual([]);
    const se = await run('plan', 'resnet50', '--method', 'se');
    expect(se.out).toMatch(/params: total\s+28,088,024/);
    const bad = await run('plan', 'resnet18', '--method', 'magic');
    expect([bad.code, bad.err]).toEqual([
      2,
      'kw plan: unknown --method "magic"; accepted: condconv[:experts], dyconv[:kernels], odconv[:kernels], weightnet[:M][:G], doconv[:dMul], se\n',
    ]);
    expect((await run('plan', 'resnet18', '--method', 'se', '--budget', '1x')).err).toMatch(
      /not both/,
    );
    expect((await run('plan', 'resnet18', '--method', 'odconv:0')).code).toBe(2);
    expect((await run('plan', 'resnet18', '--method', 'odconv:4x')).code).toBe(2);
  });

  it('kw plan, the zoo and core share one set of method defaults (CondConv: 8 experts)', async () => {
    const cli = JSON.parse((await run('plan', 'resnet18', '--method', 'condconv', '--json')).out);
    const eight = JSON.parse(
      (await run('plan', 'resnet18', '--method', 'condconv:8', '--json')).out,
    );
    const zoo = planModel(createModel('resnet18', { method: { kind: 'condconv' } }));
    expect(cli.params.total).toBe(eight.params.total);
    expect(cli.params.total).toBe(zoo.params.total);
    expect(parseMethodText('condconv').settings.experts).toBe(CONDCONV_DEFAULT_EXPERTS);
    expect(CONDCONV_DEFAULT_EXPERTS).toBe(8);
  });
});

describe('kw models and the binary', () => {
  it('lists the zoo with published budgets', async () => {
    const r = await run('models');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/resnet18\s+3x224x224\s+1\/4x, 1\/2x, 1x, 2x, 4x/);
    expect(
      JSON.parse((await run('models', '--json')).out).map((m: { id: string }) => m.id),
    ).toContain('convnext_tiny');
  });

  it('kw <command> --help prints the usage of that command (exit 0); kw alone prints all (exit 2)', async () => {
    for (const c of ['train', 'plan', 'export', 'onnx-info', 'models', 'convert']) {
      const r = await run(c, '--help');
      expect(r.code, c).toBe(0);
      expect(r.out, c).toMatch(new RegExp(`^usage: kw ${c}`));
    }
    expect((await run('train', '-h')).out).toMatch(/--preset NAME .*paper-direction/);
    const all = await run();
    expect(all.code).toBe(2);
    expect(all.out.split('\n').filter((l) => l.startsWith('usage: kw '))).toHaveLength(7);
  });

  it('bin/kw.js runs as a process with the same exit codes', () => {
    const bin = fileURLToPath(new URL('../bin/kw.js', import.meta.url));
    const ok = execFileSync(process.execPath, [bin, 'plan', 'resnet18', '--budget', '4x'], {
      encoding: 'utf8',
    });
    expect(ok).toMatch(/params: total\s+45,862,085/);
    const bad = spawnSync(process.execPath, [bin, 'plan', 'nope'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown model "nope"/);
  });
});
