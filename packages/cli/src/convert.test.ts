// kw convert and kw export --weights on official PyTorch checkpoints (fixtures written by the
// official code, see scripts/torch-fixtures/make_fixtures.py): detection of the container and
// the naming, what is printed, the small-input stem guard, and the ONNX output against PyTorch's
// own output on the same input (max |err| / max |out| < 1e-4).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, type Tensor } from '@kernelwarehouse/core';
import { createSession, runSession } from '@kernelwarehouse/ort-web';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';

const fixtures = new URL('../../torch/test/fixtures/', import.meta.url).pathname;
const pth = join(fixtures, 'kw1d2x_mobilenetv2_w01_half_f16.pth');
const model = ['mobilenetv2_050', '--budget', '1/2x', '--width', '0.2', '--classes', '10'];

async function onnxError(onnx: string): Promise<number> {
  const io = readSafetensors(
    new Uint8Array(readFileSync(join(fixtures, 'kw1d2x_mobilenetv2_w01_half_f16.io.safetensors'))),
  );
  const input = io.tensors.get('input')! as Tensor;
  const want = io.tensors.get('output')!.data as Float32Array;
  const session = await createSession(new Uint8Array(readFileSync(onnx)));
  const [got] = await runSession(session, { shape: input.shape, data: input.data as Float32Array });
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got!.data[i]! - want[i]!));
    den = Math.max(den, Math.abs(want[i]!));
  }
  return num / den;
}

describe('kw convert / kw export --weights with official checkpoints', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kw-convert-'));

  it('exports from a .pth, says what it loaded, and matches PyTorch', async () => {
    const onnx = join(dir, 'a.onnx');
    const r = await run('export', ...model, '--input', '72x72x3', '--weights', pth, '--out', onnx);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /weights from .*\.pth: torch\.save checkpoint, official names, bare state_dict, 428 tensors loaded, 78 dropped \(78 num_batches_tracked\)/,
    );
    expect(await onnxError(onnx)).toBeLessThan(1e-4);
  });

  it('convert to project names and back to official names; both load and export the same model', async () => {
    const ours = join(dir, 'ours.safetensors');
    const official = join(dir, 'official.safetensors');
    const r1 = await run('convert', pth, '--model', ...model, '--out', ours);
    expect([r1.code, r1.err]).toEqual([0, '']);
    expect(r1.out).toMatch(
      /ours\.safetensors: mobilenetv2_050-kw0\.5, 428 tensors in project names/,
    );
    const names = [...readSafetensors(new Uint8Array(readFileSync(ours))).tensors.keys()];
    expect(names.some((n) => n.startsWith('warehouses.'))).toBe(true);
    expect(names.some((n) => n.startsWith('warehouse_manager.'))).toBe(false);
    const r2 = await run(
      'convert',
      ours,
      '--model',
      ...model,
      '--to',
      'official',
      '--out',
      official,
    );
    expect([r2.code, r2.err]).toEqual([0, '']);
    expect(r2.out).toMatch(/safetensors, project names/);
    const off = readSafetensors(new Uint8Array(readFileSync(official))).tensors;
    expect(off.has('warehouse_manager.weights.9')).toBe(true);
    expect(off.has('classifier.1.conv.attention.fc1.weight')).toBe(true);
    for (const [f, naming] of [
      [ours, 'project'],
      [official, 'official'],
    ] as const) {
      const onnx = join(dir, `${naming}.onnx`);
      const r = await run('export', ...model, '--input', '72x72x3', '--weights', f, '--out', onnx);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`safetensors, ${naming} names`));
      expect(await onnxError(onnx)).toBeLessThan(1e-4);
    }
  });

  it('refuses official weights for a small-input stem, naming the size, 65 px and --stem imagenet', async () => {
    const r = await run(
      'export',
      ...model,
      '--input',
      '32x32x3',
      '--weights',
      pth,
      '--out',
      join(dir, 's.onnx'),
    );
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/WEIGHTS_STEM.*32x32.*65 px.*--stem imagenet/);
    const ok = await run(
      'export',
      ...model,
      '--input',
      '32x32x3',
      '--stem',
      'imagenet',
      '--weights',
      pth,
      '--out',
      join(dir, 's.onnx'),
    );
    expect([ok.code, ok.err]).toEqual([0, '']);
    // a converted file carries the stem, so the guard holds for project names too
    const ours = join(dir, 'ours.safetensors');
    const r2 = await run(
      'export',
      ...model,
      '--input',
      '32x32x3',
      '--weights',
      ours,
      '--out',
      join(dir, 't.onnx'),
    );
    expect(r2.err).toMatch(/WEIGHTS_STEM/);
  });

  it('usage errors: --ema without a checkpoint dict or without --weights, bad --stem, --to', async () => {
    const r1 = await run(
      'export',
      ...model,
      '--weights',
      pth,
      '--ema',
      '--out',
      join(dir, 'e.onnx'),
    );
    expect(r1.code).toBe(1);
    expect(r1.err).toMatch(/PTH_NO_STATE_DICT.*bare state_dict .*no entry "model_ema" to pick/);
    expect((await run('export', ...model, '--ema', '--out', join(dir, 'e.onnx'))).code).toBe(2);
    expect(
      (await run('export', ...model, '--stem', 'big', '--out', join(dir, 'e.onnx'))).err,
    ).toMatch(/--stem must be auto, imagenet or small/);
    expect((await run('convert', pth, '--model', ...model, '--to', 'x', '--out', 'x')).code).toBe(
      2,
    );
    expect((await run('convert', '--model', ...model, '--out', 'x')).err).toMatch(/input file/);
  });

  it('--key picks a checkpoint entry by name (export and convert), not with --ema, only with weights', async () => {
    // the fixture is a bare state_dict: the key reaches the loader, which names it
    const out = join(dir, 'k.onnx');
    const r1 = await run('export', ...model, '--weights', pth, '--key', 'teacher', '--out', out);
    expect(r1.code).toBe(1);
    expect(r1.err).toMatch(
      /^kw export: \[PTH_NO_STATE_DICT\] the checkpoint is a bare state_dict \(506 tensors at its top level, e\.g\. warehouse_manager\.weights\.0, .*\), with no entry "teacher" to pick: leave the key out \(kw: no --key \/ --ema\)\n$/,
    );
    const r2 = await run('convert', pth, '--model', ...model, '--key', 'teacher', '--out', out);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/^kw convert: \[PTH_NO_STATE_DICT\].*"teacher"/);
    const both = await run(
      'export',
      ...model,
      '--weights',
      pth,
      '--key',
      'model',
      '--ema',
      '--out',
      out,
    );
    expect([both.code, both.err]).toEqual([
      2,
      'kw export: give --ema or --key, not both (--ema is --key model_ema)\n',
    ]);
    const noWeights = await run('export', ...model, '--key', 'model', '--out', out);
    expect([noWeights.code, noWeights.err]).toEqual([
      2,
      'kw export: --key picks a state_dict from --weights\n',
    ]);
    expect((await run('convert', pth, '--model', ...model, '--key', '', '--out', out)).code).toBe(
      2,
    );
    // a safetensors file has no entries: the message names --key, the option given
    const st = join(dir, 'key.safetensors');
    expect((await run('convert', pth, '--model', ...model, '--out', st)).code).toBe(0);
    const r3 = await run('export', ...model, '--weights', st, '--key', 'model', '--out', out);
    expect(r3.code).toBe(2);
    expect(r3.err).toMatch(/one state_dict; the key "model" \(options\.key; kw's --key\) picks/);
  });
});

describe('kw export --weights with files that are not what their name says', () => {
  it('a .pth that is not a torch.save zip, and the legacy format, are refused as such', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kw-convert-bad-'));
    const bad = join(dir, 'model.pth');
    writeFileSync(bad, 'not a checkpoint');
    const r = await run('export', ...model, '--weights', bad, '--out', join(dir, 'x.onnx'));
    expect([r.code, r.err]).toEqual([
      1,
      'kw export: [PTH_FORMAT] not a torch.save zip file (starts with 6e 6f 74 20)\n',
    ]);
    const legacy = await run(
      'export',
      ...model,
      '--weights',
      join(fixtures, 'legacy.pth'),
      '--out',
      join(dir, 'x.onnx'),
    );
    expect(legacy.err).toMatch(/PTH_FORMAT.*legacy torch\.save format/);
  });
});
