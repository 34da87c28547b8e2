// The malformed-spec corpus (test/fixtures/bad/specs, written by test/make-bad-specs.mjs) and a
// fuzz test: whatever a spec holds, planning either succeeds or throws a KwError.
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countParams, KwError, planModel } from '../src/index.js';
import { tinyKwSpec } from '../src/testing.js';
import { fuzz } from './fuzz.js';

const dir = new URL('./fixtures/bad/specs/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('malformed spec corpus', () => {
  it('has at least 50 cases', () => {
    expect(files.length).toBeGreaterThanOrEqual(50);
  });
  for (const f of files) {
    it(f.replace('.json', ''), () => {
      const { expect: want, spec } = JSON.parse(readFileSync(new URL(f, dir), 'utf8'));
      let err: unknown;
      try {
        planModel(spec);
      } catch (e) {
        err = e;
      }
      expect(err, `no error for ${f}`).toBeInstanceOf(KwError);
      expect((err as KwError).code).toBe(want.code);
      expect((err as KwError).message).toContain(want.message);
    });
  }
});

const jsonValue = fc.oneof(
  fc.constantFrom(
    null,
    true,
    false,
    0,
    -1,
    1,
    2,
    0.5,
    1e9,
    -1e9,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    '',
    'input',
    'stem',
    '1x',
    'kw',
    'conv2d',
  ),
  fc.integer({ min: -4, max: 64 }),
  fc.array(fc.integer({ min: -2, max: 9 }), { maxLength: 4 }),
  fc.dictionary(
    fc.constantFrom('kind', 'warehouse', 'id', 'budget'),
    fc.constantFrom('kw', 'stage0', 1, null),
  ),
);

/** Every (object, key) path of a JSON value. */
function paths(
  v: unknown,
  prefix: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  if (v && typeof v === 'object') {
    for (const [k, c] of Object.entries(v)) {
      const key = Array.isArray(v) ? Number(k) : k;
      out.push([...prefix, key]);
      paths(c, [...prefix, key], out);
    }
  }
  return out;
}

describe('spec fuzzing (fixed seed)', () => {
  const base = tinyKwSpec({ budget: 1, kwClassifier: true });
  const all = paths(base);
  it('random field replacements and deletions plan or throw KwError, never another error', () => {
    let rejected = 0;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: all.length - 1 }), jsonValue, fc.boolean()), {
          minLength: 1,
          maxLength: 3,
        }),
        (edits) => {
          const s = JSON.parse(JSON.stringify(base));
          for (const [pi, value, del] of edits) {
            const path = all[pi]!;
            let obj = s;
            for (const k of path.slice(0, -1)) {
              if (obj === null || typeof obj !== 'object') return;
              obj = obj[k as keyof typeof obj];
            }
            if (obj === null || typeof obj !== 'object') return;
            const last = path[path.length - 1]!;
            if (del) delete obj[last];
            else obj[last] = value;
          }
          try {
            const plan = planModel(s);
            expect(plan.params.total).toBe(countParams(s));
            expect(Number.isFinite(plan.macs.total)).toBe(true);
          } catch (e) {
            if (!(e instanceof KwError))
              throw new Error(`non-KwError ${String(e)} for edits ${JSON.stringify(edits)}`);
            rejected++;
          }
        },
      ),
      fuzz(424242, 1000),
    );
    expect(rejected).toBeGreaterThan(fuzz(424242, 1000).numRuns / 10); // most edits break the spec
  });
});
