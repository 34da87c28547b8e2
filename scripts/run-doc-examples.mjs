#!/usr/bin/env node
// Runs every ```js code block of the READMEs and docs/ as an ES module, so the examples in
// the docs cannot rot. A block runs from the folder of the package it documents (so its
// imports resolve through the workspace), or from packages/core for docs/ pages (from
// packages/tfjs for a docs/ block that imports @kernelwarehouse/tfjs, whose TensorFlow.js and
// zoo dependencies only that package has).
// A block whose first line is `// no-run` is skipped (used for shell-dependent snippets).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const files = [];
for (const pkg of readdirSync(join(root, 'packages'))) {
  const f = join(root, 'packages', pkg, 'README.md');
  if (existsSync(f)) files.push(f);
}
const walk = (d) => {
  if (!existsSync(d)) return;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    if (e.isDirectory()) walk(join(d, e.name));
    else if (e.name.endsWith('.md')) files.push(join(d, e.name));
  }
};
walk(join(root, 'docs'));

let ran = 0;
let failed = 0;
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const blocks = [...text.matchAll(/```(?:js|javascript|mjs)\n([\s\S]*?)```/g)].map((m) => m[1]);
  const docCwd = file.includes('/packages/') ? dirname(file) : join(root, 'packages', 'core');
  blocks.forEach((code, i) => {
    if (code.startsWith('// no-run')) return;
    const cwd =
      !file.includes('/packages/') && code.includes("from '@kernelwarehouse/tfjs'")
        ? join(root, 'packages', 'tfjs')
        : docCwd;
    const dir = mkdtempSync(join(cwd, '.doc-example-'));
    const script = join(dir, 'example.mjs');
    writeFileSync(script, code);
    const label = `${relative(root, file)} block ${i + 1}`;
    try {
      execFileSync(process.execPath, [script], {
        cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 120_000,
      });
      console.log(`ok   ${label}`);
      ran++;
    } catch (e) {
      failed++;
      console.log(`FAIL ${label}\n${String(e.stderr ?? e.message).slice(0, 2000)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
console.log(`doc examples: ${ran} passed, ${failed} failed`);
if (failed > 0 || ran === 0) process.exit(1);
