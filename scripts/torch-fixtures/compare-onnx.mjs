#!/usr/bin/env node
// Compare an exported ONNX model with PyTorch's outputs written by make_fixtures.py.
// Usage (build first): node scripts/torch-fixtures/compare-onnx.mjs model.onnx x.io.safetensors [output|output_ema]
// Prints max |onnx - torch| / max |torch| and exits 1 above 1e-3.
import { readFileSync } from 'node:fs';
import { readSafetensors } from '../../packages/core/dist/index.js';
import { createSession, runSession } from '../../packages/ort-web/dist/index.js';

const [onnx, io, key = 'output'] = process.argv.slice(2);
if (!onnx || !io) {
  console.error('usage: compare-onnx.mjs model.onnx x.io.safetensors [output|output_ema]');
  process.exit(2);
}
const t = readSafetensors(new Uint8Array(readFileSync(io))).tensors;
const input = t.get('input');
const want = t.get(key).data;
const session = await createSession(new Uint8Array(readFileSync(onnx)));
const [got] = await runSession(session, { shape: input.shape, data: input.data });
let num = 0;
let den = 0;
for (let i = 0; i < want.length; i++) {
  num = Math.max(num, Math.abs(got.data[i] - want[i]));
  den = Math.max(den, Math.abs(want[i]));
}
const rel = num / den;
console.log(
  `${onnx} vs ${key}: max abs error ${num.toExponential(3)}, relative ${rel.toExponential(3)} (max |torch| ${den.toFixed(4)})`,
);
process.exit(rel < 1e-3 ? 0 : 1);
