// Checkpoints written by the official PyTorch code (scripts/torch-fixtures/make_fixtures.py):
// each is read here, mapped to our names, and run on the core reference executor and as ONNX on
// onnxruntime-web (wasm, in Node); both must reproduce PyTorch's own outputs on the same input.
// Tolerance: relative max error < 1e-4 of the output's largest magnitude (float32 arithmetic in
// a different order than PyTorch's).
import { readFileSync } from 'node:fs';
import { readSafetensors, runReference, type Tensor, type WeightMap } from '@kernelwarehouse/core';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import { createModel, resnet } from '@kernelwarehouse/zoo';
import { describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../src/index.js';

const dir = new URL('./fixtures/', import.meta.url);
const bytes = (name: string) => new Uint8Array(readFileSync(new URL(name, dir)));
const io = (name: string) => {
  const f = readSafetensors(bytes(`${name}.io.safetensors`));
  const t = (k: string): Tensor => {
    const s = f.tensors.get(k)!;
    return { shape: s.shape, data: s.data as Float32Array };
  };
  return {
    input: t('input'),
    output: t('output'),
    ema: f.tensors.has('output_ema') ? t('output_ema') : null,
  };
};

/** max |a - b| / max |b|. */
export function relErr(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

// the official KW_ResNet with BasicBlocks [1, 1, 1, 1] and widths x 1/16 (see the generator)
const resnet10 = () =>
  resnet(
    'kw_resnet10',
    {
      block: 'basic',
      layers: [1, 1, 1, 1],
      planes: [64, 128, 256, 512],
      stem: 'imagenet',
      basisBelowOne: 1,
    },
    { budget: 1, width: 0.0625, classes: 10, inputShape: [3, 72, 72] },
  );
const mobilenet = () =>
  createModel('mobilenetv2_050', {
    budget: '1/2x',
    width: 0.2,
    classes: 10,
    inputShape: [3, 72, 72],
  });

async function check(spec: unknown, weights: WeightMap, input: Tensor, expected: Tensor) {
  const ref = [...runReference(spec, weights, input).values()][0]!;
  expect(ref.shape).toEqual(expected.shape);
  const eRef = relErr(ref.data, expected.data);
  const session = await createSession(toOnnx(spec, weights), { executionProvider: 'wasm' });
  const [onnx] = await runSession(session, input);
  const eOnnx = relErr(onnx!.data, expected.data);
  process.stderr.write(`ERRS reference ${eRef.toExponential(2)}, onnx ${eOnnx.toExponential(2)}\n`);
  expect(eRef).toBeLessThan(1e-4);
  expect(eOnnx).toBeLessThan(1e-4);
  // the outputs are not trivial: the two samples and the classes differ
  expect(relErr(expected.data.slice(0, 10), expected.data.slice(10, 20))).toBeGreaterThan(1e-2);
  return { eRef, eOnnx };
}

describe('official checkpoints against PyTorch outputs', () => {
  it('save_model checkpoint dict: model and model_ema, argparse.Namespace left inert', async () => {
    const spec = resnet10();
    const { input, output, ema } = io('kw_resnet10_w00625_1x_ckpt');
    const ckpt = bytes('kw_resnet10_w00625_1x_ckpt.pth');
    const m = loadCheckpoint(spec, ckpt);
    expect(m.report).toMatchObject({
      format: 'pth',
      naming: 'official',
      key: 'model',
      strippedPrefix: null,
    });
    expect(m.report.skipped.map((s) => s.split(' ')[0])).toEqual([
      'optimizer',
      'epoch',
      'scaler',
      'args',
      'model_ema',
    ]);
    expect(m.report.skipped[3]).toMatch(/argparse\.Namespace object, not constructed/);
    expect([...m.report.placeholders]).toEqual([['argparse.Namespace', 1]]);
    expect(m.report.dropped.every((n) => n.endsWith('.num_batches_tracked'))).toBe(true);
    expect(m.report.loaded + m.report.dropped.length).toBe(155);
    await check(spec, m.weights, input, output);
    const e = loadCheckpoint(spec, ckpt, { ema: true });
    expect(e.report.key).toBe('model_ema');
    expect(e.report.skipped.map((s) => s.split(' ')[0])).toContain('model');
    await check(spec, e.weights, input, ema!);
    // model and model_ema are different weights, and each matches only its own outputs
    expect(relErr(output.data, ema!.data)).toBeGreaterThan(1e-3);
  });

  it('DDP state_dict: module. stripped, tensors sharing one storage at offsets, transposed views', async () => {
    const spec = resnet10();
    const { input, output } = io('kw_resnet10_w00625_1x_ddp');
    const m = loadCheckpoint(spec, bytes('kw_resnet10_w00625_1x_ddp.pth'));
    expect(m.report).toMatchObject({ key: null, strippedPrefix: 'module.', naming: 'official' });
    await check(spec, m.weights, input, output);
  });

  it('float16, channels_last (non-contiguous) kw1d2x MobileNetV2: KW linear .conv. names mapped', async () => {
    const spec = mobilenet();
    const { input, output } = io('kw1d2x_mobilenetv2_w01_half_f16');
    const m = loadCheckpoint(spec, bytes('kw1d2x_mobilenetv2_w01_half_f16.pth'));
    expect(m.report.key).toBeNull();
    expect(m.weights.has('classifier.1.attention.fc1.weight')).toBe(true);
    await check(spec, m.weights, input, output);
  });
});
