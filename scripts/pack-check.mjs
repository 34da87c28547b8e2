#!/usr/bin/env node
// Release check: packs every publishable package (pnpm pack rewrites workspace:* ranges),
// installs each one ALONE into an empty folder outside the workspace with npm (its own
// declared dependencies only; sibling packages come from their packed tarballs, everything
// else from the npm registry), then imports it and runs the first ```js block of its README.
// Usage: node scripts/pack-check.mjs [package-dir-name ...]   (build first)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);
const pkgs = readdirSync(join(root, 'packages'))
  .filter((d) => existsSync(join(root, 'packages', d, 'package.json')))
  .map((d) => ({
    dir: d,
    json: JSON.parse(readFileSync(join(root, 'packages', d, 'package.json'), 'utf8')),
  }))
  .filter((p) => !p.json.private && (only.length === 0 || only.includes(p.dir)));

// npm run inside `pnpm run` inherits pnpm's npm_config_* settings, which npm warns about
const npmEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_config_')),
);

const out = mkdtempSync(join(tmpdir(), 'kw-pack-'));
const tarballs = new Map();
const pnpm = ['-y', 'pnpm@10.34.9'];
for (const p of readdirSync(join(root, 'packages'))) {
  const dir = join(root, 'packages', p);
  if (!existsSync(join(dir, 'package.json'))) continue;
  const json = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (json.private) continue;
  const res = execFileSync('npx', [...pnpm, 'pack', '--pack-destination', out], {
    cwd: dir,
    encoding: 'utf8',
    env: npmEnv,
  });
  const tgz = res.trim().split('\n').pop().trim();
  tarballs.set(json.name, tgz.startsWith('/') ? tgz : join(out, tgz));
}

let failed = 0;
for (const p of pkgs) {
  const name = p.json.name;
  const app = mkdtempSync(join(tmpdir(), 'kw-app-'));
  try {
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'kw-pack-check', private: true, type: 'module' }),
    );
    const readme = readFileSync(join(root, 'packages', p.dir, 'README.md'), 'utf8');
    const block = /```(?:js|javascript|mjs)\n([\s\S]*?)```/.exec(readme);
    if (!block) throw new Error('README has no ```js example');
    // the package, its declared dependencies, and the sibling packages the README example itself
    // imports (a user following the example installs those too); nothing else from the workspace
    const imported = [...block[1].matchAll(/from '(@kernelwarehouse\/[a-z-]+)/g)].map((m) => m[1]);
    const deps = new Set([
      ...Object.keys({ ...p.json.dependencies, ...p.json.peerDependencies }),
      ...imported,
    ]);
    deps.delete(name);
    const local = [
      tarballs.get(name),
      ...[...deps].filter((d) => tarballs.has(d)).map((d) => tarballs.get(d)),
    ];
    const peers = Object.entries(p.json.peerDependencies ?? {})
      .filter(([d]) => !tarballs.has(d) && !p.json.peerDependenciesMeta?.[d]?.optional)
      .map(([d, v]) => `${d}@${v}`);
    execFileSync(
      'npm',
      ['install', '--no-audit', '--no-fund', '--loglevel=error', ...local, ...peers],
      { cwd: app, stdio: 'pipe', env: npmEnv },
    );
    writeFileSync(join(app, 'example.mjs'), block[1]);
    const stdout = execFileSync(process.execPath, ['example.mjs'], {
      cwd: app,
      encoding: 'utf8',
      timeout: 180_000,
    });
    const files = execFileSync('tar', ['-tzf', tarballs.get(name)], { encoding: 'utf8' })
      .trim()
      .split('\n');
    if (files.some((f) => /\.test\.|\/test\//.test(f)))
      throw new Error(
        `tarball ships test files: ${files.filter((f) => /test/.test(f)).join(', ')}`,
      );
    console.log(
      `ok   ${name}: ${files.length} files packed, installed alone, README example ran (${stdout.split('\n').length - 1} lines of output)`,
    );
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${String(e.stderr ?? '').slice(0, 1500)}${e.message}`);
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
}
rmSync(out, { recursive: true, force: true });
console.log(`pack check: ${pkgs.length - failed} passed, ${failed} failed`);
if (failed) process.exit(1);
