// The backbones with the other methods (issue 3's network-level counts, issue 4's method zoo):
// the published counts that peers.md verified, pinned exactly, with their sources.
import {
  countParams,
  foldSpec,
  initWeights,
  KwError,
  maxRelativeError,
  planModel,
  runReference,
} from '@kernelwarehouse/core';
import { Rng, randomInput } from '@kernelwarehouse/core/testing';
import { describe, expect, it } from 'vitest';
import { createModel, type MethodOption, MODELS } from './index.js';

// exact counts from our rules; each equals peers.md's own derivation (§1.1, §3.3, §4.2)
const EXACT: Record<string, number> = {
  'resnet18 ODConv (1x)': 11_943_944,
  'resnet18 ODConv (4x)': 44_901_640,
  'resnet18 DY-Conv (4x)': 45_475_008,
  'resnet18 SE': 11_778_592,
  'resnet50 ODConv (1x)': 28_635_112,
  'resnet50 ODConv (4x)': 90_670_888,
  'resnet50 SE': 28_088_024,
  'mobilenetv2_100 ODConv (1x)': 4_940_185,
  'mobilenetv2_100 ODConv (4x)': 11_512_149,
  'mobilenetv2_050 ODConv (1x)': 2_425_537,
  'mobilenetv2_050 ODConv (4x)': 4_435_501,
};

describe('published counts of the other methods on the zoo backbones', () => {
  for (const m of MODELS) {
    for (const row of m.publishedMethods) {
      const key = `${m.id} ${row.label}`;
      it(`${key}: ${row.paramsM}M (${row.source})`, () => {
        const total = countParams(createModel(m.id, { method: row.method }));
        expect(total).toBe(EXACT[key]);
        if (row.method.kind === 'dyconv') {
          // the DY-Conv code's hidden width is int(c/4) + 1, peers.md's 45.471M uses c/4: 0.01% apart
          expect(Math.abs(total / 1e6 / row.paramsM - 1)).toBeLessThan(2e-4);
        } else {
          // rounds to the published two-decimal figure
          expect(Math.round(total / 1e4) / 100).toBe(row.paramsM);
        }
      });
    }
  }

  it('SLaK-T: 50,703,838 dense parameters (peers.md §7.2) and ~8.70 GMAC at 224', () => {
    const plan = planModel(createModel('slak_tiny'));
    expect(plan.params.total).toBe(50_703_838);
    expect(plan.macs.total / 1e9).toBeCloseTo(8.7, 1);
    expect(plan.nodes.find((n) => n.id === 'stages.0.0.large_kernel')).toBeDefined();
  });
});

describe('method placement', () => {
  it('ODConv converts block convs only; DY-Conv also the shortcuts; DO-Conv every k > 1 conv', () => {
    const kinds = (method: Parameters<typeof createModel>[1]) => {
      const s = createModel('resnet18', method);
      const kind = (id: string) => {
        const n = s.nodes.find((x) => x.id === id)!;
        return n.op === 'dynamicConv2d' ? n.method.kind : n.op;
      };
      return ['conv1', 'layer1.0.conv1', 'layer2.0.conv2', 'layer2.0.downsample.0'].map(kind);
    };
    expect(kinds({ method: { kind: 'odconv', kernels: 4 } })).toEqual([
      'conv2d',
      'odconv',
      'odconv',
      'conv2d',
    ]);
    expect(kinds({ method: { kind: 'dyconv', kernels: 4 } })).toEqual([
      'conv2d',
      'dyconv',
      'dyconv',
      'dyconv',
    ]);
    expect(kinds({ method: { kind: 'doconv' } })).toEqual(['doconv', 'doconv', 'doconv', 'conv2d']);
    expect(kinds({ method: { kind: 'condconv', experts: 8 } })).toEqual([
      'conv2d',
      'condconv',
      'condconv',
      'conv2d',
    ]);
  });

  it('refuses combinations the official code does not place', () => {
    expect(() =>
      createModel('resnet18', { budget: 1, method: { kind: 'odconv', kernels: 4 } }),
    ).toThrow(/not both/);
    expect(() => createModel('mobilenetv2_100', { method: { kind: 'se' } })).toThrow(KwError);
    expect(() => createModel('convnext_tiny', { method: { kind: 'odconv', kernels: 1 } })).toThrow(
      /slak_tiny/,
    );
    expect(() => createModel('slak_tiny', { budget: 1 })).toThrow(/not SLaK/);
  });

  it("an SE setting typo is refused like the other methods' typos (SPEC_BAD_FIELD)", () => {
    const typo = { kind: 'se', reducton: 4 } as unknown as MethodOption;
    expect(() => createModel('resnet8_cifar', { method: typo })).toThrow(
      /SPEC_BAD_FIELD.*SE "layer1.0.se": method "se" has no setting "reducton"; known: reduction, hidden/,
    );
    expect(() => createModel('resnet8_cifar', { method: { kind: 'odconv', kernel: 4 } })).toThrow(
      /SPEC_BAD_FIELD.*no setting "kernel"/,
    );
    // the known setting still applies: 16 channels / 4 = 4 hidden
    const spec = createModel('resnet8_cifar', { method: { kind: 'se', reduction: 4 } });
    const fc1 = spec.nodes.find((n) => n.id === 'layer1.0.se.fc1') as { outChannels: number };
    expect(fc1.outChannels).toBe(4);
  });

  it('DO-Conv fresh equals the plain backbone, and folding gives plain convs with identical outputs', () => {
    const spec = createModel('resnet8_cifar', {
      method: { kind: 'doconv' },
      inputShape: [3, 12, 12],
    });
    const w = initWeights(spec, { seed: 3 });
    const x = randomInput(new Rng(4), [2, 3, 12, 12]);
    const y = runReference(spec, w, x).get('fc')!;
    const folded = foldSpec(spec, w);
    expect(folded.spec.nodes.some((n) => n.op === 'dynamicConv2d')).toBe(false);
    expect(countParams(folded.spec)).toBe(
      countParams(createModel('resnet8_cifar', { inputShape: [3, 12, 12] })),
    );
    expect(
      maxRelativeError(runReference(folded.spec, folded.weights, x).get('fc')!.data, y.data),
    ).toBeLessThan(1e-5);
  });

  it('small method backbones run on the reference (ODConv, DY-Conv, CondConv, WeightNet, SE, SLaK)', () => {
    const cases: Parameters<typeof createModel>[] = [
      ['resnet8_cifar', { method: { kind: 'odconv', kernels: 4 }, inputShape: [3, 8, 8] }],
      ['resnet8_cifar', { method: { kind: 'dyconv', kernels: 4 }, inputShape: [3, 8, 8] }],
      ['resnet8_cifar', { method: { kind: 'condconv', experts: 4 }, inputShape: [3, 8, 8] }],
      ['resnet8_cifar', { method: { kind: 'weightnet' }, inputShape: [3, 8, 8] }],
      ['resnet8_cifar', { method: { kind: 'se' }, inputShape: [3, 8, 8] }],
      [
        'mobilenetv2_050',
        { method: { kind: 'odconv', kernels: 1 }, inputShape: [3, 8, 8], classes: 3 },
      ],
      ['slak_tiny', { inputShape: [3, 16, 16], width: 0.05, classes: 3 }],
    ];
    for (const [id, opts] of cases) {
      const spec = createModel(id, opts);
      const y = runReference(
        spec,
        initWeights(spec, { seed: 1 }),
        randomInput(new Rng(2), [2, ...spec.inputShape]),
      ).get(spec.outputs[0]!)!;
      expect(y.data.every(Number.isFinite), id).toBe(true);
      expect(y.shape[0]).toBe(2);
    }
  });
});
