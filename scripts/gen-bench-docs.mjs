#!/usr/bin/env node
// Writes docs/benchmarks.md from benchmarks/README.md (what each benchmark compares and how to
// run it) and benchmarks/RESULTS.md (the recorded figures, each with the command that produced
// it). `--check` exits 1 when the page is out of date.
import { readFileSync } from 'node:fs';
import { writeOrCheck } from './lib/generated-page.mjs';

const read = (f) => readFileSync(new URL(`../benchmarks/${f}`, import.meta.url), 'utf8');
// drop each file's own title; shift RESULTS.md's sections one level down
const body = (text) => text.replace(/^# .*\n+/, '').trim();
const results = body(read('RESULTS.md')).replace(/^## /gm, '### ');
const page = `# Benchmarks

This page is generated from \`benchmarks/README.md\` and \`benchmarks/RESULTS.md\` by
\`pnpm docs:bench\`; every figure below comes from the command printed above its table, which
anyone can re-run from a clone (after \`pnpm install\` and \`pnpm build\`).

## How they are run

${body(read('README.md'))}

## Results

${results}
`;
writeOrCheck(new URL('../docs/benchmarks.md', import.meta.url), page, 'pnpm docs:bench');
