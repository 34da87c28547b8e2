// Prints the ONNX parity figures quoted in docs and notes: max relative error of onnxruntime-web
// (wasm, in Node) against the core reference for each KW variant, zoo backbone and method, batch 1 and 3
// from one exported (dynamic-batch) model. Run: pnpm --filter @kernelwarehouse/benchmarks parity
import { initWeights, maxRelativeError, runReference } from '@kernelwarehouse/core';
import { perturb, Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import { createSession, runSession, toOnnx } from '@kernelwarehouse/ort-web';
import { createModel } from '@kernelwarehouse/zoo';

const cases = [
  ['tiny KW b=1', tinyKwSpec({ budget: 1 }), 0],
  ['tiny KW b=1, tau=0.5', tinyKwSpec({ budget: 1 }), 0.5],
  ['tiny KW b=2', tinyKwSpec({ budget: 2 }), 0],
  [
    'tiny KW b=1/2, halved cells, KW classifier',
    tinyKwSpec({ budget: 0.5, cellRatio: 0.5, kwClassifier: true }),
    0,
  ],
  ['tiny KW LayerNorm attention', tinyKwSpec({ budget: 1, norm: 'layer', kwClassifier: true }), 0],
  ['tiny KW non-local basis, tau=0.3', tinyKwSpec({ budget: 1, nonlocalBasisRatio: 0.25 }), 0.3],
  ['resnet8_cifar plain', createModel('resnet8_cifar', {}), 0],
  ['resnet8_cifar KW 1x', createModel('resnet8_cifar', { budget: 1 }), 0],
  [
    'resnet18 KW 1x (16x16, width 0.25)',
    createModel('resnet18', { budget: 1, inputShape: [3, 16, 16], width: 0.25 }),
    0,
  ],
  [
    'resnet50 KW 1/2x (16x16, width 0.25)',
    createModel('resnet50', { budget: 0.5, inputShape: [3, 16, 16], width: 0.25 }),
    0,
  ],
  [
    'mobilenetv2_050 KW 1/2x (16x16)',
    createModel('mobilenetv2_050', { budget: 0.5, inputShape: [3, 16, 16] }),
    0,
  ],
  [
    'mobilenetv2_050 KW 4x (16x16)',
    createModel('mobilenetv2_050', { budget: 4, inputShape: [3, 16, 16] }),
    0,
  ],
  [
    'convnext_tiny KW 1x (16x16, width 0.125)',
    createModel('convnext_tiny', { budget: 1, inputShape: [3, 16, 16], width: 0.125 }),
    0,
  ],
  ...[
    ['CondConv', { kind: 'condconv', experts: 4 }],
    ['DY-Conv', { kind: 'dyconv', kernels: 4 }],
    ['ODConv 4x', { kind: 'odconv', kernels: 4 }],
    ['WeightNet', { kind: 'weightnet' }],
    ['DO-Conv (folded)', { kind: 'doconv' }],
    ['SE', { kind: 'se' }],
  ].map(([label, method]) => [
    `resnet8_cifar ${label} (12x12)`,
    createModel('resnet8_cifar', { method, inputShape: [3, 12, 12] }),
    0,
  ]),
  [
    'mobilenetv2_050 ODConv 4x (16x16)',
    createModel('mobilenetv2_050', {
      method: { kind: 'odconv', kernels: 4 },
      inputShape: [3, 16, 16],
    }),
    0,
  ],
  [
    'slak_tiny (folded; 16x16, width 0.05)',
    createModel('slak_tiny', { inputShape: [3, 16, 16], width: 0.05, classes: 3 }),
    0,
  ],
];
console.log('| case | tau | max rel. error, batch 1 | batch 3 |');
console.log('|---|---:|---:|---:|');
for (const [label, spec, tau] of cases) {
  const rng = new Rng(1);
  const w = initWeights(spec, { seed: 1 });
  for (const [k, t] of w)
    w.set(
      k,
      k.endsWith('running_var')
        ? { shape: t.shape, data: t.data.map(() => 0.5 + rng.uniform()) }
        : perturb(rng, t, 0.1),
    );
  const session = await createSession(toOnnx(spec, w, { temperature: tau }), { numThreads: 1 });
  const errs = [];
  for (const n of [1, 3]) {
    const x = randomInput(new Rng(100 + n), [n, ...spec.inputShape]);
    const [y] = await runSession(session, x);
    errs.push(
      maxRelativeError(
        y.data,
        runReference(spec, w, x, { temperature: tau }).get(spec.outputs[0]).data,
      ),
    );
  }
  console.log(`| ${label} | ${tau} | ${errs[0].toExponential(2)} | ${errs[1].toExponential(2)} |`);
}
