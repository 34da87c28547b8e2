// The stem choice and the guard against loading official (ImageNet-stem) weights into a
// small-input variant: before it, ResNet failed with a bare shape message, ConvNeXt with a
// warehouse message, and MobileNetV2 loaded silently into a different network.
import {
  exportOfficialStateDict,
  importOfficialStateDict,
  initWeights,
  isKwError,
  loadWeights,
  planModel,
  saveWeights,
} from '@kernelwarehouse/core';
import { describe, expect, it } from 'vitest';
import { createModel } from './index.js';

const conv1 = (spec: ReturnType<typeof createModel>) =>
  spec.nodes.find((n) => n.id === 'conv1') as { kernelSize?: unknown };

describe('stem option', () => {
  it("auto picks the small stem up to 64 px and the ImageNet stem from 65 px; 'imagenet' / 'small' force it", () => {
    const at = (px: number, stem?: 'auto' | 'imagenet' | 'small') =>
      createModel('resnet18', { classes: 10, inputShape: [3, px, px], stem });
    expect(at(64).meta?.stem).toBe('small');
    expect(conv1(at(64)).kernelSize).toEqual([3, 3]);
    expect(at(65).meta?.stem).toBe('imagenet');
    expect(conv1(at(65)).kernelSize).toEqual([7, 7]);
    expect(at(32, 'imagenet').meta?.stem).toBe('imagenet');
    expect(conv1(at(32, 'imagenet')).kernelSize).toEqual([7, 7]);
    expect(at(224, 'small').meta?.stem).toBe('small');
    expect(createModel('resnet8_cifar').meta?.stem).toBe('cifar');
    // MobileNetV2 at 32 px: the ImageNet stem downsamples 32x, the small one 8x
    const mb = (stem: 'auto' | 'imagenet') =>
      planModel(
        createModel('mobilenetv2_050', { inputShape: [3, 32, 32], classes: 10, stem }),
      ).nodes.find((n) => n.id === 'features.18.2')!.outShape;
    expect(mb('auto')).toEqual([1280, 4, 4]);
    expect(mb('imagenet')).toEqual([1280, 1, 1]);
    expect(() => createModel('resnet18', { stem: 'big' as 'auto' })).toThrow(
      /stem must be 'auto', 'imagenet' or 'small'/,
    );
  });
});

describe('official weights and the small-input stem', () => {
  for (const [id, budget] of [
    ['resnet18', 1],
    ['mobilenetv2_050', 0.5],
    ['convnext_tiny', null],
  ] as const) {
    it(`${id}: refused by name at 32 px, loaded with stem 'imagenet' or at 96 px`, () => {
      const big = createModel(id, { budget, classes: 10, inputShape: [3, 96, 96] });
      const official = exportOfficialStateDict(big, initWeights(big, { seed: 1 }));
      const small = createModel(id, { budget, classes: 10, inputShape: [3, 32, 32] });
      let err: unknown;
      try {
        importOfficialStateDict(small, official);
      } catch (e) {
        err = e;
      }
      expect(isKwError(err, 'WEIGHTS_STEM'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/32x32 inputs.*65 px or more.*--stem imagenet/);
      const forced = createModel(id, {
        budget,
        classes: 10,
        inputShape: [3, 32, 32],
        stem: 'imagenet',
      });
      const w = importOfficialStateDict(forced, official);
      expect(w.get(id === 'resnet18' ? 'conv1.weight' : [...w.keys()][0]!)).toBeDefined();
      expect(importOfficialStateDict(big, official).size).toBe(w.size);
    });
  }

  it('project files record the stem; loading into the other stem is refused', () => {
    const big = createModel('mobilenetv2_050', { classes: 10, inputShape: [3, 96, 96] });
    const small = createModel('mobilenetv2_050', { classes: 10, inputShape: [3, 32, 32] });
    const bytes = saveWeights(big, initWeights(big, { seed: 2 }));
    expect(() => loadWeights(small, bytes)).toThrow(/WEIGHTS_STEM.*32x32/);
    const back = saveWeights(small, initWeights(small, { seed: 2 }));
    expect(() => loadWeights(big, back)).toThrow(/small stem.*--stem small/);
    expect(loadWeights(big, bytes).size).toBeGreaterThan(0);
  });
});
