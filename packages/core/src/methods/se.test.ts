import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { countParams } from '../params.js';
import { runReference } from '../reference/executor.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError } from '../tensor.js';
import { randomInput } from '../testing.js';
import {
  addSqueezeExcite,
  normalizeSeSettings,
  type SqueezeExciteOptions,
  seParamCount,
} from './se.js';

describe('SE block (peers.md §1.1)', () => {
  it('parameter count 2C²/r + C/r + C; SE-ResNet18 = 11.779 M', () => {
    const b = new SpecBuilder('se', [32, 4, 4]);
    b.output(addSqueezeExcite(b, 'se', b.input, 32));
    expect(countParams(b.build())).toBe(seParamCount(32));
    expect(seParamCount(32)).toBe((2 * 32 * 32) / 16 + 2 + 32);
    let extra = 0;
    for (const c of [64, 64, 128, 128, 256, 256, 512, 512]) extra += seParamCount(c);
    expect((11_689_512 + extra) / 1e6).toBeCloseTo(11.779, 3);
  });

  it('forward = u ⊙ σ(W2 ReLU(W1 GAP(u) + b1) + b2), batch 1 and 3', () => {
    const rng = new Rng(1);
    const b = new SpecBuilder('se', [8, 3, 3]);
    b.output(addSqueezeExcite(b, 'se', b.input, 8, { reduction: 4 }));
    const spec = b.build();
    const w = initWeights(spec, { seed: 2 });
    for (const name of ['se.fc1.bias', 'se.fc2.bias']) {
      const t = w.get(name)!;
      w.set(name, { shape: t.shape, data: rng.normalArray(t.data.length) });
    }
    for (const n of [1, 3]) {
      const x = randomInput(rng, [n, 8, 3, 3]);
      const y = runReference(spec, w, x).get('se')!;
      const W1 = w.get('se.fc1.weight')!.data;
      const b1 = w.get('se.fc1.bias')!.data;
      const W2 = w.get('se.fc2.weight')!.data;
      const b2 = w.get('se.fc2.bias')!.data;
      const want = new Float32Array(x.data.length);
      for (let s = 0; s < n; s++) {
        const z = Array.from({ length: 8 }, (_, c) => {
          let t = 0;
          for (let i = 0; i < 9; i++) t += x.data[(s * 8 + c) * 9 + i]!;
          return t / 9;
        });
        const hid = [0, 1].map((r) =>
          Math.max(0, b1[r]! + z.reduce((a, v, i) => a + v * W1[r * 8 + i]!, 0)),
        );
        for (let c = 0; c < 8; c++) {
          const g = 1 / (1 + Math.exp(-(b2[c]! + hid[0]! * W2[c * 2]! + hid[1]! * W2[c * 2 + 1]!)));
          for (let i = 0; i < 9; i++) want[(s * 8 + c) * 9 + i] = x.data[(s * 8 + c) * 9 + i]! * g;
        }
      }
      expect(maxRelativeError(y.data, want)).toBeLessThan(1e-5);
    }
  });

  it('rejects a bad reduction', () => {
    const b = new SpecBuilder('se', [8, 3, 3]);
    expect(() => addSqueezeExcite(b, 'se', b.input, 8, { reduction: 0 })).toThrow(/reduction/);
  });

  it("refuses unknown settings (a typo) with SPEC_BAD_FIELD, as the methods' normalize does", () => {
    const b = new SpecBuilder('se', [8, 3, 3]);
    const typo = { reducton: 4 } as SqueezeExciteOptions;
    expect(() => addSqueezeExcite(b, 'se', b.input, 8, typo)).toThrow(
      /SPEC_BAD_FIELD.*SE "se": method "se" has no setting "reducton"; known: reduction, hidden/,
    );
    expect(() => normalizeSeSettings('SE "x"', null)).toThrow(
      /ARGUMENT_INVALID.*SE "x": SE options must be an object.*found null/,
    );
    expect(() => normalizeSeSettings('SE "x"', { reduction: '4' })).toThrow(
      /ARGUMENT_INVALID.*reduction must be a number > 0, found "4"/,
    );
    // a method option's `kind: 'se'` is allowed; defaults fill in
    expect(normalizeSeSettings('SE "x"', { kind: 'se' })).toEqual({
      reduction: 16,
      hidden: undefined,
    });
  });
});
