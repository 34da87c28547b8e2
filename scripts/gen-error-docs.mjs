#!/usr/bin/env node
// Writes docs/errors.md from KW_ERROR_CODES / KW_ERROR_DESCRIPTIONS in @kernelwarehouse/core
// (build core first). `--check` exits 1 when the page is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { KW_ERROR_CODES, KW_ERROR_DESCRIPTIONS } from '../packages/core/dist/index.js';

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
if (process.argv.includes('--check')) {
  let old = '';
  try {
    old = readFileSync(target, 'utf8');
  } catch {}
  if (old !== page) {
    console.error('docs/errors.md is out of date: run pnpm docs:errors');
    process.exit(1);
  }
  console.log('docs/errors.md is up to date');
} else {
  writeFileSync(target, page);
  console.log('wrote docs/errors.md');
}
