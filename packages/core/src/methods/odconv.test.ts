import { describe, expect, it } from 'vitest';
import { initWeights } from '../init.js';
import { ReferenceOps } from '../ops/reference.js';
import { countParams, layerContext, paramTable } from '../params.js';
import { runReference } from '../reference/executor.js';
import { conv2d } from '../reference/ops.js';
import { Rng } from '../rng.js';
import { SpecBuilder } from '../spec/builder.js';
import { maxRelativeError, type Tensor } from '../tensor.js';
import { randomInput } from '../testing.js';
import { type OdConvRef, odConvAttentionValues, odConvKernel, odConvParamCount } from './odconv.js';
import { METHODS } from './registry.js';
import type { DynamicNode } from './types.js';

function odSpec(
  c: number,
  f: number,
  k: number,
  groups: number,
  settings: Record<string, unknown> = {},
) {
  const b = new SpecBuilder('od', [c, 5, 4]);
  const x = b.dynamicConv2d(
    'od',
    b.input,
    { outChannels: f, kernelSize: k, padding: (k - 1) / 2, groups },
    { kind: 'odconv', ...settings },
  );
  b.output(b.relu('r', b.batchNorm('bn', x)));
  return b.build();
}

function randomize(w: Map<string, Tensor>, rng: Rng): Map<string, Tensor> {
  const out = new Map(w);
  for (const [k, t] of w) {
    const data = rng.normalArray(t.data.length, 0.5);
    if (k.includes('running_var'))
      for (let i = 0; i < data.length; i++) data[i] = 0.5 + Math.abs(data[i]!);
    out.set(k, { shape: t.shape, data });
  }
  return out;
}

describe('ODConv (peers.md §4)', () => {
  it('parameter formula of §4.2 incl. skip rules, and ResNet18 1x / 4x published counts', () => {
    for (const [c, f, k, g, K] of [
      [4, 6, 3, 1, 4],
      [4, 6, 3, 2, 1],
      [4, 4, 3, 4, 3],
      [4, 6, 1, 1, 2],
      [4, 6, 1, 1, 1],
    ] as const) {
      const spec = odSpec(c, f, k, g, { kernels: K });
      expect(countParams(spec)).toBe(odConvParamCount(c, f, k, k, K, g) + 2 * f);
    }
    const names = (s: ReturnType<typeof odSpec>) => [...paramTable(s).byName.keys()].join(' ');
    expect(names(odSpec(4, 4, 3, 4))).not.toMatch(/filter_fc/); // depthwise
    expect(names(odSpec(4, 6, 1, 1))).not.toMatch(/spatial_fc/); // 1x1
    expect(names(odSpec(4, 6, 3, 1, { kernels: 1 }))).not.toMatch(/kernel_fc/); // K = 1
    // ResNet18: every 3x3 conv inside the blocks is ODConv (§4.2); README 11.94M / 44.90M
    const convs: [number, number][] = [];
    for (let i = 0; i < 4; i++) convs.push([64, 64]);
    for (const [a, b] of [
      [64, 128],
      [128, 256],
      [256, 512],
    ] as const)
      convs.push([a, b], [b, b], [b, b], [b, b]);
    const resnet18 = 11_689_512;
    for (const [K, expected] of [
      [1, 11.944],
      [4, 44.902],
    ] as const) {
      let total = resnet18;
      for (const [c, f] of convs) total += odConvParamCount(c, f, 3, 3, K) - c * f * 9;
      expect(total / 1e6).toBeCloseTo(expected, 3);
    }
  });

  it('kernel with every attention = 1 is the plain sum of kernels (the mixture)', () => {
    const rng = new Rng(3);
    const g = {
      outChannels: 4,
      kernelSize: [3, 3] as [number, number],
      stride: [1, 1] as [number, number],
      padding: [1, 1] as [number, number],
      dilation: [1, 1] as [number, number],
      groups: 2,
      bias: false,
    };
    const bank = rng.normalArray(3 * 4 * 2 * 9);
    const t = (data: Float32Array, shape: number[]) => ({ shape, data });
    const ones = {
      channel: t(new Float32Array(4).fill(1), [1, 4]),
      filter: t(new Float32Array(4).fill(1), [1, 4]),
      spatial: t(new Float32Array(9).fill(1), [1, 9]),
      kernel: t(new Float32Array([0.2, 0.3, 0.5]), [1, 3]),
    };
    const weight = t(bank, [3, 4, 2, 3, 3]);
    const ops = new ReferenceOps({ param: () => weight, training: false });
    const k = odConvKernel(ops, g, 4, 3, ones).data;
    for (let i = 0; i < 72; i++)
      expect(k[i]).toBeCloseTo(0.2 * bank[i]! + 0.3 * bank[72 + i]! + 0.5 * bank[144 + i]!, 5);
  });

  for (const [name, c, f, k, g, K] of [
    ['grouped 3x3 K=3', 4, 6, 3, 2, 3],
    ['depthwise 3x3 K=2', 4, 4, 3, 4, 2],
    ['1x1 K=1', 4, 6, 1, 1, 1],
  ] as const) {
    it(`${name}: kernel form = official input/output scaling form (check 3), batch 1 and 3, both modes`, () => {
      const rng = new Rng(c * f + k + g);
      const spec = odSpec(c, f, k, g, { kernels: K, temperature: 2 });
      const w = randomize(initWeights(spec, { seed: 1 }), rng);
      const node = spec.nodes[0] as DynamicNode;
      const get = (n: string) => w.get(`od.${n}`)!;
      for (const mode of ['inference', 'train'] as const) {
        for (const n of [1, 3]) {
          if (mode === 'train' && n === 1) continue; // BatchNorm on [1, A, 1, 1] has one value per channel
          const x = randomInput(rng, [n, c, 5, 4]);
          const got = runReference(spec, w, x, { mode, capture: ['od'] }).get('od')!;
          const att = odConvAttentionValues(node, node.method as OdConvRef, x, get, mode);
          const bank = get('weight').data;
          const size = bank.length / K;
          const per = c * 20;
          for (let b = 0; b < n; b++) {
            const xs = new Float32Array(per);
            for (let ch = 0; ch < c; ch++)
              for (let i = 0; i < 20; i++)
                xs[ch * 20 + i] = x.data[b * per + ch * 20 + i]! * att.channel[b * c + ch]!;
            const wk = new Float32Array(size);
            for (let q = 0; q < K; q++)
              for (let i = 0; i < size; i++)
                wk[i]! +=
                  att.kernel[b * K + q]! *
                  att.spatial[b * k * k + (i % (k * k))]! *
                  bank[q * size + i]!;
            const y = conv2d(
              { shape: [1, c, 5, 4], data: xs },
              { shape: [f, c / g, k, k], data: wk },
              undefined,
              { stride: [1, 1], padding: [(k - 1) / 2, (k - 1) / 2], dilation: [1, 1], groups: g },
            );
            const plane = y.data.length / f;
            for (let o = 0; o < f; o++)
              for (let i = 0; i < plane; i++) y.data[o * plane + i]! *= att.filter[b * f + o]!;
            const slice = got.data.slice(b * y.data.length, (b + 1) * y.data.length);
            expect(maxRelativeError(slice, y.data)).toBeLessThan(1e-5);
          }
          if (g === f) expect([...att.filter].every((v) => v === 1)).toBe(true);
        }
      }
    });
  }

  it('bad settings name node and field', () => {
    expect(() => odSpec(4, 6, 3, 1, { reduction: 0 })).toThrow(/node "od".*method\.reduction/);
    expect(() => odSpec(4, 6, 3, 1, { minHidden: 0 })).toThrow(/method\.minHidden/);
  });

  it('refuses temperatures below 1e-3 (a subnormal gave NaN logits), in the spec and at run time', () => {
    for (const t of [5e-324, 1e-310, 1e-4])
      expect(() => odSpec(4, 6, 3, 1, { temperature: t }), String(t)).toThrow(
        /node "od".*field "method\.temperature" must be a finite number >= 0\.001 .*found /,
      );
    const spec = odSpec(4, 6, 3, 1, { temperature: 1e-3 });
    const x = randomInput(new Rng(3), [2, 4, 5, 4]);
    const w = initWeights(spec, { seed: 3 });
    expect(runReference(spec, w, x).get('r')!.data.every(Number.isFinite)).toBe(true);
    const table = paramTable(spec);
    const node = table.analyzed.byId.get('od') as DynamicNode;
    const ops = new ReferenceOps({ param: (n) => w.get(`od.${n}`), training: false });
    const ctx = {
      ...layerContext(table, node),
      outShape: table.analyzed.shapes.get('od')!,
      temperature: 0,
    };
    expect(() =>
      METHODS.get('odconv')!.forward(ops, x, { ...ctx, methodTemperature: 5e-324 }),
    ).toThrow(
      /\[ARGUMENT_INVALID\] node "od": method temperature must be a finite number >= 0\.001/,
    );
  });
});
