import { describeValue, KwError } from '../errors.js';

/**
 * True for a usable budget: a finite number > 0 whose reciprocal is finite too (the planner and
 * {@link formatBudget} use 1/b; a subnormal such as 1e-320 has 1/b = Infinity).
 */
export function isValidBudget(b: unknown): b is number {
  return typeof b === 'number' && Number.isFinite(b) && b > 0 && Number.isFinite(1 / b);
}

/** `b` if it is a usable budget ({@link isValidBudget}), else BUDGET_INVALID naming it. */
function checkedBudget(b: unknown): number {
  if (!isValidBudget(b)) {
    throw new KwError(
      'BUDGET_INVALID',
      `budget must be a finite number > 0 with a finite reciprocal, found ${describeValue(b)}`,
      { actual: b },
    );
  }
  return b;
}

/**
 * Parse a budget as users write it: `1/4x`, `1/2x`, `1x`, `2x`, `4x`, `0.25`, `1/4`, `4`.
 * Throws BUDGET_INVALID for anything that is not a finite number > 0 with a finite reciprocal.
 *
 * @example
 * parseBudget('1/2x'); // 0.5
 */
export function parseBudget(text: string | number): number {
  if (typeof text === 'number') return checkedBudget(text);
  const t = String(text).trim().toLowerCase().replace(/[x×]$/, '');
  const frac = /^(\d+)\s*\/\s*(\d+)$/.exec(t);
  let b: number;
  if (frac) b = Number(frac[1]) / Number(frac[2]);
  else if (/^(\d+\.?\d*|\.\d+)(e-?\d+)?$/.test(t)) b = Number(t);
  else b = Number.NaN;
  if (!isValidBudget(b)) {
    throw new KwError(
      'BUDGET_INVALID',
      `budget ${JSON.stringify(text)} is not valid: write 1/4x, 1/2x, 1x, 2x, 4x, a fraction like 1/8, or a number > 0`,
      { actual: text },
    );
  }
  return b;
}

/** Render a budget the way the paper writes it: `1/4x`, `1x`, `4x` (or the number). */
export function formatBudget(b: number): string {
  checkedBudget(b);
  if (Number.isInteger(b)) return `${b}x`;
  const p = Math.round(1 / b);
  // p a safe integer: below ~1e-16 every b passed the absolute test ("1/9.99e+299x", unparseable)
  if (b < 1 && Number.isSafeInteger(p) && Math.abs(1 / p - b) < 1e-12) return `1/${p}x`;
  return `${b}x`;
}
