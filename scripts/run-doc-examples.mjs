#!/usr/bin/env node
// Runs every code block of the package READMEs and docs/, so the examples in the docs cannot
// rot. A ```js block runs as an ES module from the folder of the package it documents (so its
// imports resolve through the workspace), or from docs/ (a private workspace package that
// depends on every package) for docs/ pages. A ```sh block runs in bash (-e -o pipefail) in an
// empty temporary folder, with `kw` on the PATH as this checkout's CLI.
// A block whose first line is `// no-run: why` (js) or `# no-run: why` (sh) is skipped and
// listed with its reason: long trainings and interactive Ctrl-C runs, which tests cover.
// Every block that runs must check its result, not only run: a js block must contain an
// `assert` (node:assert) or a `throw`, a sh block a `grep`, `test`, `[ ... ]` or `cmp`; a block
// without one fails.
// `node scripts/run-doc-examples.mjs methods/` runs only the pages whose path contains the text.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
const only = process.argv[2];
if (only) files.splice(0, files.length, ...files.filter((f) => relative(root, f).includes(only)));

// `kw` for sh blocks: this checkout's CLI
const bin = mkdtempSync(join(tmpdir(), 'kw-doc-bin-'));
writeFileSync(
  join(bin, 'kw'),
  `#!/bin/sh\nexec "${process.execPath}" "${join(root, 'packages', 'cli', 'bin', 'kw.js')}" "$@"\n`,
  { mode: 0o755 },
);

let ran = 0;
let failed = 0;
const skipped = [];
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const blocks = [...text.matchAll(/```(js|javascript|mjs|sh)\n([\s\S]*?)```/g)].map((m) => ({
    sh: m[1] === 'sh',
    code: m[2],
  }));
  const pkgCwd = file.includes('/packages/') ? dirname(file) : join(root, 'docs');
  blocks.forEach(({ sh, code }, i) => {
    const label = `${relative(root, file)} block ${i + 1}`;
    const noRun = code.match(sh ? /^# no-run(?::\s*(.*))?\n/ : /^\/\/ no-run(?::\s*(.*))?\n/);
    if (noRun) {
      skipped.push(`${label}: ${noRun[1] ?? 'no reason given'}`);
      return;
    }
    const checks = sh ? /\b(grep|test|cmp)\b|\[ /.test(code) : /\bassert\b|\bthrow\b/.test(code);
    if (!checks) {
      failed++;
      console.log(
        `FAIL ${label}: it asserts nothing about its result (add ${sh ? 'a grep, test or [ ... ]' : "an assert (import assert from 'node:assert/strict') or a throw"})`,
      );
      return;
    }
    const dir = mkdtempSync(join(sh ? tmpdir() : pkgCwd, '.doc-example-'));
    const script = join(dir, sh ? 'example.sh' : 'example.mjs');
    writeFileSync(script, code);
    try {
      if (sh) {
        execFileSync('bash', ['-e', '-o', 'pipefail', script], {
          cwd: dir,
          env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
          stdio: ['ignore', 'pipe', 'pipe'],
          timeout: 300_000,
        });
      } else {
        execFileSync(process.execPath, [script], {
          cwd: pkgCwd,
          stdio: ['ignore', 'pipe', 'pipe'],
          timeout: 120_000,
        });
      }
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
rmSync(bin, { recursive: true, force: true });
for (const s of skipped) console.log(`skip ${s}`);
console.log(
  `doc examples: ${ran} passed, ${failed} failed, ${skipped.length} not run (reasons above)`,
);
if (failed > 0 || ran === 0) process.exit(1);
