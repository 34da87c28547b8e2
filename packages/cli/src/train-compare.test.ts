import { describe, expect, it } from 'vitest';
import { compareWithPlain } from './train-compare.js';

const r = (method: string, label: string, seed: number, params: number, testAccuracy: number) => ({
  method,
  label,
  seed,
  params,
  testAccuracy,
});

describe('compareWithPlain', () => {
  it('pairs by seed and gives mean ± sample std, wins and the parameter ratio (hand-derived)', () => {
    const lines = compareWithPlain([
      r('plain', 'plain', 0, 100, 0.9),
      r('plain', 'plain', 1, 100, 0.8),
      r('kw:1/4x@2', 'KW 1/4x @stage2', 0, 74, 0.91),
      r('kw:1/4x@2', 'KW 1/4x @stage2', 1, 74, 0.77),
    ]);
    // differences +0.01 and -0.03: mean -0.01, sample std sqrt(((0.02)^2 + (0.02)^2) / 1) = 0.0283
    const line = lines.find((l) => l.startsWith('- KW 1/4x'))!;
    expect(line).toContain('-1.00 points ± 2.83 vs plain');
    expect(line).toContain('at or above plain on 1 of 2 seeds');
    expect(line).toContain('behind, within the seed spread');
    expect(line).toContain('0.74x plain');
    expect(line).toContain('26 % fewer');
    expect(lines.join('\n')).toContain('Why KW can trail plain here');
  });

  it('says when every variant is at least plain, and is empty without a plain run', () => {
    const ok = compareWithPlain([
      r('plain', 'plain', 0, 100, 0.9),
      r('kw:1x', 'KW 1x', 0, 158, 0.95),
    ]);
    expect(ok.join('\n')).toContain('+5.00 points vs plain');
    expect(ok.join('\n')).toContain('Every variant reached at least plain');
    expect(compareWithPlain([r('kw:1x', 'KW 1x', 0, 158, 0.95)])).toEqual([]);
  });
});
