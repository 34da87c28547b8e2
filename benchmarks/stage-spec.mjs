import { SpecBuilder } from '@kernelwarehouse/core';

/**
 * Two 3x3 convs C -> C at S x S: plain (budget null) or KernelWarehouse sharing one warehouse, as
 * the layers of a stage do (cells halved below b = 1, as the official ResNet configs).
 */
export function stageSpec(budget, C, S) {
  const b = new SpecBuilder(`bench-${budget ?? 'plain'}`, [C, S, S]);
  const geo = { outChannels: C, kernelSize: 3, padding: 1 };
  if (budget === null) {
    b.output(b.conv2d('conv2', b.conv2d('conv1', b.input, geo), geo));
  } else {
    const ratio = budget < 1 ? 0.5 : 1;
    b.warehouse({ id: 'w', budget, cellInRatio: ratio, cellOutRatio: ratio });
    const x = b.dynamicConv2d('conv1', b.input, geo, { kind: 'kw', warehouse: 'w' });
    b.output(b.dynamicConv2d('conv2', x, geo, { kind: 'kw', warehouse: 'w' }));
  }
  return b.build();
}
