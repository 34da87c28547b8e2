import { initWeights, SpecBuilder } from '@kernelwarehouse/core';
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { perSampleWinograd, setOwnWasmKernels, setWasmWinograd } from '../src/conv-wasm.js';
import { registerTrainingKernels } from '../src/grads.js';
import { buildModel, setTemperature } from '../src/index.js';
import {
  mixTapsWasm,
  setWasmTapMixing,
  type TapMixGeometry,
  tapMixingPays,
} from '../src/mix-wasm.js';
import { TfOps } from '../src/ops.js';
import { relErr, useBackend } from './helpers.js';

const rand = (size: number) => Float32Array.from({ length: size }, () => Math.random() * 2 - 1);

/**
 * Float64 tap mixing of NHWC `x` by `alpha [N, m, n]` (the seam's definition) and, for an upstream
 * gradient `dz`, its gradients in x and alpha.
 */
function reference(
  x: Float32Array,
  xs: number[],
  alpha: Float32Array,
  n: number,
  g: TapMixGeometry,
  dz: Float32Array,
) {
  const [N, H, W, C] = xs as [number, number, number, number];
  const [kh, kw] = g.kernelSize;
  const cin = C / g.gIn;
  const m = kh * kw * g.gOut * g.gIn;
  const Ho = Math.floor((H + 2 * g.padding[0] - kh) / g.stride[0]) + 1;
  const Wo = Math.floor((W + 2 * g.padding[1] - kw) / g.stride[1]) + 1;
  const Z = g.gOut * n * cin;
  const z = new Float64Array(N * Ho * Wo * Z);
  const dx = new Float64Array(x.length);
  const da = new Float64Array(alpha.length);
  for (let b = 0; b < N; b++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++)
        for (let gg = 0; gg < g.gOut; gg++)
          for (let k = 0; k < n; k++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const iy = oy * g.stride[0] - g.padding[0] + i;
                const ix = ox * g.stride[1] - g.padding[1] + j;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                for (let q = 0; q < g.gIn; q++) {
                  const ai = (b * m + ((i * kw + j) * g.gOut + gg) * g.gIn + q) * n + k;
                  for (let c = 0; c < cin; c++) {
                    const xi = ((b * H + iy) * W + ix) * C + q * cin + c;
                    const zi = ((b * Ho + oy) * Wo + ox) * Z + (gg * n + k) * cin + c;
                    z[zi]! += alpha[ai]! * x[xi]!;
                    dx[xi]! += alpha[ai]! * dz[zi]!;
                    da[ai]! += dz[zi]! * x[xi]!;
                  }
                }
              }
  return { z, dx, da, zShape: [N, Ho, Wo, Z] };
}

describe('KW tap mixing on the own wasm kernels (mixTapsWasm)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
    registerTrainingKernels('wasm');
  });
  afterEach(() => {
    setOwnWasmKernels(true);
    setWasmTapMixing(true);
  });

  // [x shape, n, geometry]: whole-tap cells, halved cells (G_out = G_in = 2) at stride 2, a 3x1
  // kernel with padding on one axis, a 1x1 kernel at stride 2, no padding, and a map smaller
  // than the kernel's reach (taps off every side)
  const CASES: [number[], number, TapMixGeometry][] = [
    [[2, 5, 5, 16], 9, { kernelSize: [3, 3], stride: [1, 1], padding: [1, 1], gOut: 1, gIn: 1 }],
    [[3, 7, 7, 64], 5, { kernelSize: [3, 3], stride: [2, 2], padding: [1, 1], gOut: 2, gIn: 2 }],
    [[2, 6, 4, 32], 3, { kernelSize: [3, 1], stride: [1, 1], padding: [1, 0], gOut: 1, gIn: 1 }],
    [[2, 6, 6, 48], 4, { kernelSize: [1, 1], stride: [2, 2], padding: [0, 0], gOut: 3, gIn: 1 }],
    [[1, 6, 5, 32], 7, { kernelSize: [3, 3], stride: [1, 2], padding: [0, 0], gOut: 1, gIn: 2 }],
    [[2, 2, 2, 16], 2, { kernelSize: [5, 5], stride: [1, 1], padding: [2, 2], gOut: 1, gIn: 1 }],
  ];

  it.each(CASES)(
    'x %j, n %d, %j: mixed maps and both gradients match float64 (relative error < 1e-5)',
    (shape, n, g) => {
      setWasmTapMixing('always');
      const [N, , , C] = shape as [number, number, number, number];
      const m = g.kernelSize[0] * g.kernelSize[1] * g.gOut * g.gIn;
      const x = rand(shape.reduce((a, d) => a * d, 1));
      const alpha = rand(N * m * n);
      const probe = reference(x, shape, alpha, n, g, new Float32Array(0));
      const dz = rand(probe.z.length);
      const ref = reference(x, shape, alpha, n, g, dz);
      const before = tf.memory().numTensors;
      const [xt, at, dzt] = [
        tf.tensor(x, shape),
        tf.tensor3d(alpha, [N, m, n]),
        tf.tensor(dz, ref.zShape),
      ];
      const z = mixTapsWasm(xt, at, g, C);
      expect(z?.shape).toEqual(ref.zShape);
      // float32 products summed in float32 (at most kh·kw·G_in terms per output, or a map's
      // pixels for alpha's gradient) against float64
      expect(relErr(z!.dataSync(), ref.z)).toBeLessThan(1e-5);
      const [dx, da] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(mixTapsWasm(a, b, g, C)!, dzt)),
      )([xt, at]);
      expect(relErr(dx!.dataSync(), ref.dx)).toBeLessThan(1e-5);
      expect(relErr(da!.dataSync(), ref.da)).toBeLessThan(1e-5);
      tf.dispose([xt, at, dzt, z!, dx!, da!]);
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  it('runs the own kernels, not a stand-in', async () => {
    setWasmTapMixing('always');
    const g = CASES[0]![2];
    const x = tf.randomNormal([2, 5, 5, 16]);
    const a = tf.randomNormal([2, 9, 9]);
    const p = await tf.profile(() => {
      tf.tidy(() =>
        tf.grads((u: tf.Tensor, v: tf.Tensor) => tf.sum(mixTapsWasm(u, v, g, 16)!))([x, a]),
      );
    });
    const seen = p.kernels.map((k) => k.name);
    expect(seen).toContain('KwWasmTapMix');
    expect(seen).toContain('KwWasmTapMixGrad');
    tf.dispose([x, a]);
  });

  it('a second-order gradient is refused as BACKEND_UNSUPPORTED, not with tfjs\'s "gradient function not found"', () => {
    setWasmTapMixing('always');
    const g = CASES[0]![2];
    const x = tf.randomNormal([1, 5, 5, 16]);
    const a = tf.randomNormal([1, 9, 9]);
    const inner = (u: tf.Tensor) => tf.sum(tf.square(mixTapsWasm(u, a, g, 16)!));
    expect(() => tf.grad((u: tf.Tensor) => tf.sum(tf.grad(inner)(u)))(x)).toThrow(
      /\[BACKEND_UNSUPPORTED\] second-order gradients through a KW conv are not implemented/,
    );
    tf.dispose([x, a]);
  });

  it('declines where it does not apply or does not pay', async () => {
    const g: TapMixGeometry = {
      kernelSize: [3, 3],
      stride: [1, 1],
      padding: [1, 1],
      gOut: 1,
      gIn: 1,
    };
    const x = tf.zeros([2, 7, 7, 256]);
    const a = tf.zeros([2, 9, 9]);
    // the 1x KW ResNet-8's layer3.0.conv2 (n = 9 cells of 256x256 on 7x7 maps) pays
    expect(mixTapsWasm(x, a, g, 256)).toBeDefined();
    setWasmTapMixing(false);
    expect(mixTapsWasm(x, a, g, 256)).toBeUndefined();
    setWasmTapMixing(true);
    setOwnWasmKernels(false);
    expect(mixTapsWasm(x, a, g, 256)).toBeUndefined();
    setOwnWasmKernels(true);
    setWasmTapMixing('always');
    // c_in not a multiple of 16; alpha of another batch or cell count; int32; rank 3
    expect(mixTapsWasm(tf.zeros([2, 7, 7, 8]), a, g, 8)).toBeUndefined();
    expect(mixTapsWasm(x, tf.zeros([3, 9, 9]), g, 256)).toBeUndefined();
    expect(mixTapsWasm(x, tf.zeros([2, 18, 9]), g, 256)).toBeUndefined();
    expect(mixTapsWasm(tf.zeros([2, 7, 7, 256], 'int32'), a, g, 256)).toBeUndefined();
    expect(mixTapsWasm(tf.zeros([7, 7, 256]), a, g, 256)).toBeUndefined();
    // a kernel larger than the padded map: no output pixel
    const big = {
      ...g,
      kernelSize: [9, 9] as [number, number],
      padding: [0, 0] as [number, number],
    };
    expect(mixTapsWasm(x, tf.zeros([2, 81, 9]), big, 256)).toBeUndefined();
    setWasmTapMixing(true);
    await useBackend('cpu');
    try {
      expect(mixTapsWasm(x, a, g, 256)).toBeUndefined();
    } finally {
      await useBackend('wasm');
    }
  });

  it('TfOps.sharedGroupsConv1x1 is the grouped conv with the weight repeated; its gradient is the sum over groups (1e-5)', async () => {
    for (const backend of ['wasm', 'cpu'] as const) {
      await useBackend(backend);
      const ops = new TfOps(new Map(), new Map(), true, 'test');
      const x = tf.randomNormal([2, 3, 5, 3 * 8]);
      const w = tf.randomNormal([4, 8, 1, 1]);
      const bias = tf.randomNormal([12]);
      const r = tf.randomNormal([2, 3, 5, 12]);
      const f = (shared: boolean) =>
        tf.grads((xs: tf.Tensor, ws: tf.Tensor) => {
          const y = shared
            ? ops.sharedGroupsConv1x1(xs, ws, 3, bias)
            : ops.conv2d(xs, tf.concat([ws, ws, ws], 0), bias, {
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                groups: 3,
              });
          return tf.sum(tf.mul(y, r));
        })([x, w]);
      const [dxS, dwS] = f(true);
      const [dxG, dwG] = f(false);
      const yS = ops.sharedGroupsConv1x1(x, w, 3, bias);
      const yG = ops.conv2d(x, tf.concat([w, w, w], 0), bias, {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 3,
      });
      expect(relErr(yS.dataSync(), yG.dataSync()), backend).toBeLessThan(1e-5);
      expect(relErr(dxS!.dataSync(), dxG!.dataSync()), backend).toBeLessThan(1e-5);
      expect(relErr(dwS!.dataSync(), dwG!.dataSync()), backend).toBeLessThan(1e-5);
      expect(() => ops.sharedGroupsConv1x1(x, w, 2)).toThrow(
        /sharedGroupsConv1x1: 2 groups of weight \[4, 8, 1, 1\] do not fit 24 input channels/,
      );
      tf.dispose([x, w, bias, r, dxS!, dwS!, dxG!, dwG!, yS, yG]);
    }
    await useBackend('wasm');
  });

  it('setWasmTapMixing refuses a setting other than true, false or always', () => {
    for (const bad of ['yes', 1, undefined, null, 'ALWAYS']) {
      expect(() => setWasmTapMixing(bad as unknown as boolean)).toThrow(
        /setWasmTapMixing: the setting must be true, false or 'always', found/,
      );
    }
    expect(setWasmTapMixing('always')).toBe(true);
    expect(setWasmTapMixing(true)).toBe('always');
  });

  it('the cost rule: the width-4 ResNet-8 layer3.0.conv2 pays at 1x to 1/4x, layers with more cells or large maps do not', () => {
    // n, taps, G_in, c_out, output pixels (shapes from core's plan of the ResNet-8 width 4)
    expect(tapMixingPays(9, 9, 1, 256, 49)).toBe(true); // 1x layer3.0.conv2
    expect(tapMixingPays(9, 9, 2, 128, 49)).toBe(true); // 1/4x layer3.0.conv2
    expect(tapMixingPays(18, 9, 2, 128, 49)).toBe(true); // 1/2x layer3.0.conv2
    expect(tapMixingPays(18, 9, 1, 256, 49)).toBe(false); // 2x layer3.0.conv2
    expect(tapMixingPays(29, 9, 1, 128, 196)).toBe(false); // 1x layer2.0.conv2
    expect(tapMixingPays(38, 9, 1, 64, 784)).toBe(false); // 1x layer1.0.conv1
    expect(tapMixingPays(9, 9, 1, 64, 784)).toBe(false); // few cells, but a large map
  });

  it('the cost rule refuses sizes that are not positive integers and a winograd that is not a boolean', () => {
    const bad: [Parameters<typeof tapMixingPays>, RegExp][] = [
      [[0, 9, 1, 256, 49], /n must be a positive integer, found 0/],
      [[9, 9.5, 1, 256, 49], /taps must be a positive integer, found 9\.5/],
      [[9, 9, -1, 256, 49], /gIn must be a positive integer, found -1/],
      [[9, 9, 1, Number.NaN, 49], /cout must be a positive integer, found NaN/],
      [
        [9, 9, 1, 256, Number.POSITIVE_INFINITY],
        /pixels must be a positive integer, found Infinity/,
      ],
      [[9, 9, 1, 256, 49, 'yes' as unknown as boolean], /winograd must be true or false, found/],
    ];
    for (const [args, re] of bad) expect(() => tapMixingPays(...args), re.source).toThrow(re);
  });

  it('the cost rule weighs an assembled form that runs as Winograd: 14x14 at 1/4x assembles now', () => {
    // one KW conv with its own warehouse at 1/4x (bench:tap-mixing's case): 128 channels on
    // 14x14 maps, n = 9, G_in = 2, c_out = 64; the mixed form measured 1.12x the assembled form's
    // time once the assembled form's per-sample conv ran as Winograd (0.84x before)
    expect(tapMixingPays(9, 9, 2, 64, 196, false)).toBe(true);
    expect(tapMixingPays(9, 9, 2, 64, 196, true)).toBe(false);
    expect(tapMixingPays(9, 9, 2, 64, 196)).toBe(true); // default: a direct conv
    // 7x7 layers have no per-sample Winograd form: unchanged
    expect(tapMixingPays(9, 9, 1, 256, 49, false)).toBe(true);
    // 256 channels on 14x14 maps at 1/4x (the same, n = 9) still mix (measured 0.86x)
    expect(tapMixingPays(9, 9, 2, 128, 196, true)).toBe(true);
    // and the layer takes it: per-sample Winograd applies to 3x3 stride-1 convs from 100 pixels
    expect(perSampleWinograd(3, 3, 1, 1, 14, 14)).toBe(true);
    expect(perSampleWinograd(3, 3, 1, 1, 7, 7)).toBe(false);
    expect(perSampleWinograd(3, 3, 2, 2, 28, 28)).toBe(false);
    // so mixTapsWasm leaves that layer to the assembled form while Winograd is on
    setWasmTapMixing(true);
    const g: TapMixGeometry = {
      kernelSize: [3, 3],
      stride: [1, 1],
      padding: [1, 1],
      gOut: 2,
      gIn: 2,
    };
    const [x, alpha] = [tf.zeros([1, 14, 14, 128]), tf.zeros([1, 36, 9])];
    try {
      expect(mixTapsWasm(x, alpha, g, 64)).toBeUndefined();
      expect(setWasmWinograd(false)).toBe(true);
      expect(perSampleWinograd(3, 3, 1, 1, 14, 14)).toBe(false);
      const z = mixTapsWasm(x, alpha, g, 64);
      expect(z?.shape).toEqual([1, 14, 14, 2 * 9 * 64]);
      z?.dispose();
    } finally {
      setWasmWinograd(true);
      tf.dispose([x, alpha]);
    }
  });

  // one KW 3x3 conv of 9 cells on 3x3 maps of 64 channels (pays): whole-tap cells, and halved
  // ones (G_out = G_in = 2: the shared 1x1 conv of two channel groups, sharedGroupsConv1x1)
  it.each([
    [1, 1],
    [1 / 4, 1 / 2],
  ])(
    'a KW model (budget %d, cell ratio %d) takes it where it pays, with the outputs and gradients of the assembled form (1e-4)',
    async (budget, ratio) => {
      const b = new SpecBuilder('mixed', [64, 3, 3]);
      b.warehouse({ id: 'w', budget, cellInRatio: ratio, cellOutRatio: ratio });
      const geo = { outChannels: 64, kernelSize: 3, padding: 1, bias: true };
      const y = b.dynamicConv2d('conv', b.input, geo, { kind: 'kw', warehouse: 'w' });
      b.output(b.flatten('flat', b.globalAvgPool('pool', b.relu('relu', y))));
      const spec = b.build();
      const model = buildModel(spec, initWeights(spec, { seed: 5 }));
      setTemperature(model, 0.4);
      const x = tf.randomNormal([4, 3, 3, 64]);
      const r = tf.randomNormal([4, 64]);
      const infer = () =>
        tf.tidy(() => (model.apply(x, { training: false }) as tf.Tensor).dataSync());
      const grads = () =>
        tf.tidy(() => {
          const { grads: gs } = tf.variableGrads(() =>
            tf.sum(tf.mul(model.apply(x, { training: true }) as tf.Tensor, r)),
          );
          return Object.entries(gs).map(([k, v]) => [k, v.dataSync()] as const);
        });
      const profile = await tf.profile(() => {
        tf.tidy(() => model.apply(x, { training: false }) as tf.Tensor);
      });
      const names = profile.kernels.map((k) => k.name);
      expect(names).toContain('KwWasmTapMix');
      // no per-sample conv, and no split of the mixed maps into groups
      expect(names).not.toContain('KwWasmConv2D');
      expect(names).not.toContain('SplitV');
      // inference first (a training pass updates the attention BatchNorm's running statistics)
      const out = infer();
      setWasmTapMixing(false);
      const outAssembled = infer();
      expect(relErr(out, outAssembled)).toBeLessThan(1e-4);
      const gAssembled = grads();
      setWasmTapMixing(true);
      const g = grads();
      expect(g.length).toBeGreaterThan(5);
      for (const [i, [name, v]] of g.entries()) {
        expect(gAssembled[i]![0]).toBe(name);
        expect(relErr(v, gAssembled[i]![1]), name).toBeLessThan(1e-4);
      }
      tf.dispose([x, r]);
      model.dispose();
    },
  );
});
