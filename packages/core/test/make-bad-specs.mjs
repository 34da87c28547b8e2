#!/usr/bin/env node
// Writes the malformed-spec corpus test/fixtures/bad/specs/*.json from one valid spec and a list
// of named mutations. Each file is { "expect": { "code", "message" }, "spec": ... }.
// Re-run after changing the mutations: node test/make-bad-specs.mjs (needs dist built).
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tinyKwSpec } from '../dist/testing.js';

const base = () => JSON.parse(JSON.stringify(tinyKwSpec({ budget: 1, kwClassifier: true })));
const N = (s, id) => s.nodes.find((n) => n.id === id);
const cases = {
  'not-an-object': [() => 'resnet18', 'SPEC_INVALID', 'must be an object'],
  'array-spec': [() => [], 'SPEC_INVALID', 'must be an object'],
  'version-missing': [(s) => delete s.specVersion, 'SPEC_VERSION', 'found undefined'],
  'version-2': [(s) => (s.specVersion = 2), 'SPEC_VERSION', 'found 2'],
  'name-missing': [(s) => delete s.name, 'SPEC_MISSING_FIELD', '"name"'],
  'input-shape-2d': [(s) => (s.inputShape = [3, 8]), 'SPEC_BAD_FIELD', 'inputShape'],
  'input-shape-zero': [(s) => (s.inputShape = [3, 0, 8]), 'SPEC_BAD_FIELD', 'inputShape[1]'],
  'nodes-empty': [(s) => (s.nodes = []), 'SPEC_MISSING_FIELD', 'nodes'],
  'node-null': [(s) => (s.nodes[2] = null), 'SPEC_INVALID', 'nodes[2]'],
  'node-id-missing': [(s) => delete s.nodes[0].id, 'SPEC_MISSING_FIELD', 'nodes[0]'],
  'node-id-proto': [(s) => (s.nodes[0].id = '__proto__'), 'SPEC_UNKNOWN_INPUT', 'node "stem_bn"'],
  'node-id-dots': [(s) => (s.nodes[0].id = 'a..b'), 'SPEC_BAD_FIELD', 'dotted path'],
  'node-id-input': [(s) => (s.nodes[0].id = 'input'), 'SPEC_DUPLICATE_ID', 'already used'],
  'duplicate-id': [(s) => (s.nodes[2].id = 'stem'), 'SPEC_DUPLICATE_ID', '"stem"'],
  'unknown-op': [(s) => (N(s, 'stem_bn').op = 'groupNorm'), 'SPEC_UNKNOWN_OP', '"groupNorm"'],
  'op-missing': [(s) => delete N(s, 'stem_bn').op, 'SPEC_UNKNOWN_OP', 'node "stem_bn"'],
  'inputs-missing': [(s) => delete N(s, 'stem').inputs, 'SPEC_MISSING_FIELD', 'inputs'],
  'inputs-number': [(s) => (N(s, 'stem').inputs = [3]), 'SPEC_BAD_FIELD', 'inputs[0]'],
  'cycle-forward-ref': [(s) => (N(s, 'stem').inputs = ['fc']), 'SPEC_UNKNOWN_INPUT', 'topological'],
  'cycle-self': [(s) => (N(s, 'stem_bn').inputs = ['stem_bn']), 'SPEC_UNKNOWN_INPUT', 'itself'],
  'unknown-input': [(s) => (N(s, 'stem_bn').inputs = ['ghost']), 'SPEC_UNKNOWN_INPUT', '"ghost"'],
  'relu-two-inputs': [
    (s) => N(s, 'stem_relu').inputs.push('stem'),
    'SPEC_BAD_FIELD',
    'takes 1 input',
  ],
  'add-one-input': [(s) => (N(s, 'block.add').inputs = ['stem']), 'SPEC_BAD_FIELD', 'takes 2+'],
  'add-shape-mismatch': [
    (s) => (N(s, 'block.add').inputs = ['input', 'stem']),
    'SPEC_SHAPE',
    '[3, 8, 8]',
  ],
  'conv-out-zero': [(s) => (N(s, 'stem').outChannels = 0), 'SPEC_BAD_FIELD', 'outChannels'],
  'conv-out-negative': [(s) => (N(s, 'stem').outChannels = -8), 'SPEC_BAD_FIELD', 'found -8'],
  'conv-out-float': [(s) => (N(s, 'stem').outChannels = 7.5), 'SPEC_BAD_FIELD', 'found 7.5'],
  'conv-kernel-missing': [
    (s) => delete N(s, 'stem').kernelSize,
    'SPEC_MISSING_FIELD',
    'kernelSize',
  ],
  'conv-kernel-zero': [
    (s) => (N(s, 'stem').kernelSize = [0, 3]),
    'SPEC_BAD_FIELD',
    'kernelSize[0]',
  ],
  'conv-kernel-too-big': [
    (s) => (N(s, 'stem').kernelSize = [13, 13]),
    'SPEC_SHAPE',
    'does not fit',
  ],
  'conv-stride-zero': [(s) => (N(s, 'stem').stride = 0), 'SPEC_BAD_FIELD', 'stride'],
  'conv-padding-negative': [
    (s) => (N(s, 'stem').padding = [-1, 0]),
    'SPEC_BAD_FIELD',
    'padding[0]',
  ],
  'conv-groups-not-dividing': [
    (s) => (N(s, 'block.conv2').groups = 3),
    'SPEC_BAD_FIELD',
    'groups=3',
  ],
  'conv-groups-zero': [(s) => (N(s, 'block.conv2').groups = 0), 'SPEC_BAD_FIELD', 'groups'],
  'conv-bias-string': [(s) => (N(s, 'stem').bias = 'yes'), 'SPEC_BAD_FIELD', 'bias'],
  'linear-on-image': [(s) => (N(s, 'fc').inputs = ['pool']), 'SPEC_SHAPE', 'flatten first'],
  'bn-eps-negative': [(s) => (N(s, 'stem_bn').eps = -1), 'SPEC_BAD_FIELD', 'eps'],
  'pool-padding-too-big': [
    (s) =>
      s.nodes.splice(3, 0, {
        id: 'mp',
        op: 'maxPool',
        inputs: ['stem_relu'],
        kernelSize: 2,
        padding: 2,
      }),
    'SPEC_BAD_FIELD',
    'at most half',
  ],
  'dropout-rate-1': [
    (s) => s.nodes.splice(3, 0, { id: 'do', op: 'dropout', inputs: ['stem_relu'], rate: 1 }),
    'SPEC_BAD_FIELD',
    'rate',
  ],
  'mul-bad-broadcast': [
    (s) => s.nodes.splice(3, 0, { id: 'm', op: 'mul', inputs: ['stem_relu', 'flat'] }),
    'SPEC_UNKNOWN_INPUT',
    '"flat"',
  ],
  'outputs-missing': [(s) => delete s.outputs, 'SPEC_MISSING_FIELD', 'outputs'],
  'outputs-unknown': [(s) => (s.outputs = ['nope']), 'SPEC_UNKNOWN_INPUT', 'outputs[0]'],
  'method-missing': [(s) => delete N(s, 'block.conv1').method, 'SPEC_MISSING_FIELD', 'method'],
  'method-unknown-kind': [
    (s) => (N(s, 'block.conv1').method = { kind: 'hyperconv' }),
    'SPEC_UNKNOWN_METHOD',
    '"hyperconv"',
  ],
  'warehouse-unknown': [
    (s) => (N(s, 'block.conv1').method.warehouse = 'stage9'),
    'SPEC_UNKNOWN_WAREHOUSE',
    '"stage9"',
  ],
  'warehouse-unused': [
    (s) => s.warehouses.push({ id: 'spare', budget: 1 }),
    'SPEC_UNKNOWN_WAREHOUSE',
    '"spare"',
  ],
  'warehouse-duplicate': [
    (s) => s.warehouses.push({ ...s.warehouses[0] }),
    'SPEC_DUPLICATE_ID',
    'used twice',
  ],
  'warehouse-id-missing': [(s) => delete s.warehouses[0].id, 'SPEC_MISSING_FIELD', 'warehouses[0]'],
  'budget-missing': [(s) => delete s.warehouses[0].budget, 'SPEC_MISSING_FIELD', 'budget'],
  'budget-zero': [(s) => (s.warehouses[0].budget = 0), 'BUDGET_INVALID', 'found 0'],
  'budget-negative': [(s) => (s.warehouses[0].budget = -0.5), 'BUDGET_INVALID', 'found -0.5'],
  'budget-string': [(s) => (s.warehouses[0].budget = 'NaN'), 'BUDGET_INVALID', '"NaN"'],
  'budget-null': [(s) => (s.warehouses[0].budget = null), 'BUDGET_INVALID', 'found null'],
  'budget-non-integer': [
    (s) => (s.warehouses[0].budget = 1.5),
    'BUDGET_CANNOT_TILE',
    'must be an integer',
  ],
  'budget-cannot-tile-half': [
    (s) => (s.warehouses[0].budget = 0.5),
    'BUDGET_CANNOT_TILE',
    'multiple of 4',
  ],
  'budget-not-reciprocal': [
    (s) => (s.warehouses[0].budget = 0.4),
    'BUDGET_CANNOT_TILE',
    'must be 1/p',
  ],
  'cell-ratio-not-dividing': [
    (s) => (s.warehouses[0].cellInRatio = 0.75),
    'PLAN_CELL_DOES_NOT_DIVIDE',
    'does not divide',
  ],
  'cell-ratio-above-1': [
    (s) => (s.warehouses[0].cellOutRatio = 2),
    'SPEC_BAD_FIELD',
    'cellOutRatio',
  ],
  'reduction-zero': [(s) => (s.warehouses[0].reduction = 0), 'SPEC_BAD_FIELD', 'reduction'],
  'norm-unknown': [(s) => (s.warehouses[0].norm = 'instance'), 'SPEC_BAD_FIELD', 'norm'],
  'huge-channels': [
    (s) => (N(s, 'stem').outChannels = 1e9),
    'SPEC_SHAPE',
    'at most 2^29 - 1 per tensor',
  ],
  'duplicate-output': [(s) => s.outputs.push('fc'), 'SPEC_DUPLICATE_ID', 'a second time'],
  'output-proto': [(s) => s.outputs.push('__proto__'), 'SPEC_UNKNOWN_INPUT', 'not a node'],
  'huge-input': [(s) => (s.inputShape = [3, 40000, 40000]), 'SPEC_SHAPE', 'inputShape'],
  'mixed-conv-linear': [
    (s) => {
      N(s, 'fc').method.warehouse = 'stage1';
      s.warehouses = s.warehouses.filter((w) => w.id !== 'head');
    },
    'PLAN_MIXED_DIMENSIONS',
    'stage1',
  ],
};
const dir = new URL('./fixtures/bad/specs/', import.meta.url);
mkdirSync(dir, { recursive: true });
for (const f of readdirSync(dir)) rmSync(new URL(f, dir));
for (const [name, [mutate, code, message]] of Object.entries(cases)) {
  let s = base();
  if (mutate.length === 0) s = mutate();
  else mutate(s);
  writeFileSync(
    new URL(`${name}.json`, dir),
    `${JSON.stringify({ expect: { code, message }, spec: s }, null, 1)}\n`,
  );
}
console.log(`wrote ${Object.keys(cases).length} malformed specs`);
