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
`;
const target = new URL('../docs/errors.md', import.meta.url);
writeOrCheck(target, page, 'pnpm docs:errors');
