// ResNet18 with KernelWarehouse placed as the official models/kw_resnet.py does
// (reference/kernelwarehouse.md §3.2). Built here, in the test tree, on purpose: the zoo
// package has its own builders; these tests pin core's planner against the paper's numbers
// independently of it.
import { type ModelSpec, SpecBuilder } from '../src/index.js';

export function resnet18Kw(budget: number | null, input = 224): ModelSpec {
  const b = new SpecBuilder(`resnet18-kw-${budget}`, [3, input, input]);
  const ratio = budget !== null && budget < 1 ? 0.5 : 1;
  if (budget !== null) {
    for (const s of [0, 1, 2, 3])
      b.warehouse({ id: `stage${s}`, budget, cellInRatio: ratio, cellOutRatio: ratio });
  }
  const conv = (
    id: string,
    x: string,
    out: number,
    k: number,
    stride: number,
    wh: string | null,
  ) => {
    const geo = { outChannels: out, kernelSize: k, stride, padding: (k - 1) / 2 };
    return budget === null || wh === null
      ? b.conv2d(id, x, geo)
      : b.dynamicConv2d(id, x, geo, { kind: 'kw', warehouse: wh });
  };
  let x = b.conv2d('conv1', b.input, { outChannels: 64, kernelSize: 7, stride: 2, padding: 3 });
  x = b.relu('relu', b.batchNorm('bn1', x));
  x = b.maxPool('maxpool', x, 3, 2, 1);
  let cin = 64;
  const planes = [64, 128, 256, 512];
  planes.forEach((p, stage) => {
    for (let blk = 0; blk < 2; blk++) {
      const pre = `layer${stage + 1}.${blk}`;
      const stride = stage > 0 && blk === 0 ? 2 : 1;
      // handover: the first conv of a stage's first block (and its downsample) use the previous stage's warehouse
      const wh1 = `stage${blk === 0 ? Math.max(stage - 1, 0) : stage}`;
      let y = conv(`${pre}.conv1`, x, p, 3, stride, wh1);
      y = b.relu(`${pre}.relu1`, b.batchNorm(`${pre}.bn1`, y));
      y = b.batchNorm(`${pre}.bn2`, conv(`${pre}.conv2`, y, p, 3, 1, `stage${stage}`));
      let idn = x;
      if (stride !== 1 || cin !== p) {
        idn = b.batchNorm(
          `${pre}.downsample.1`,
          conv(`${pre}.downsample.0`, x, p, 1, stride, `stage${stage - 1}`),
        );
      }
      x = b.relu(`${pre}.relu`, b.addNodes(`${pre}.add`, [idn, y]));
      cin = p;
    }
  });
  x = b.flatten('flatten', b.globalAvgPool('avgpool', x));
  b.output(b.linear('fc', x, 1000));
  return b.build();
}
