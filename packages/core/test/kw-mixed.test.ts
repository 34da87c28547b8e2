// The mixed form of a KW conv (kw.ts's kwMixedConv: taps mixed by the attention, then the
// warehouse as one grouped 1x1 conv) against the assembled form, on the reference ops: the same
// sums in another order, so equal to float rounding. The mixing itself is written here from its
// definition in the seam (Ops.mixTaps), with float64 sums.
import { describe, expect, it } from 'vitest';
import {
  type ConvAttrs,
  type DynamicConv2dNode,
  initWeights,
  kwForward,
  kwLayerGroup,
  type MixTapsAttrs,
  type ModelSpec,
  maxRelativeError,
  planModel,
  ReferenceOps,
  SpecBuilder,
  type Tensor,
  type WeightMap,
} from '../src/index.js';
import { perturb, Rng, randomInput } from '../src/testing.js';

/** ReferenceOps with `mixTaps` (NCHW, float64 sums), counting its calls; `decline` returns undefined. */
class MixingOps extends ReferenceOps {
  calls = 0;
  decline = false;
  mixTaps(x: Tensor, alpha: Tensor, a: MixTapsAttrs): Tensor | undefined {
    if (this.decline) return undefined;
    this.calls++;
    const [N, C, H, W] = x.shape as [number, number, number, number];
    const [, m, n] = alpha.shape as [number, number, number];
    // the attrs name the warehouse's cell count (exporters read it there, not from the value)
    if (a.n !== n) throw new Error(`mixTaps: attrs.n ${a.n}, alpha's last dim ${n}`);
    const [kh, kw] = a.kernelSize;
    const cin = C / a.gIn;
    const Ho = Math.floor((H + 2 * a.padding[0] - kh) / a.stride[0]) + 1;
    const Wo = Math.floor((W + 2 * a.padding[1] - kw) / a.stride[1]) + 1;
    const Z = a.gOut * n * cin;
    const out = new Float32Array(N * Z * Ho * Wo);
    for (let b = 0; b < N; b++)
      for (let g = 0; g < a.gOut; g++)
        for (let k = 0; k < n; k++)
          for (let c = 0; c < cin; c++)
            for (let oy = 0; oy < Ho; oy++)
              for (let ox = 0; ox < Wo; ox++) {
                let s = 0;
                for (let i = 0; i < kh; i++)
                  for (let j = 0; j < kw; j++) {
                    const iy = oy * a.stride[0] - a.padding[0] + i;
                    const ix = ox * a.stride[1] - a.padding[1] + j;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                    for (let q = 0; q < a.gIn; q++) {
                      const cell = ((i * kw + j) * a.gOut + g) * a.gIn + q;
                      const w = alpha.data[(b * m + cell) * n + k]!;
                      s += w * x.data[((b * C + q * cin + c) * H + iy) * W + ix]!;
                    }
                  }
                const ch = (g * n + k) * cin + c;
                out[((b * Z + ch) * Ho + oy) * Wo + ox] = s;
              }
    return { shape: [N, Z, Ho, Wo], data: out };
  }
}

interface Case {
  name: string;
  channels: number;
  size: number;
  budget: number;
  cellRatio: number;
  kernel: [number, number];
  stride: number;
  padding: [number, number];
  bias: boolean;
  gOut: number;
  gIn: number;
}

function oneLayer(c: Case): ModelSpec {
  const b = new SpecBuilder('mixed', [c.channels, c.size, c.size]);
  b.warehouse({ id: 'w', budget: c.budget, cellInRatio: c.cellRatio, cellOutRatio: c.cellRatio });
  const geo = {
    outChannels: c.channels,
    kernelSize: c.kernel,
    stride: c.stride,
    padding: c.padding,
    bias: c.bias,
  };
  b.output(b.dynamicConv2d('conv', b.input, geo, { kind: 'kw', warehouse: 'w' }));
  return b.build();
}

/**
 * The KW layer `conv` of `spec`: its plan group, its node and the ops options over weights from
 * `seed` (every tensor perturbed, so no path is trivial), with the Rng that perturbed them.
 */
function layerOf(spec: ModelSpec, seed: number, training: boolean) {
  const g = kwLayerGroup(planModel(spec).kw!, 'conv');
  const rng = new Rng(seed);
  const weights: WeightMap = initWeights(spec, { seed });
  for (const [k, t] of weights) weights.set(k, perturb(rng, t, 0.1));
  const node = spec.nodes.find((nd) => nd.id === 'conv') as DynamicConv2dNode;
  const opts = {
    param: (name: string) => weights.get(`conv.${name}`)!,
    shared: (name: string) => weights.get(name)!,
    training,
  };
  return { g, node, opts, rng };
}

const CASES: Case[] = [
  // G_out = G_in = 1 (whole-tap cells), stride 1, padding 1
  {
    name: '3x3 cells of whole taps',
    channels: 8,
    size: 6,
    budget: 1,
    cellRatio: 1,
    kernel: [3, 3],
    stride: 1,
    padding: [1, 1],
    bias: false,
    gOut: 1,
    gIn: 1,
  },
  // G_out = G_in = 2, stride 2, a bias, an odd map
  {
    name: 'halved cells, stride 2, bias',
    channels: 8,
    size: 7,
    budget: 0.25,
    cellRatio: 0.5,
    kernel: [3, 3],
    stride: 2,
    padding: [1, 1],
    bias: true,
    gOut: 2,
    gIn: 2,
  },
  // a 3x1 kernel, padding on one axis only, no padding in the other
  {
    name: '3x1 kernel, unequal padding',
    channels: 4,
    size: 5,
    budget: 1,
    cellRatio: 1,
    kernel: [3, 1],
    stride: 1,
    padding: [1, 0],
    bias: false,
    gOut: 1,
    gIn: 1,
  },
];

describe('KW conv in the mixed form (Ops.mixTaps) equals the assembled form', () => {
  const seed = Math.floor(Math.random() * 2 ** 31);
  for (const c of CASES) {
    for (const training of [false, true]) {
      it(`${c.name}, ${training ? 'training' : 'inference'} (relative error < 1e-5; seed ${seed})`, () => {
        const { g, node, opts, rng } = layerOf(oneLayer(c), seed, training);
        expect([g.layer.gOut, g.layer.gIn]).toEqual([c.gOut, c.gIn]);
        const x = randomInput(rng, [3, c.channels, c.size, c.size]);
        const mixing = new MixingOps(opts);
        const mixed = kwForward(mixing, x, node, g, 0.3);
        const assembled = kwForward(new ReferenceOps(opts), x, node, g, 0.3);
        expect(mixing.calls).toBe(1);
        expect(mixed.shape).toEqual(assembled.shape);
        // float32 rounding of the mixed maps and of the 1x1 conv's inputs, against float64 sums
        expect(maxRelativeError(mixed.data, assembled.data)).toBeLessThan(1e-5);
        // a backend that declines gets the assembled form, bit for bit
        const declining = new MixingOps(opts);
        declining.decline = true;
        const back = kwForward(declining, x, node, g, 0.3);
        expect(Array.from(back.data)).toEqual(Array.from(assembled.data));
      });
    }
  }

  it('a backend with sharedGroupsConv1x1 gets the G_out groups as one call (halved cells)', () => {
    class GroupsOps extends MixingOps {
      groupCalls = 0;
      sharedGroupsConv1x1(x: Tensor, w: Tensor, groups: number, bias?: Tensor): Tensor {
        this.groupCalls++;
        const attrs: ConvAttrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups };
        return this.conv2d(x, this.concat(new Array<Tensor>(groups).fill(w), 0), bias, attrs);
      }
    }
    const c = CASES[1]!;
    const { g, node, opts, rng } = layerOf(oneLayer(c), 9, false);
    const x = randomInput(rng, [2, c.channels, c.size, c.size]);
    const ops = new GroupsOps(opts);
    const y = kwForward(ops, x, node, g, 0.3);
    expect([ops.calls, ops.groupCalls]).toEqual([1, 1]);
    const want = kwForward(new ReferenceOps(opts), x, node, g, 0.3);
    expect(maxRelativeError(y.data, want.data)).toBeLessThan(1e-5);
  });

  it('is not asked for a grouped conv, nor at tau = 1 in inference', () => {
    const b = new SpecBuilder('grouped', [8, 5, 5]);
    b.warehouse({ id: 'w', budget: 1 });
    const geo = { outChannels: 8, kernelSize: 3, padding: 1, groups: 2 };
    b.output(b.dynamicConv2d('conv', b.input, geo, { kind: 'kw', warehouse: 'w' }));
    const grouped = layerOf(b.build(), 1, false);
    const x = randomInput(new Rng(2), [2, 8, 5, 5]);
    const ops = new MixingOps(grouped.opts);
    kwForward(ops, x, grouped.node, grouped.g, 0.5);
    expect(ops.calls).toBe(0);
    const plain = layerOf(oneLayer(CASES[0]!), 1, false);
    const ops0 = new MixingOps(plain.opts);
    kwForward(ops0, randomInput(new Rng(3), [2, 8, 6, 6]), plain.node, plain.g, 1);
    expect(ops0.calls).toBe(0);
  });
});
