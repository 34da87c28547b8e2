#!/usr/bin/env node
import { KW_ERROR_CODES, KW_ERROR_DESCRIPTIONS } from '../packages/core/dist/index.js';
// Writes docs/errors.md from KW_ERROR_CODES / KW_ERROR_DESCRIPTIONS in @kernelwarehouse/core
// (build core first). `--check` exits 1 when the page is out of date.
import { writeOrCheck } from './lib/generated-page.mjs';

const page = `# Error codes

Every package of kernelwarehouse.js throws \`KwError\` for bad input, with a stable \`code\`, a
message naming the place, the expected and the found value, and structured \`details\`.
This page is generated from \`packages/core/src/errors.ts\` by \`pnpm docs:errors\`.

\`\`\`js
import { KwError, validateSpec } from '@kernelwarehouse/core';
try {
  validateSpec({ specVersion: 1, name: 'x', inputShape: [3, 8, 8], nodes: [{ id: 'c', op: 'conv3d', inputs: ['input'] }], outputs: ['c'] });
} catch (e) {
  if (!(e instanceof KwError) || e.code !== 'SPEC_UNKNOWN_OP') throw e;
  console.log(e.code, e.message);
}
\`\`\`

| code | meaning |
|---|---|
${KW_ERROR_CODES.map((c) => `| \`${c}\` | ${KW_ERROR_DESCRIPTIONS[c]} |`).join('\n')}

## How the refusals are tested

- Corpora of malformed inputs, each with the code and the words its message must contain:
  specs (\`packages/core/test/fixtures/bad/specs\`, written by \`test/make-bad-specs.mjs\`),
  hostile safetensors files (\`packages/core/test/safetensors.test.ts\`), ONNX bytes that are
  truncated or not ONNX (\`packages/ort-web/src/ort.test.ts\`), and tensors of the wrong dtype,
  rank, channels, size or with NaN/Inf run through the reference executor and an ONNX session
  (\`packages/ort-web/src/bad-input.test.ts\`).
- Property tests (fast-check) over the planner, random spec edits and random byte edits of a
  safetensors file: whatever the input, the result is consistent or a \`KwError\`, never
  another exception. CI runs each with a fixed seed. A longer local hunt:

  \`\`\`sh
  KW_FUZZ_SCALE=50 KW_FUZZ_SEED=$RANDOM npx -y pnpm@10.34.9 --filter @kernelwarehouse/core test
  \`\`\`

  \`KW_FUZZ_SCALE\` multiplies every run count (CI: 1000 spec edits, 400 file edits, 400 planner
  cases), \`KW_FUZZ_SEED\` replaces the fixed seeds; a failure prints its seed and the shrunk
  input, so it replays. A 50x run (seed 31337) found that a spec with 10^9 channels planned to a
  parameter count beyond 2^53, where the sums stop being exact; specs now refuse any tensor over
  2^31 - 1 elements (\`SPEC_SHAPE\`).
- Faults: \`kw train\` checkpoints are written atomically and resumed bit-identically after
  SIGINT or SIGKILL; a full disk or an unwritable folder gives one line naming the path
  (\`packages/cli/src/resume.test.ts\`).
`;
const target = new URL('../docs/errors.md', import.meta.url);
writeOrCheck(target, page, 'pnpm docs:errors');
