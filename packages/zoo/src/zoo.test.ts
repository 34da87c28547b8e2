// The acceptance test of the zoo: every published (backbone, budget) parameter count
// (OSVAI/KernelWarehouse README.md, "Results and Models") comes out of the same rules.
import {
  countParams,
  initWeights,
  isKwError,
  KwError,
  maxRelativeError,
  planModel,
  runReference,
} from '@kernelwarehouse/core';
import { Rng, randomInput } from '@kernelwarehouse/core/testing';
import { describe, expect, it } from 'vitest';
import { createModel, getModel, listModels, MODELS } from './index.js';

// exact counts from our rules (pinned), next to the README figure they must round to
const EXACT: Record<string, Record<string, number>> = {
  resnet18: {
    plain: 11_689_512,
    0.25: 4_031_768,
    0.5: 7_431_044,
    1: 11_932_148,
    2: 23_242_127,
    4: 45_862_085,
  },
  resnet50: { plain: 25_557_032, 0.5: 17_638_264, 1: 28_052_310, 4: 102_015_144 },
  mobilenetv2_100: { plain: 3_504_872, 0.5: 2_654_396, 1: 5_168_146, 4: 11_379_382 },
  mobilenetv2_050: { plain: 1_968_680, 0.5: 1_466_888, 1: 2_854_522, 4: 4_648_587 },
  convnext_tiny: { plain: 28_589_128, 1: 39_370_674 },
  slak_tiny: { plain: 50_703_838 },
};

describe('published parameter counts', () => {
  for (const m of MODELS) {
    for (const row of m.published) {
      const key = row.budget === null ? 'plain' : String(row.budget);
      it(`${m.id} ${row.budget === null ? 'plain' : `KW ${row.budget}x`}: ${row.paramsM}M (${row.source})`, () => {
        const total = countParams(createModel(m.id, { budget: row.budget }));
        expect(total).toBe(EXACT[m.id]![key]);
        if (m.id === 'resnet18' && row.budget === 0.25) {
          // documented gap: the public 1/4x config gives 4.03M, the README prints 4.08M
          expect(total / 1e6 - row.paramsM).toBeCloseTo(-0.048, 3);
        } else {
          // the README rounds to 0.01M: ours rounds to the same figure (well within the 0.5% asked)
          expect(Math.round(total / 1e4) / 100).toBe(row.paramsM);
        }
      });
    }
  }
});

describe('warehouse layouts', () => {
  it('ResNet18/50: four stage warehouses; ResNet50 keeps layer1.0.conv1 and layer1.0.downsample plain', () => {
    const r50 = planModel(createModel('resnet50', { budget: 1 }));
    expect(r50.kw.warehouses.map((w) => w.id)).toEqual(['stage0', 'stage1', 'stage2', 'stage3']);
    expect(r50.kw.layers.has('layer1.0.conv1')).toBe(false);
    expect(r50.kw.layers.has('layer1.0.downsample.0')).toBe(false);
    expect(r50.kw.layers.get('layer2.0.conv1')!.warehouse).toBe('stage0');
    expect(r50.kw.layers.get('layer2.0.downsample.0')!.warehouse).toBe('stage0');
    expect(r50.kw.layers.get('layer2.0.conv2')!.warehouse).toBe('stage1');
    expect(r50.kw.warehouses.map((w) => [w.mt, w.n])).toEqual([
      [87, 87],
      [104, 104],
      [138, 138],
      [47, 47],
    ]);
  });

  it('ResNet50 1/2x uses the non-local basis attention (ratio 1/16) with halved cells', () => {
    const p = planModel(createModel('resnet50', { budget: '1/2x' }));
    const l = p.kw.layers.get('layer3.1.conv2')!;
    expect(l.basis).toBeDefined();
    expect(l.basis!.nLocal).toBe(l.m / 2);
    expect(l.basis!.nBasis).toBe(Math.max(Math.trunc(l.basis!.nNonlocal / 16), 16));
    expect(p.kw.warehouses.map((w) => w.cellOut)).toEqual([32, 64, 128, 256]);
  });

  it('MobileNetV2: 13 warehouses at 1x, 19 at 4x, 10 at 1/2x (KW classifier m = 40, n = 20, r = 1/32)', () => {
    expect(planModel(createModel('mobilenetv2_100', { budget: 1 })).kw.warehouses).toHaveLength(13);
    expect(planModel(createModel('mobilenetv2_100', { budget: 4 })).kw.warehouses).toHaveLength(19);
    const half = planModel(createModel('mobilenetv2_100', { budget: '1/2x' }));
    expect(half.kw.warehouses.map((w) => w.id)).toEqual([
      'stage0_conv0',
      'stage1_layer_dwconv0',
      'stage2_layer_dwconv0',
      'stage3_layer_dwconv0',
      'stage4_layer_dwconv0',
      'stage5_layer_dwconv0',
      'stage6_layer_pwconv0',
      'stage6_layer_dwconv0',
      'stage6_layer_pwconv1',
      'classifier',
    ]);
    const cls = half.kw.layers.get('classifier.1')!;
    const clsWh = half.kw.warehouses.at(-1)!;
    expect([cls.kind, cls.m, clsWh.n, clsWh.cellOut, clsWh.cellIn]).toEqual([
      'linear',
      40,
      20,
      1000,
      32,
    ]);
    expect(cls.hidden).toBe(Math.max(Math.trunc(1280 / 32), 16));
    // 1x1 convs of stages 1-5 are plain in the kw1d2x model
    expect(half.kw.layers.has('features.2.conv.0.0')).toBe(false);
    expect(half.kw.layers.has('features.2.conv.1.0')).toBe(true);
  });

  it('ConvNeXt-T: 12 warehouses in the official reservation order, LayerNorm attention, biased KW convs', () => {
    const spec = createModel('convnext_tiny', { budget: 1 });
    const p = planModel(spec);
    expect(p.kw.warehouses.map((w) => w.id).slice(0, 6)).toEqual([
      'stagestem_conv0',
      'stage0_layer_conv0',
      'stage1_layer_conv0',
      'stage2_layer_conv0',
      'stage0_layer_dwconv0',
      'stage0_layer_pwconv',
    ]);
    expect(p.kw.warehouses).toHaveLength(12);
    expect(p.kw.warehouses.every((w) => w.norm === 'layer')).toBe(true);
    expect(p.kw.layers.get('stages.2.8.pwconv2')!.biasParams).toBe(384);
  });
});

describe('options and other budgets', () => {
  it('any budget that tiles works; one that does not names the ones that do', () => {
    expect(countParams(createModel('resnet18', { budget: 3 }))).toBeGreaterThan(
      EXACT.resnet18![2]!,
    );
    let err: unknown;
    try {
      planModel(createModel('resnet18', { budget: '1/8x' }));
    } catch (e) {
      err = e;
    }
    expect(isKwError(err, 'BUDGET_CANNOT_TILE')).toBe(true);
    expect((err as KwError).message).toMatch(
      /Budgets that tile every layer of this warehouse evenly: .*1\/2x/,
    );
  });

  it('unknown models and bad options are refused clearly', () => {
    expect(() => getModel('resnet19')).toThrow(
      /unknown model "resnet19"; known models: resnet18, resnet50/,
    );
    expect(() => createModel('resnet18', { budget: '0x' })).toThrow(KwError);
    expect(() => createModel('resnet18', { classes: 0 })).toThrow(
      /classes must be an integer >= 1/,
    );
    expect(() => createModel('resnet18', { inputShape: [3, 0, 32] })).toThrow(/positive integers/);
    expect(listModels().map((m) => m.id)).toContain('resnet8_cifar');
  });

  it('malformed options give a KwError naming the option, not a TypeError or a silent coercion', () => {
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(KwError);
        return `${(e as KwError).code} ${(e as KwError).message}`;
      }
      return 'no error';
    };
    expect(code(() => createModel('resnet8_cifar', null as never))).toMatch(
      /^ARGUMENT_INVALID .*createModel\("resnet8_cifar"\): options must be an object .*found null/,
    );
    expect(code(() => createModel('resnet8_cifar', { inputShape: 'abc' as never }))).toMatch(
      /^ARGUMENT_INVALID .*resnet8_cifar: inputShape must be \[C, H, W\].*found "abc"/,
    );
    // an array is not a budget (String([0.5]) === '0.5' used to slip through parseBudget)
    expect(code(() => createModel('resnet8_cifar', { budget: [0.5] as never }))).toMatch(
      /^BUDGET_INVALID .*budget must be a number, a string like '1\/2x', or null, found \[0.5\]/,
    );
    expect(code(() => createModel('resnet8_cifar', { method: 'se' as never }))).toMatch(
      /^ARGUMENT_INVALID .*method must be an object \{ kind, ...settings \}.*found "se"/,
    );
  });

  it('explicit undefined options keep the model defaults (CIFAR models: 32x32x3, 10 classes)', () => {
    const s = createModel('resnet8_cifar', {
      budget: 1,
      classes: undefined,
      inputShape: undefined,
      width: undefined,
    });
    expect(s.inputShape).toEqual([3, 32, 32]);
    expect(planModel(s).nodes.at(-1)!.outShape).toEqual([10]);
  });

  it('classes, input size, channels and width change the spec as asked', () => {
    const s = createModel('resnet18', {
      classes: 10,
      inputShape: [1, 28, 28],
      width: 0.5,
      budget: 1,
    });
    expect(s.inputShape).toEqual([1, 28, 28]);
    const plan = planModel(s);
    expect(plan.nodes.at(-1)!.outShape).toEqual([10]);
    expect(plan.nodes.find((n) => n.id === 'conv1')!.outShape).toEqual([32, 28, 28]); // small-input 3x3/1 stem
    expect(plan.kw.warehouses[0]!.cellOut).toBe(32);
  });

  it('kwStages converts only the chosen warehouses (counts equal the official modules built the same way)', () => {
    // official Warehouse_Manager/KWConv2d on the same ResNet-8 at 28x28x1 with only these
    // stages reserved as KW (benchmarks/kw-sweep/sweep_official.py --grid params)
    const opts = { classes: 10, inputShape: [1, 28, 28] as [number, number, number] };
    const count = (budget: number | null, kwStages?: number[]) =>
      countParams(createModel('resnet8_cifar', { ...opts, budget, kwStages }));
    expect(count(null)).toBe(77_754);
    expect(count(1)).toBe(123_108);
    expect(count(1, [0, 1, 2])).toBe(123_108);
    expect(count(1, [2])).toBe(80_340);
    expect(count(0.5, [2])).toBe(72_006);
    expect(count(0.25, [2])).toBe(57_282);
    expect(count(1, [1, 2])).toBe(96_762);
    expect(count(0.25, [1, 2])).toBe(95_802);
    const spec = createModel('resnet8_cifar', { ...opts, budget: 0.25, kwStages: [2] });
    const kwNodes = spec.nodes.filter((n) => n.op === 'dynamicConv2d').map((n) => n.id);
    expect(kwNodes).toEqual(['layer3.0.conv2']);
    expect(spec.warehouses.map((w) => w.id)).toEqual(['stage2']);
  });

  it('kwStages is refused without a budget, when empty or out of range, and on other backbones', () => {
    expect(() => createModel('resnet8_cifar', { kwStages: [2] })).toThrow(/needs a budget/);
    expect(() => createModel('resnet8_cifar', { budget: 1, kwStages: [] })).toThrow(
      /non-empty list of stage indices/,
    );
    expect(() => createModel('resnet8_cifar', { budget: 1, kwStages: [1.5] })).toThrow(
      /non-empty list/,
    );
    expect(() => createModel('resnet8_cifar', { budget: 1, kwStages: [3] })).toThrow(
      /kwStages \[3\] out of range; this ResNet has stages 0..2/,
    );
    expect(() => createModel('mobilenetv2_100', { budget: 1, kwStages: [0] })).toThrow(
      /ResNet option/,
    );
    expect(() => createModel('convnext_tiny', { budget: 1, kwStages: [0] })).toThrow(
      /ResNet option/,
    );
  });

  it('small variants run on the reference executor, batch 1 and 2 agree per sample', () => {
    // the smallest inputs and widths that still build every stage (issue 15: 93 s on a loaded
    // machine at 32x32 and ConvNeXt width 0.25; the per-sample property does not need more)
    for (const [id, opts] of [
      ['resnet8_cifar', { budget: 1, inputShape: [3, 16, 16] }],
      ['mobilenetv2_050', { budget: '1/2x', inputShape: [3, 16, 16], classes: 5 }],
      ['convnext_tiny', { budget: 1, inputShape: [3, 16, 16], classes: 3, width: 0.125 }],
    ] as const) {
      const spec = createModel(id, opts as never);
      const w = initWeights(spec, { seed: 1 });
      const x = randomInput(new Rng(2), [2, ...spec.inputShape]);
      const y = runReference(spec, w, x).get(spec.outputs[0]!)!;
      expect(y.data.every(Number.isFinite)).toBe(true);
      const half = x.data.length / 2;
      const y0 = runReference(spec, w, {
        shape: [1, ...spec.inputShape],
        data: x.data.slice(0, half),
      }).get(spec.outputs[0]!)!;
      expect(maxRelativeError(y0.data, y.data.slice(0, y0.data.length))).toBeLessThan(1e-5);
    }
  });
});
