import { expect } from 'vitest';
import { KwError, type KwErrorCode } from '../src/index.js';

/**
 * The KwError `f` throws, checked for `code` and each message fragment (fails the test when `f`
 * throws anything else or nothing).
 */
export function kwErrorOf(
  f: () => unknown,
  code: KwErrorCode,
  ...fragments: (string | RegExp)[]
): KwError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(KwError);
  expect((err as KwError).code).toBe(code);
  for (const m of fragments) expect((err as KwError).message).toMatch(m);
  return err as KwError;
}
