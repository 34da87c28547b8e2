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
- One test file per layer for the classes of hostile input found by an outside run (issue 15):
  \`packages/core/test/hostile-spec.test.ts\`, \`packages/ort-web/src/hostile.test.ts\`,
  \`packages/cli/src/hostile.test.ts\`, with the safetensors corpus above. Each class and its
  answer:
  - *Depth*: JSON nested 10^4-10^5 deep in a safetensors header is refused past 64 levels
    (\`SAFETENSORS_HEADER\`) by one iterative scan; error messages render deep values
    iteratively and bounded (\`describeValue\`, \`boundedJson\`); spec fingerprints are iterative.
  - *Sizes*: one tensor, and all parameters of one model together, hold at most 2^29 - 1 float32
    elements (2 GiB: the ONNX protobuf limit, wasm32 memory, V8 typed arrays), refused in
    validation (\`SPEC_SHAPE\`) before any backend allocates. (It was 2^31 - 1 per tensor: a layer
    of 8 GiB passed and crashed the ONNX export with a RangeError.)
  - *Unbounded reads*: the CLI stats before it opens; devices (\`/dev/zero\`), FIFOs, sockets and
    folders are refused, reads are capped at the size the format allows (ONNX: 2^31 - 1 bytes;
    IDX: 2^30 values) (\`IO_ERROR\`).
  - *Decompression*: a \`.gz\` IDX that is not gzip, is truncated, or inflates past what its
    header needs (a gzip bomb) stops at that size (\`IO_ERROR\`).
  - *File-system errors*: every fs call of the CLI goes through \`packages/cli/src/fsio.ts\`:
    ENOTDIR, EROFS, ENOSPC, EACCES, EIO, ... are \`IO_ERROR\` naming the path and the reason in
    words ("the file system is read-only", not "does not exist").
  - *Paths from names*: names that become folders (\`--triton-name\`, \`tritonConfig\`) may not be
    \`.\` or \`..\` (\`ARGUMENT_INVALID\`).
  - *All or nothing*: the outputs of one command go to temporary files and are renamed into place
    together (renames rolled back, created folders removed on failure); a character device such as
    \`/dev/full\` is written in place, never replaced by a regular file.
  - *Maps keyed by untrusted names*: op types, opset domains, safetensors dtypes, tensor names and
    \`__metadata__\` keys named \`__proto__\`, \`constructor\` or \`toString\` are names like any
    other (null-prototype objects, own-key lookups).
  - *Formats*: a key given twice in a safetensors header (\`SAFETENSORS_HEADER\`), ONNX varints
    above 2^64 (\`ONNX_INVALID\`); ONNX int64 dims read signed (-1, not 18446744073709552000);
    \`kw onnx-info\` counts weights held in Constant nodes.
  - *Validation cache*: a spec mutated after validation is validated again (the cache is guarded
    by a structural fingerprint); the same node twice in \`outputs\` is \`SPEC_DUPLICATE_ID\`.
  - *Data*: IDX labels must be 0..K-1 with every class in the training set, K >= 2, and test
    labels among them (\`DATA_INVALID\`, checked at load time, in loops: 500,000 labels are fine).
- Property tests (fast-check) over the planner, random spec edits, random byte edits of a
  safetensors file and of an ONNX file, and random JSON nesting in safetensors headers: whatever
  the input, the result is consistent or a \`KwError\`, never another exception. CI runs each
  with a fixed seed. A longer local hunt:

  \`\`\`sh
  KW_FUZZ_SCALE=50 KW_FUZZ_SEED=$RANDOM npx -y pnpm@10.34.9 --filter @kernelwarehouse/core test
  \`\`\`

  \`KW_FUZZ_SCALE\` multiplies every run count (CI: 1000 spec edits, 400 safetensors edits, 200
  safetensors nestings, 400 planner cases, 400 ONNX edits), \`KW_FUZZ_SEED\` replaces the fixed
  seeds; a failure prints its seed and the shrunk input, so it replays. A 50x run (seed 31337)
  found that a spec with 10^9 channels planned to a parameter count beyond 2^53, where the sums
  stop being exact; specs refuse any tensor over the size limit (\`SPEC_SHAPE\`).
- Faults: \`kw train\` checkpoints are written atomically and resumed bit-identically after
  SIGINT or SIGKILL; a full disk or an unwritable folder gives one line naming the path
  (\`packages/cli/src/resume.test.ts\`).
`;
const target = new URL('../docs/errors.md', import.meta.url);
writeOrCheck(target, page, 'pnpm docs:errors');
