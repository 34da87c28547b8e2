import { onnxInfo } from '@kernelwarehouse/ort-web';
import { readFileBytes } from '../fsio.js';
import { human, type Io, table, UsageError } from '../io.js';

/** `kw onnx-info model.onnx [--json]`: inputs, outputs, op histogram, initializer bytes, opset. */
export function onnxInfoCommand(args: string[], io: Io): number {
  const files = args.filter((a) => !a.startsWith('--'));
  if (files.length !== 1)
    throw new UsageError('give exactly one model file: kw onnx-info model.onnx [--json]');
  // an ONNX model is one protobuf: at most 2^31 - 1 bytes
  const info = onnxInfo(
    readFileBytes(files[0]!, { maxBytes: 2 ** 31 - 1, what: 'an ONNX model (one protobuf)' }),
  );
  if (args.includes('--json')) {
    io.out(`${JSON.stringify(info, null, 2)}\n`);
    return 0;
  }
  const dims = (s: (number | string)[]) => `[${s.join(', ')}]`;
  const weights =
    info.constants > 0
      ? `${info.initializers} initializers, ${human(info.initializerBytes, 'B')} of initializer data; ${info.constants} Constant nodes hold ${human(info.constantBytes, 'B')} of tensor data (weights stored as Constant nodes)`
      : `${info.initializers} initializers, ${human(info.initializerBytes, 'B')} of initializer data`;
  io.out(
    `${files[0]}: IR ${info.irVersion}, opsets ${Object.entries(info.opsets)
      .map(([d, v]) => `${d || 'ai.onnx'} ${v}`)
      .join(', ')}, producer ${info.producer || '-'}\n`,
  );
  io.out(`inputs:  ${info.inputs.map((i) => `${i.name} ${dims(i.shape)}`).join(', ')}\n`);
  io.out(`outputs: ${info.outputs.map((i) => `${i.name} ${dims(i.shape)}`).join(', ')}\n`);
  io.out(`${info.nodes} nodes, ${weights}\n\n`);
  const nested = Object.keys(info.subgraphOps).length > 0;
  const count = (h: Record<string, number>, op: string) => h[op] ?? 0;
  const total = (op: string) => count(info.ops, op) + count(info.subgraphOps, op);
  const rows: (string | number)[][] = [
    nested ? ['op', 'count', 'in control-flow bodies (Scan, Loop, If)'] : ['op', 'count'],
  ];
  const ops = [...new Set([...Object.keys(info.ops), ...Object.keys(info.subgraphOps)])];
  for (const op of ops.sort((a, b) => total(b) - total(a)))
    rows.push(
      nested ? [op, count(info.ops, op), count(info.subgraphOps, op)] : [op, count(info.ops, op)],
    );
  io.out(`${table(rows, nested ? ['l', 'r', 'r'] : ['l', 'r'])}\n`);
  return 0;
}
