import { initWeights, isKwError } from '@kernelwarehouse/core';
import { tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as ortNode from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { onnxInfo, toOnnx, tritonConfig } from './index.js';

const spec = tinyKwSpec({ budget: 1 });
const weights = initWeights(spec, { seed: 3 });
const dynamic = toOnnx(spec, weights);
const fixed = toOnnx(spec, weights, { batch: 4 });

/** The `name:` / `dims:` pairs of an `input [...]` or `output [...]` block. */
function block(text: string, which: 'input' | 'output') {
  const body = text.match(new RegExp(`^${which} \\[\\n([\\s\\S]*?)\\n\\]`, 'm'))?.[1] ?? '';
  return [...body.matchAll(/name: "([^"]+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]/g)].map(
    (m) => ({ name: m[1], type: m[2], dims: m[3]!.split(', ').map(Number) }),
  );
}

describe('tritonConfig', () => {
  it('dynamic-batch export: names and types from the file, batch dim left out, dynamic batching on', async () => {
    const text = tritonConfig(dynamic, {
      name: 'tiny_kw',
      maxBatchSize: 16,
      instances: 2,
      intraOpThreads: 2,
    });
    // the names Triton must use are the ones a real onnxruntime session reports
    const session = await ortNode.InferenceSession.create(dynamic);
    expect(block(text, 'input')).toEqual([
      { name: session.inputNames[0], type: 'TYPE_FP32', dims: [...spec.inputShape] },
    ]);
    const info = onnxInfo(dynamic);
    expect(block(text, 'output')).toEqual([
      { name: session.outputNames[0], type: 'TYPE_FP32', dims: info.outputs[0]!.shape.slice(1) },
    ]);
    expect(text).toMatch(/^name: "tiny_kw"$/m);
    expect(text).toMatch(/^platform: "onnxruntime_onnx"$/m);
    expect(text).toMatch(/^max_batch_size: 16$/m);
    expect(text).toMatch(/count: 2\n\s+kind: KIND_CPU/);
    expect(text).toMatch(/dynamic_batching \{\n\s+max_queue_delay_microseconds: 100\n\}/);
    expect(text).toMatch(/key: "intra_op_thread_count"\n\s+value: \{ string_value: "2" \}/);
    // braces and brackets balance (a malformed text config is refused by Triton at load)
    const count = (c: string) => text.split(c).length - 1;
    expect(count('{')).toBe(count('}'));
    expect(count('[')).toBe(count(']'));
  });

  it('fixed-batch export: max_batch_size 0 and the full dims, no dynamic batching', () => {
    const text = tritonConfig(fixed, { name: 'tiny_kw_b4', kind: 'gpu' });
    expect(text).toMatch(/^max_batch_size: 0$/m);
    expect(block(text, 'input')[0]!.dims).toEqual([4, ...spec.inputShape]);
    expect(text).toContain('kind: KIND_GPU');
    expect(text).not.toContain('dynamic_batching');
  });

  it('refuses what Triton would refuse, naming the field', () => {
    const bad: [Uint8Array, Parameters<typeof tritonConfig>[1], string, RegExp][] = [
      [
        fixed,
        { name: 'm', maxBatchSize: 8 },
        'ARGUMENT_INVALID',
        /needs a dynamic batch dim.*\[4, 3, 8, 8\]/,
      ],
      [dynamic, { name: 'my model' }, 'ARGUMENT_INVALID', /name must be a folder name/],
      [
        dynamic,
        { name: 'm', instances: 0 },
        'ARGUMENT_INVALID',
        /instances must be an integer >= 1; found 0/,
      ],
      [
        dynamic,
        { name: 'm', maxBatchSize: 2.5 },
        'ARGUMENT_INVALID',
        /maxBatchSize must be an integer >= 0; found 2.5/,
      ],
      [
        dynamic,
        { name: 'm', kind: 'tpu' as 'cpu' },
        'ARGUMENT_INVALID',
        /kind must be "cpu" or "gpu"; found "tpu"/,
      ],
      [new Uint8Array([1, 2, 3]), { name: 'm' }, 'ONNX_INVALID', /./],
    ];
    for (const [bytes, opts, code, msg] of bad) {
      let err: unknown;
      try {
        tritonConfig(bytes, opts);
      } catch (e) {
        err = e;
      }
      expect(
        isKwError(err, code as 'ARGUMENT_INVALID'),
        `${JSON.stringify(opts)}: ${String(err)}`,
      ).toBe(true);
      expect((err as Error).message).toMatch(msg);
    }
  });
});
