#!/usr/bin/env node
// Runs every package's tests through turbo, one package at a time (--concurrency=1: each vitest
// already uses every core, two at once oversubscribe a small machine) and without stopping at the
// first failing package (--continue), then prints scripts/test-summary.mjs's closing lines, which
// name every package that failed or did not report. Exits non-zero when turbo or the summary does.
// Extra arguments go to turbo (e.g. --filter=@kernelwarehouse/core).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
// a report left by an earlier run must not stand in for a package that fails to run now (turbo
// restores the reports of packages it takes from its cache)
for (const d of readdirSync(join(root, 'packages'))) {
  const f = join(root, 'packages', d, 'test-results.json');
  if (existsSync(f)) rmSync(f);
}
const local = join(root, 'node_modules', '.bin', 'turbo');
const turbo = spawnSync(
  existsSync(local) ? local : 'turbo',
  ['run', 'test', '--concurrency=1', '--continue', ...process.argv.slice(2)],
  { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' },
);
const summary = spawnSync(process.execPath, [join(root, 'scripts', 'test-summary.mjs')], {
  cwd: root,
  stdio: 'inherit',
});
if (turbo.error) console.error(`cannot start turbo: ${turbo.error.message}`);
process.exit(turbo.status !== 0 || turbo.error ? 1 : (summary.status ?? 1));
