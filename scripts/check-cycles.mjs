#!/usr/bin/env node
// Fails (exit 1) when a package's source has an import cycle. Walks the relative imports of
// packages/*/src/**/*.ts (tests excluded) and reports every cycle as a chain of files.
// Type-only imports (`import type`, `export type`, `import { type A, type B }`) are erased at
// build time and cannot form a run-time cycle, so they are not edges.
// Usage: node scripts/check-cycles.mjs [--quiet]
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.argv.includes('--quiet');

function walk(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts') && !/\.test\.ts$/.test(p)) out.push(p);
  }
  return out;
}

/** Run-time relative imports of one module's text. */
export function runtimeImports(text) {
  const out = [];
  // strip comments so commented-out imports do not count
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
  const re =
    /(?:^|\n|;)\s*(import|export)\s+(type\s+)?([\s\S]*?)\s*from\s*['"]([^'"]+)['"]|(?:^|\n|;)\s*import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (let m = re.exec(code); m; m = re.exec(code)) {
    const spec = m[4] ?? m[5] ?? m[6];
    if (!spec?.startsWith('.')) continue;
    if (m[2]) continue; // import type / export type
    const clause = m[3];
    if (clause?.startsWith('{')) {
      const names = clause
        .slice(1, clause.lastIndexOf('}'))
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      if (names.length > 0 && names.every((n) => n.startsWith('type '))) continue;
    }
    out.push(spec);
  }
  return out;
}

function resolveImport(from, spec) {
  const base = resolve(dirname(from), spec);
  for (const c of [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')]) {
    if (existsSync(c)) return c;
  }
  return undefined;
}

/** Every elementary cycle reachable in `graph` (Map file -> files), each once. */
export function findCycles(graph) {
  const cycles = [];
  const seen = new Set();
  const state = new Map(); // 1 on stack, 2 done
  const stack = [];
  const visit = (n) => {
    state.set(n, 1);
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === 1) {
        const cyc = stack.slice(stack.indexOf(m));
        const key = [...cyc].sort().join('|');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push([...cyc, m]);
        }
      } else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 2);
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  return cycles;
}

/** The checker checks itself first: a cycle it must see, type-only imports it must skip. */
function selfTest() {
  const g = new Map([
    ['a', ['b']],
    ['b', ['c']],
    ['c', ['a']],
    ['d', ['a']],
  ]);
  const found = findCycles(g);
  const imports = runtimeImports(
    "import type { A } from './a.js';\nimport { type B, type C } from './b.js';\nimport { D, type E } from './d.js';\nexport { F } from './f.js';\n// import { G } from './g.js';\nexport type { H } from './h.js';",
  );
  if (found.length !== 1 || found[0].join() !== 'a,b,c,a' || imports.join() !== './d.js,./f.js') {
    console.error('check-cycles: self-test failed', found, imports);
    process.exit(2);
  }
}

function main() {
  selfTest();
  const pkgs = readdirSync(join(root, 'packages')).filter((p) =>
    existsSync(join(root, 'packages', p, 'src')),
  );
  let total = 0;
  let files = 0;
  for (const pkg of pkgs) {
    const graph = new Map();
    for (const f of walk(join(root, 'packages', pkg, 'src'))) {
      files++;
      const deps = runtimeImports(readFileSync(f, 'utf8'))
        .map((s) => resolveImport(f, s))
        .filter(Boolean);
      graph.set(f, deps);
    }
    for (const c of findCycles(graph)) {
      total++;
      console.error(`import cycle in ${pkg}: ${c.map((f) => relative(root, f)).join(' -> ')}`);
    }
  }
  if (total > 0) {
    console.error(
      `check-cycles: ${total} import cycle(s); break them (a leaf module for shared types and helpers)`,
    );
    process.exit(1);
  }
  if (!quiet)
    console.log(`check-cycles: no import cycles in ${pkgs.length} packages (${files} modules)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
