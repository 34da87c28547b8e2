// Spec validation: every malformed spec gets a KwError that names the node and the field.
import { describe, expect, it } from 'vitest';
import {
  analyzeSpec,
  formatBudget,
  type KwErrorCode,
  parseBudget,
  planKw,
  SpecBuilder,
  validateSpec,
} from '../src/index.js';
import { tinyKwSpec } from '../src/testing.js';
import { kwErrorOf } from './kw-error.js';

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v));
}

function expectKw(f: () => unknown, code: KwErrorCode, ...fragments: (string | RegExp)[]): void {
  kwErrorOf(f, code, ...fragments);
}

describe('validateSpec', () => {
  const good = tinyKwSpec({ budget: 1, kwClassifier: true });

  it('round-trips through JSON unchanged', () => {
    const again = validateSpec(JSON.parse(JSON.stringify(good)));
    expect(again).toEqual(good);
  });

  it('accepts authoring shorthands and fills defaults', () => {
    const s = validateSpec({
      specVersion: 1,
      name: 'short',
      inputShape: [3, 8, 8],
      nodes: [{ id: 'c', op: 'conv2d', inputs: ['input'], outChannels: 4, kernelSize: 3 }],
      outputs: ['c'],
    });
    expect(s.nodes[0]).toMatchObject({
      kernelSize: [3, 3],
      stride: [1, 1],
      padding: [0, 0],
      dilation: [1, 1],
      groups: 1,
      bias: false,
    });
    expect(analyzeSpec(s).shapes.get('c')).toEqual([4, 6, 6]);
  });

  it('refuses unknown fields on nodes, warehouses and the spec, naming them and the accepted fields', () => {
    const typo = (mutate: (s: any) => void) => () => {
      const s = clone(good) as any;
      mutate(s);
      return validateSpec(s);
    };
    const conv = 'id, op, inputs, outChannels, kernelSize, stride, padding, dilation, groups, bias';
    expectKw(
      typo((s) => (s.nodes[0].strides = 2)),
      'SPEC_BAD_FIELD',
      /node "stem" \(nodes\[0\]\): unknown field "strides" \(op "conv2d"\)/,
      `accepted fields: ${conv}`,
    );
    expectKw(
      typo((s) => (s.nodes[0].kernel_size = 5)),
      'SPEC_BAD_FIELD',
      /"kernel_size"/,
    );
    expectKw(
      typo((s) => (s.nodes[3].stides = [2, 2])),
      'SPEC_BAD_FIELD',
      /node "block.conv1"/,
      /"stides" \(op "dynamicConv2d"\)/,
      `${conv}, method`,
    );
    expectKw(
      typo((s) => (s.nodes[2].inplace = true)),
      'SPEC_BAD_FIELD',
      /node "stem_relu"/,
      /"inplace" \(op "relu"\); accepted fields: id, op, inputs$/,
    );
    expectKw(
      typo((s) => (s.warehouses[0].cellRatio = 0.5)),
      'SPEC_BAD_FIELD',
      /warehouse "stage0": unknown field "cellRatio"/,
      /accepted fields: id, budget, cellInRatio, cellOutRatio, reduction, norm, nonlocalBasisRatio$/,
    );
    expectKw(
      typo((s) => (s.output = ['fc'])),
      'SPEC_BAD_FIELD',
      /spec: unknown field "output"/,
      /accepted fields: specVersion, name, inputShape, nodes, outputs, warehouses, meta$/,
    );
    // the SpecBuilder refuses conv options it would otherwise drop
    const b = new SpecBuilder('t', [4, 8, 8]);
    expectKw(
      () => b.conv2d('c', b.input, { outChannels: 4, kernelSize: 3, strides: 2 } as never),
      'SPEC_BAD_FIELD',
      /node "c": unknown conv option "strides"/,
    );
    b.warehouse({ id: 'w', budget: 1, cellRatio: 0.5 } as never);
    b.output(
      b.dynamicConv2d(
        'd',
        b.input,
        { outChannels: 4, kernelSize: 1 },
        { kind: 'kw', warehouse: 'w' },
      ),
    );
    expectKw(() => b.build(), 'SPEC_BAD_FIELD', /warehouse "w": unknown field "cellRatio"/);
  });

  it('accepts every field the node, warehouse and spec types declare', () => {
    const s = validateSpec({
      specVersion: 1,
      name: 'every-field',
      inputShape: [4, 8, 8],
      meta: { source: 'test' },
      warehouses: [
        {
          id: 'w',
          budget: 1,
          cellInRatio: 1,
          cellOutRatio: 1,
          reduction: 1 / 16,
          norm: 'batch',
          nonlocalBasisRatio: 1,
        },
      ],
      nodes: [
        {
          id: 'c',
          op: 'conv2d',
          inputs: ['input'],
          outChannels: 4,
          kernelSize: 3,
          stride: 1,
          padding: 1,
          dilation: 1,
          groups: 1,
          bias: true,
        },
        {
          id: 'd',
          op: 'dynamicConv2d',
          inputs: ['c'],
          outChannels: 4,
          kernelSize: 3,
          stride: 1,
          padding: 1,
          dilation: 1,
          groups: 1,
          bias: false,
          method: { kind: 'kw', warehouse: 'w' },
        },
        { id: 'bn', op: 'batchNorm', inputs: ['d'], eps: 1e-5, momentum: 0.1 },
        { id: 'ln', op: 'layerNorm', inputs: ['bn'], eps: 1e-6 },
        { id: 'g', op: 'mul', inputs: ['ln'], init: 0.5 },
        { id: 'mp', op: 'maxPool', inputs: ['g'], kernelSize: 2, stride: 2, padding: 0 },
        { id: 'ap', op: 'avgPool', inputs: ['mp'], kernelSize: 2, stride: 1, padding: 1 },
        { id: 'do', op: 'dropout', inputs: ['ap'], rate: 0.1 },
        { id: 'f', op: 'flatten', inputs: ['do'] },
        { id: 'fc', op: 'linear', inputs: ['f'], outFeatures: 3, bias: true },
        {
          id: 'dfc',
          op: 'dynamicLinear',
          inputs: ['f'],
          outFeatures: 3,
          bias: true,
          method: { kind: 'dyconv' },
        },
      ],
      outputs: ['fc'],
    });
    expect(s.nodes.map((n) => n.op)).toContain('dynamicLinear');
    expect(validateSpec(clone(s))).toEqual(s);
  });

  const mutations: [string, (s: any) => void, KwErrorCode, RegExp[]][] = [
    [
      'wrong version',
      (s) => (s.specVersion = 2),
      'SPEC_VERSION',
      [/specVersion must be 1, found 2/],
    ],
    ['not an object', (s) => (s.nodes[1] = 5), 'SPEC_INVALID', [/nodes\[1\]/]],
    [
      'unknown op',
      (s) => (s.nodes[1].op = 'conv3d'),
      'SPEC_UNKNOWN_OP',
      [/node "stem_bn"/, /"conv3d"/],
    ],
    [
      'missing outChannels',
      (s) => delete s.nodes[0].outChannels,
      'SPEC_BAD_FIELD',
      [/node "stem"/, /outChannels/, /undefined/],
    ],
    [
      'zero channels',
      (s) => (s.nodes[0].outChannels = 0),
      'SPEC_BAD_FIELD',
      [/outChannels/, /found 0/],
    ],
    [
      'negative stride',
      (s) => (s.nodes[0].stride = [-1, 1]),
      'SPEC_BAD_FIELD',
      [/stride\[0\]/, /found -1/],
    ],
    [
      'groups do not divide',
      (s) => (s.nodes[6].groups = 3),
      'SPEC_BAD_FIELD',
      [/node "block.conv2"/, /groups=3 must divide/],
    ],
    [
      'forward reference (cycle)',
      (s) => (s.nodes[0].inputs = ['stem_relu']),
      'SPEC_UNKNOWN_INPUT',
      [/node "stem"/, /topological/],
    ],
    ['self reference', (s) => (s.nodes[1].inputs = ['stem_bn']), 'SPEC_UNKNOWN_INPUT', [/itself/]],
    [
      'duplicate id',
      (s) => (s.nodes[2].id = 'stem'),
      'SPEC_DUPLICATE_ID',
      [/"stem" is already used/],
    ],
    [
      'unknown warehouse',
      (s) => (s.nodes[3].method.warehouse = 'nope'),
      'SPEC_UNKNOWN_WAREHOUSE',
      [/node "block.conv1"/, /"nope"/],
    ],
    [
      'unknown method',
      (s) => (s.nodes[3].method = { kind: 'magic' }),
      'SPEC_UNKNOWN_METHOD',
      [/"magic"/],
    ],
    ['missing method', (s) => delete s.nodes[3].method, 'SPEC_MISSING_FIELD', [/method/]],
    [
      'budget 0',
      (s) => (s.warehouses[0].budget = 0),
      'BUDGET_INVALID',
      [/warehouse "stage0"/, /found 0/],
    ],
    ['budget negative', (s) => (s.warehouses[0].budget = -1), 'BUDGET_INVALID', [/found -1/]],
    ['budget NaN', (s) => (s.warehouses[0].budget = Number.NaN), 'BUDGET_INVALID', [/found NaN/]],
    ['budget string', (s) => (s.warehouses[0].budget = '1x'), 'BUDGET_INVALID', [/"1x"/]],
    ['bad norm', (s) => (s.warehouses[0].norm = 'group'), 'SPEC_BAD_FIELD', [/norm/]],
    ['cell ratio 0', (s) => (s.warehouses[0].cellInRatio = 0), 'SPEC_BAD_FIELD', [/cellInRatio/]],
    [
      'unused warehouse',
      (s) => s.warehouses.push({ id: 'spare', budget: 1 }),
      'SPEC_UNKNOWN_WAREHOUSE',
      [/"spare"/, /no dynamic layer/],
    ],
    [
      'kernel too big',
      (s) => (s.nodes[0].kernelSize = [11, 11]),
      'SPEC_SHAPE',
      [/node "stem"/, /does not fit/],
    ],
    [
      'linear on images',
      (s) => (s.nodes[s.nodes.length - 2].op = 'identity'),
      'SPEC_SHAPE',
      [/flatten first/],
    ],
    [
      'add of a later node',
      (s) => (s.nodes[7].inputs = ['stem', 'down']),
      'SPEC_UNKNOWN_INPUT',
      [/"down"/],
    ],
    [
      'add shape mismatch',
      (s) => (s.nodes[7].inputs = ['input', 'stem']),
      'SPEC_SHAPE',
      [/node "block.add"/, /\[3, 8, 8\]/, /\[8, 8, 8\]/],
    ],
    ['unknown output', (s) => (s.outputs = ['nothing']), 'SPEC_UNKNOWN_INPUT', [/outputs\[0\]/]],
    ['no nodes', (s) => (s.nodes = []), 'SPEC_MISSING_FIELD', [/nodes/]],
    ['bad input shape', (s) => (s.inputShape = [3, 8]), 'SPEC_BAD_FIELD', [/inputShape/]],
    ['bad id', (s) => (s.nodes[0].id = 'a..b'), 'SPEC_BAD_FIELD', [/dotted path/]],
    [
      'dropout rate 1',
      (s) => s.nodes.splice(1, 0, { id: 'd', op: 'dropout', inputs: ['stem'], rate: 1 }),
      'SPEC_BAD_FIELD',
      [/rate/],
    ],
  ];
  for (const [label, mutate, code, frags] of mutations) {
    it(`rejects: ${label}`, () => {
      const s = clone(good) as any;
      if (label === 'budget NaN') s.warehouses[0].budget = Number.NaN;
      mutate(s);
      expectKw(() => validateSpec(s), code, ...frags);
    });
  }
});

describe('budgets', () => {
  it("parses the paper's notation and numbers", () => {
    expect(
      ['1/4x', '1/2x', '1x', '2x', '4x', '0.25', '1/8', 3, '1.5x'].map((b) =>
        parseBudget(b as string),
      ),
    ).toEqual([0.25, 0.5, 1, 2, 4, 0.25, 0.125, 3, 1.5]);
    expect([0.25, 0.5, 1, 4, 1.5].map(formatBudget)).toEqual(['1/4x', '1/2x', '1x', '4x', '1.5x']);
    for (const bad of ['', 'x', '-1', '0', '1/0', 'abc', 'NaNx'])
      expectKw(() => parseBudget(bad), 'BUDGET_INVALID', /not valid/);
    expectKw(() => parseBudget(Number.POSITIVE_INFINITY), 'BUDGET_INVALID');
  });

  it('refuses budgets whose reciprocal is not finite (subnormals), in parse, format and specs', () => {
    for (const b of [1e-320, 5e-324, Number.MIN_VALUE])
      expectKw(() => parseBudget(b), 'BUDGET_INVALID', /finite reciprocal/, /found [0-9.e-]+$/);
    expectKw(() => parseBudget('1e-320'), 'BUDGET_INVALID', /"1e-320" is not valid/);
    expectKw(() => parseBudget('1e-320x'), 'BUDGET_INVALID', /"1e-320x" is not valid/);
    expectKw(() => formatBudget(1e-320), 'BUDGET_INVALID', /found 1e-320/);
    expectKw(() => formatBudget(Number.NaN), 'BUDGET_INVALID', /found NaN/);
    const s = clone(tinyKwSpec({ budget: 1 })) as any;
    s.warehouses[0].budget = 1e-320;
    expectKw(() => validateSpec(s), 'BUDGET_INVALID', /warehouse "stage0"/, /found 1e-320/);
    // the smallest normal budgets still parse and format
    expect(parseBudget(1e-300)).toBe(1e-300);
    expect(formatBudget(1e-300)).toBe('1e-300x');
  });

  it('a non-integer budget above 1 cannot tile, and the error names budgets that do', () => {
    expectKw(
      () => planKw(analyzeSpec(tinyKwSpec({ budget: 1.5 }))),
      'BUDGET_CANNOT_TILE',
      /warehouse "stage0"/,
      /must be an integer/,
      /Budgets that tile every layer of this warehouse evenly: .*1\/3x.*, 1x, 2x/,
    );
  });

  it('1/p needs every m to be a multiple of p^2', () => {
    // pw layer has m = 4 at cell ratio 1 (16x16 / 8x8 cells? no: cells are 16x16 -> m = 1)
    const b = new SpecBuilder('odd', [4, 4, 4]);
    b.warehouse({ id: 'w', budget: 0.5 });
    b.output(
      b.dynamicConv2d(
        'c',
        b.input,
        { outChannels: 4, kernelSize: 3, padding: 1 },
        { kind: 'kw', warehouse: 'w' },
      ),
    );
    // m = 9 (3x3, one 4x4 cell per position): not a multiple of 4
    expectKw(
      () => planKw(analyzeSpec(b.build())),
      'BUDGET_CANNOT_TILE',
      /multiple of 4/,
      /layer m: 9/,
    );
    const c = new SpecBuilder('third', [4, 4, 4]);
    c.warehouse({ id: 'w', budget: 0.3 });
    c.output(
      c.dynamicConv2d(
        'c',
        c.input,
        { outChannels: 4, kernelSize: 3, padding: 1 },
        { kind: 'kw', warehouse: 'w' },
      ),
    );
    expectKw(() => planKw(analyzeSpec(c.build())), 'BUDGET_CANNOT_TILE', /must be 1\/p/);
  });

  it('a cell ratio whose cell does not divide a layer is refused, not floored', () => {
    const b = new SpecBuilder('ratio', [10, 4, 4]);
    b.warehouse({ id: 'w', budget: 1, cellInRatio: 0.3 });
    b.output(
      b.dynamicConv2d(
        'c',
        b.input,
        { outChannels: 4, kernelSize: 1 },
        { kind: 'kw', warehouse: 'w' },
      ),
    );
    expectKw(() => planKw(analyzeSpec(b.build())), 'PLAN_CELL_DOES_NOT_DIVIDE', /layer "c"/);
  });

  it('conv and linear layers cannot share a warehouse', () => {
    const b = new SpecBuilder('mixed', [4, 2, 2]);
    b.warehouse({ id: 'w', budget: 1 });
    const x = b.dynamicConv2d(
      'c',
      b.input,
      { outChannels: 4, kernelSize: 1 },
      { kind: 'kw', warehouse: 'w' },
    );
    b.output(b.dynamicLinear('fc', b.flatten('f', x), 4, { kind: 'kw', warehouse: 'w' }));
    expectKw(() => planKw(analyzeSpec(b.build())), 'PLAN_MIXED_DIMENSIONS', /"w"/);
  });
});

describe('weight decay rule (official optim_factory)', () => {
  it('1-D tensors, biases and buffers are not decayed; names merely containing "bias" are', async () => {
    const { decays, paramTable } = await import('../src/index.js');
    expect(decays('fc.weight', [2, 2], 'param')).toBe(true);
    expect(decays('fc.bias', [2, 2], 'param')).toBe(false);
    expect(decays('bias', [2, 2], 'param')).toBe(false);
    expect(decays('basis_bias', [4], 'param')).toBe(false);
    expect(decays('unbiased.weight', [2, 2], 'param')).toBe(true);
    expect(decays('gamma', [8], 'param')).toBe(false);
    expect(decays('running_var', [8, 8], 'buffer')).toBe(false);
    const t = paramTable(tinyKwSpec({ kwClassifier: true }));
    expect(t.byName.get('warehouses.stage0')!.decay).toBe(true);
    expect(t.byName.get('fc.bias')!.decay).toBe(false);
    expect(t.byName.get('block.conv1.attention.fc2.bias')!.decay).toBe(false);
  });
});
