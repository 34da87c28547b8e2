// The package runs in browsers too (tfjs wasm and cpu): its sources load Node modules only by a
// name held in a variable (`const name = 'node:fs'; await import(name)`), behind a check that
// Node is there, so that browser bundlers (webpack, vite) do not try to resolve them. A literal
// `node:` import in src/ would break those builds; this test finds one.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const src = new URL('../src/', import.meta.url);

describe('browser-safe sources', () => {
  it('no source file imports a node: module by a literal name', () => {
    const files = readdirSync(src).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));
    expect(files.length).toBeGreaterThan(5);
    const literal = /(from\s*['"]node:|import\s*\(\s*['"]node:|require\s*\(\s*['"]node:)/;
    const offenders = files.filter((f) => literal.test(readFileSync(new URL(f, src), 'utf8')));
    expect(offenders).toEqual([]);
  });
});
