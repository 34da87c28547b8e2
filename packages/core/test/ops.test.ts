// Reference ops against hand-computed values and against direct definitions.
import { describe, expect, it } from 'vitest';
import {
  CAF_EPS,
  caf,
  maxRelativeError,
  ops,
  simplifyTranspose,
  temperatureAt,
  tensor,
} from '../src/index.js';
import { Rng, randomInput } from '../src/testing.js';

describe('conv2d', () => {
  it('hand-computed 3x3 input, 2x2 kernel, stride 1, no padding', () => {
    const x = tensor([1, 1, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const w = tensor([1, 1, 2, 2], [1, 0, 0, -1]);
    const y = ops.conv2d(x, w, tensor([1], [10]), {
      stride: [1, 1],
      padding: [0, 0],
      dilation: [1, 1],
      groups: 1,
    });
    expect(y.shape).toEqual([1, 1, 2, 2]);
    expect(Array.from(y.data)).toEqual([1 - 5 + 10, 2 - 6 + 10, 4 - 8 + 10, 5 - 9 + 10]);
  });

  it('matches the definition on a zero-padded input for stride, padding, dilation and groups', () => {
    const rng = new Rng(1);
    for (const [c, o, g, k, s, p, d] of [
      [4, 6, 2, 3, 2, 1, 1],
      [3, 3, 3, 3, 1, 2, 2],
      [2, 4, 1, 1, 1, 0, 1],
    ] as const) {
      const h = 7;
      const x = randomInput(rng, [2, c, h, h]);
      const w = randomInput(rng, [o, c / g, k, k]);
      const y = ops.conv2d(x, w, undefined, {
        stride: [s, s],
        padding: [p, p],
        dilation: [d, d],
        groups: g,
      });
      const ho = Math.floor((h + 2 * p - d * (k - 1) - 1) / s) + 1;
      expect(y.shape).toEqual([2, o, ho, ho]);
      const at = (b: number, ch: number, yy: number, xx: number) =>
        yy < 0 || xx < 0 || yy >= h || xx >= h ? 0 : x.data[((b * c + ch) * h + yy) * h + xx]!;
      const ref: number[] = [];
      for (let b = 0; b < 2; b++)
        for (let oc = 0; oc < o; oc++)
          for (let oy = 0; oy < ho; oy++)
            for (let ox = 0; ox < ho; ox++) {
              let sum = 0;
              const grp = Math.floor(oc / (o / g));
              for (let icg = 0; icg < c / g; icg++)
                for (let ky = 0; ky < k; ky++)
                  for (let kx = 0; kx < k; kx++)
                    sum +=
                      w.data[((oc * (c / g) + icg) * k + ky) * k + kx]! *
                      at(b, grp * (c / g) + icg, oy * s - p + ky * d, ox * s - p + kx * d);
              ref.push(sum);
            }
      expect(maxRelativeError(y.data, ref)).toBeLessThan(1e-6);
    }
  });
});

describe('other ops', () => {
  it('max and average pooling with padding (average counts the padding)', () => {
    const x = tensor([1, 1, 2, 2], [1, 2, 3, 4]);
    const mx = ops.pool2d(x, 'max', [2, 2], [1, 1], [1, 1]);
    expect(Array.from(mx.data)).toEqual([1, 2, 2, 3, 4, 4, 3, 4, 4]);
    const av = ops.pool2d(x, 'avg', [2, 2], [2, 2], [0, 0]);
    expect(Array.from(av.data)).toEqual([2.5]);
    const avp = ops.pool2d(x, 'avg', [2, 2], [1, 1], [1, 1]);
    expect(avp.data[0]).toBeCloseTo(0.25, 7);
  });

  it('batchNorm inference and train', () => {
    const x = tensor([2, 1, 1, 2], [1, 3, 5, 7]);
    const one = tensor([1], [1]);
    const zero = tensor([1], [1]);
    const inf = ops.batchNorm(x, one, zero, tensor([1], [1]), tensor([1], [4]), 0, 'inference');
    expect(Array.from(inf.data)).toEqual([1, 2, 3, 4]); // (x - 1) / sqrt(4) * 1 + 1
    const tr = ops.batchNorm(
      x,
      tensor([1], [1]),
      tensor([1], [0]),
      tensor([1], [0]),
      tensor([1], [1]),
      0,
      'train',
    );
    const sd = Math.sqrt(5); // mean 4, biased var (9+1+1+9)/4 = 5
    expect(maxRelativeError(tr.data, [-3 / sd, -1 / sd, 1 / sd, 3 / sd])).toBeLessThan(1e-6);
  });

  it('layerNorm over channels normalises each position independently', () => {
    const x = tensor([1, 2, 1, 2], [1, 10, 3, 20]); // position 0: (1,3), position 1: (10,20)
    const y = ops.layerNormChannels(x, tensor([2], [1, 1]), tensor([2], [0, 0]), 0);
    expect(maxRelativeError(y.data, [-1, -1, 1, 1])).toBeLessThan(1e-6);
  });

  it('exact GELU and erf against known values', () => {
    expect(ops.erf(0.5)).toBeCloseTo(0.5204998778130465, 6);
    expect(ops.erf(-1.5)).toBeCloseTo(-0.9661051464753108, 6);
    expect(ops.gelu(1)).toBeCloseTo(0.8413447460685429, 6);
    expect(ops.gelu(-2)).toBeCloseTo(-0.04550026389635842, 6);
    expect(ops.relu6(7)).toBe(6);
    expect(ops.sigmoid(0)).toBe(0.5);
  });

  it('broadcast multiply (SE gating) and channel scale', () => {
    const a = tensor([1, 2, 1, 2], [1, 2, 3, 4]);
    expect(Array.from(ops.mulBroadcast(a, tensor([1, 2, 1, 1], [10, 100])).data)).toEqual([
      10, 20, 300, 400,
    ]);
    expect(Array.from(ops.channelScale(a, tensor([2], [2, 3])).data)).toEqual([2, 4, 9, 12]);
  });
});

describe('CAF', () => {
  it('hand-computed: z / (sum|z| + 1e-3), tau mixes in beta, zero column dropped', () => {
    const z = new Float32Array([1, -2, 1]); // n = 2 cells + zero cell
    const s = 4 + CAF_EPS;
    const a0 = caf(z, 1, 2, 0, new Int32Array([0]));
    expect(maxRelativeError(a0, [1 / s, -2 / s])).toBeLessThan(1e-6);
    const a5 = caf(z, 1, 2, 0.5, new Int32Array([1]));
    expect(maxRelativeError(a5, [0.5 / s, -1 / s + 0.5])).toBeLessThan(1e-6);
    // beta on the zero cell: tau adds nothing to the real cells
    const az = caf(z, 1, 2, 1, new Int32Array([2]));
    expect(Array.from(az)).toEqual([0, 0]);
  });

  it('rows cycle through the m mixtures of beta', () => {
    const z = new Float32Array(4 * 3).fill(0);
    const a = caf(z, 4, 2, 1, new Int32Array([1, 0]));
    expect(Array.from(a)).toEqual([0, 1, 1, 0, 0, 1, 1, 0]);
  });

  it('refuses tau outside [0, 1] and wrong logit counts', () => {
    expect(() => caf(new Float32Array(3), 1, 2, 1.5, new Int32Array([0]))).toThrow(
      /tau must be in \[0, 1\]/,
    );
    expect(() => caf(new Float32Array(4), 1, 2, 0, new Int32Array([0]))).toThrow(/expected 1 x 3/);
  });
});

describe('temperature schedule (engine.py get_temperature)', () => {
  it('falls linearly from 1 to 0 over the first E epochs, per micro-batch', () => {
    const s = { epochs: 20, itersPerEpoch: 100 };
    expect(temperatureAt(s, 0, 0)).toBeCloseTo(0.9995, 12);
    expect(temperatureAt(s, 10, 0)).toBeCloseTo((2000 - 1001) / 2000, 12);
    expect(temperatureAt(s, 19, 98)).toBeCloseTo(1 / 2000, 12);
    expect(temperatureAt(s, 19, 99)).toBe(0);
    expect(temperatureAt(s, 30, 5)).toBe(0);
  });

  it('DY-Conv style 30 -> 1 and the degenerate zero-epoch schedule', () => {
    const s = { epochs: 10, itersPerEpoch: 10, initValue: 30, endValue: 1 };
    expect(temperatureAt(s, 0, 0)).toBeCloseTo(1 + 29 * (99 / 100), 12);
    expect(temperatureAt(s, 12, 0)).toBe(1);
    expect(temperatureAt({ epochs: 0, itersPerEpoch: 5 }, 0, 0)).toBe(0);
  });

  it('rejects bad arguments with KwError', () => {
    expect(() => temperatureAt({ epochs: 20, itersPerEpoch: 0 }, 0, 0)).toThrow(/itersPerEpoch/);
    expect(() => temperatureAt({ epochs: 20, itersPerEpoch: 10 }, -1, 0)).toThrow(/epoch and step/);
    expect(() => temperatureAt({ epochs: Number.NaN, itersPerEpoch: 10 }, 0, 0)).toThrow(/epochs/);
  });
});

describe('simplifyTranspose', () => {
  it('simplifyTranspose drops size-1 axes and merges axes that stay neighbours', () => {
    expect(simplifyTranspose([32, 3, 3, 1, 1, 256, 256], [0, 1, 2, 3, 4, 6, 5])).toEqual({
      shape: [288, 256, 256],
      perm: [0, 2, 1],
    });
    // KW's cells [N, kh, kw, G_out, G_in, c_out, c_in] to HWIO [N, kh, kw, G_in, c_in, G_out, c_out]
    expect(simplifyTranspose([8, 3, 3, 2, 4, 16, 8], [0, 1, 2, 4, 6, 3, 5])).toEqual({
      shape: [72, 2, 4, 16, 8],
      perm: [0, 2, 4, 1, 3],
    });
    expect(simplifyTranspose([5, 7], [1, 0])).toEqual({ shape: [5, 7], perm: [1, 0] });
    expect(simplifyTranspose([2, 3, 4], [0, 1, 2])).toEqual({ shape: [24], perm: [0] });
    expect(simplifyTranspose([1, 1], [1, 0])).toEqual({ shape: [], perm: [] });
  });
});
