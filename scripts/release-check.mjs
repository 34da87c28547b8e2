#!/usr/bin/env node
// Dry run of the release flow (`pnpm version-packages`) in a throwaway clone of HEAD plus the
// working tree's pending changesets: every public package must get a CHANGELOG.md and a version
// above the current one, private packages (docs, benchmarks) must be left alone, and the
// changeset files must be consumed. Nothing is published and the repository is not touched.
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'kw-release-'));
const problems = [];
try {
  execFileSync('git', ['clone', '-q', root, tmp]);
  // the working tree's changesets (a changeset may not be committed yet when this runs locally)
  cpSync(join(root, '.changeset'), join(tmp, '.changeset'), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(tmp, 'node_modules'));
  const workspaces = ['packages', 'docs', 'benchmarks'].flatMap((d) =>
    d === 'packages' ? readdirSync(join(tmp, d)).map((p) => join(d, p)) : [d],
  );
  const before = new Map(
    workspaces.map((w) => [w, JSON.parse(readFileSync(join(tmp, w, 'package.json'), 'utf8'))]),
  );
  const pending = readdirSync(join(tmp, '.changeset')).filter(
    (f) => f.endsWith('.md') && f !== 'README.md',
  );
  execFileSync(join(root, 'node_modules', '.bin', 'changeset'), ['version'], {
    cwd: tmp,
    stdio: 'pipe',
  });
  const semver = (v) => v.split('.').map(Number);
  const newer = (a, b) => {
    const [x, y] = [semver(a), semver(b)];
    for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
    return false;
  };
  for (const [w, pkg] of before) {
    const after = JSON.parse(readFileSync(join(tmp, w, 'package.json'), 'utf8'));
    const log = join(tmp, w, 'CHANGELOG.md');
    if (pkg.private) {
      if (after.version !== pkg.version) problems.push(`${pkg.name} is private but was versioned`);
      if (existsSync(log)) problems.push(`${pkg.name} is private but got a CHANGELOG.md`);
      continue;
    }
    if (pending.length === 0) continue;
    if (!newer(after.version, pkg.version))
      problems.push(`${pkg.name}: version ${pkg.version} -> ${after.version} (not raised)`);
    if (!existsSync(log)) problems.push(`${pkg.name}: no CHANGELOG.md written`);
    else if (!readFileSync(log, 'utf8').includes(`## ${after.version}`))
      problems.push(`${pkg.name}: CHANGELOG.md has no "## ${after.version}" section`);
    else console.log(`release-check: ${pkg.name} ${pkg.version} -> ${after.version}, CHANGELOG ok`);
  }
  const left = readdirSync(join(tmp, '.changeset')).filter(
    (f) => f.endsWith('.md') && f !== 'README.md',
  );
  if (left.length) problems.push(`changesets not consumed: ${left.join(', ')}`);
  console.log(`release-check: ${pending.length} pending changesets`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (problems.length) {
  for (const p of problems) console.error(`release-check: ${p}`);
  process.exit(1);
}
