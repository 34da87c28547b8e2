#!/usr/bin/env node
// Adds up the vitest JSON reports (packages/*/test-results.json) written by `turbo run test`
// and prints one closing line "N passed, N failed, N skipped". Exits 1 when any test
// failed, when a package with tests left no report, or when no test ran at all.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
let passed = 0;
let failed = 0;
let skipped = 0;
let missing = 0;
const rows = [];
for (const dir of ['packages', 'benchmarks']) {
  const base = join(root, dir);
  if (!existsSync(base)) continue;
  const candidates = dir === 'benchmarks' ? [base] : readdirSync(base).map((d) => join(base, d));
  for (const pkg of candidates) {
    const file = join(pkg, 'test-results.json');
    if (!existsSync(file)) {
      // a package with tests that wrote no report did not finish (crash, build error, killed)
      const manifest = join(pkg, 'package.json');
      if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).scripts?.test) {
        missing++;
        rows.push(`${pkg.slice(root.length)}: no report (its tests did not run to the end)`);
      }
      continue;
    }
    const r = JSON.parse(readFileSync(file, 'utf8'));
    passed += r.numPassedTests;
    failed += r.numFailedTests;
    skipped += r.numPendingTests + (r.numTodoTests ?? 0);
    rows.push(`${pkg.slice(root.length)}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
  }
}
for (const r of rows) console.log(`  ${r}`);
console.log(
  `${passed} passed, ${failed} failed, ${skipped} skipped${missing ? `, ${missing} package(s) without a report` : ''}`,
);
if (failed > 0 || missing > 0 || passed === 0) process.exit(1);
