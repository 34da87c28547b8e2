/**
 * Checks of the options the public functions take, made where they enter: a bad value is a
 * KwError ARGUMENT_INVALID naming the option, what it must be and what was given, never a limit
 * silently switched off (NaN compares false with everything) or a crash deeper down.
 */
import { describeValue, KwError } from '@kernelwarehouse/core';

const invalid = (where: string, expected: string, actual: unknown): never => {
  throw new KwError(
    'ARGUMENT_INVALID',
    `${where} must be ${expected}, found ${describeValue(actual)}`,
    {
      option: where,
      expected,
      actual: typeof actual === 'number' || typeof actual === 'string' ? actual : typeof actual,
    },
  );
};

/** `v` is undefined or a plain object (an options bag); returns it as a record. */
export function optionsObject(where: string, v: unknown): Record<string, unknown> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    invalid(where, 'an object (or undefined)', v);
  return v as Record<string, unknown>;
}

/**
 * An optional integer option in [min, Number.MAX_SAFE_INTEGER]: `fallback` when undefined,
 * ARGUMENT_INVALID for anything else (NaN, Infinity, fractions, strings, out of range).
 */
export function integerOption(where: string, v: unknown, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
    invalid(where, `an integer >= ${min} (at most ${Number.MAX_SAFE_INTEGER})`, v);
  return v as number;
}

/** An optional string option. */
export function stringOption(where: string, v: unknown): string | undefined {
  if (v !== undefined && typeof v !== 'string') invalid(where, 'a string (or undefined)', v);
  return v as string | undefined;
}

/** An optional boolean option. */
export function booleanOption(where: string, v: unknown): boolean | undefined {
  if (v !== undefined && typeof v !== 'boolean') invalid(where, 'true or false (or undefined)', v);
  return v as boolean | undefined;
}

/** An optional option taking one of `choices`. */
export function choiceOption<T extends string>(
  where: string,
  v: unknown,
  choices: readonly T[],
): T | undefined {
  if (v !== undefined && !choices.includes(v as T))
    invalid(where, `one of ${choices.map((c) => `"${c}"`).join(', ')} (or undefined)`, v);
  return v as T | undefined;
}

/** An optional function option. */
export function functionOption(where: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'function') invalid(where, 'a function (or undefined)', v);
}

/** A Uint8Array argument. */
export function bytesArgument(where: string, v: unknown): void {
  if (!(v instanceof Uint8Array)) invalid(where, 'a Uint8Array', v);
}
