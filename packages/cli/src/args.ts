/**
 * Command-line flags: one declarative table per command gives the parser, the strict numeric
 * checks and the `--help` text (every option with its default), so the three cannot drift.
 */
import { parseArgs } from 'node:util';
import { KwError, MAX_SEED } from '@kernelwarehouse/core';
import { UsageError } from './io.js';

/** The range a numeric flag accepts. */
export interface NumberRange {
  /** Integers only (then `1e3`, `1.0` and `0x10` are refused). */
  int?: boolean;
  /** Smallest value (inclusive unless `minExclusive`). */
  min?: number;
  /** The minimum itself is refused. */
  minExclusive?: boolean;
  /** Largest value (inclusive). */
  max?: number;
}

/** Seeds: 32-bit unsigned, so no two seeds wrap to the same value. */
export const SEED_RANGE: NumberRange = { int: true, min: 0, max: MAX_SEED };

const INT_TEXT = /^-?\d+$/;
const NUM_TEXT = /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;

function describe(r: NumberRange): string {
  const kind = r.int ? 'an integer' : 'a number';
  if (r.min !== undefined && r.max !== undefined && !r.minExclusive)
    return `${kind} in [${r.min}, ${r.max}]`;
  const parts: string[] = [];
  if (r.min !== undefined) parts.push(`${r.minExclusive ? '>' : '>='} ${r.min}`);
  if (r.max !== undefined) parts.push(`<= ${r.max}`);
  return `${kind}${parts.length ? ` ${parts.join(' and ')}` : ''}`;
}

/**
 * Parse the text of a numeric flag strictly: plain decimal only (no `0x10`, `0b1`, `Infinity`,
 * empty or padded text; no exponent where an integer is required), within `range`. Anything
 * else is KwError('ARGUMENT_INVALID') naming the flag, what it accepts and what it got.
 *
 * @example
 * parseNumber('--epochs', '3', { int: true, min: 1 }); // 3
 */
export function parseNumber(flag: string, text: string, range: NumberRange): number {
  const ok = (range.int ? INT_TEXT : NUM_TEXT).test(text);
  const v = ok ? Number(text) : Number.NaN;
  const inRange =
    Number.isFinite(v) &&
    (!range.int || Number.isSafeInteger(v)) &&
    (range.min === undefined || (range.minExclusive ? v > range.min : v >= range.min)) &&
    (range.max === undefined || v <= range.max);
  if (!ok || !inRange)
    throw new KwError(
      'ARGUMENT_INVALID',
      `${flag} must be ${describe(range)}; found ${JSON.stringify(text)}`,
      { flag, expected: describe(range), actual: text },
    );
  return v;
}

/** One option of a command: how it parses and how `--help` describes it. */
export interface OptionSpec {
  /** `string` takes a value, `boolean` is a switch. */
  type: 'string' | 'boolean';
  /** The value's placeholder in help (`N`, `DIR`, ...). */
  value?: string;
  /** What it does. */
  help: string;
  /** The default as shown in help (omit for none). */
  default?: string;
  /** A numeric flag: parsed by {@link parseNumber} with this range. */
  range?: NumberRange;
  /** The value may be left out (e.g. `--resume` alone): it then reads as ''. */
  optionalValue?: boolean;
}

/** A command's options by flag name (without `--`). */
export type OptionTable = Record<string, OptionSpec>;

/** The values of a parsed command line: strings and switches by flag name, and positionals. */
export interface ParsedFlags {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parse `args` by `table`: unknown flags, a flag given twice and a missing value are usage
 * errors; a negative number after a flag (`--seed -1`) is taken as its value so the range check
 * names it (instead of Node's "argument is ambiguous"); numeric flags are checked by
 * {@link parseNumber} here, so every command refuses the same things.
 */
export function parseFlags(
  args: string[],
  table: OptionTable,
  options: { positionals?: number } = {},
): ParsedFlags {
  const argv: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    const spec = name === undefined ? undefined : table[name];
    const next = args[i + 1];
    if (spec?.type === 'string') {
      if (spec.optionalValue && (next === undefined || next.startsWith('--'))) {
        argv.push(`${a}=`);
        continue;
      }
      if (next?.startsWith('-') && !next.startsWith('--')) {
        // `--seed -1`: the value, not a flag (there are no one-letter flags besides -h)
        argv.push(`${a}=${next}`);
        i++;
        continue;
      }
    }
    argv.push(a);
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: (options.positionals ?? 0) > 0,
      tokens: true,
      strict: true,
      options: Object.fromEntries(Object.entries(table).map(([k, s]) => [k, { type: s.type }])),
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!);
  }
  const count = new Map<string, number>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== 'option') continue;
    count.set(t.name, (count.get(t.name) ?? 0) + 1);
    if (count.get(t.name) === 2)
      throw new KwError('ARGUMENT_INVALID', `--${t.name} is given more than once; give it once`, {
        flag: `--${t.name}`,
      });
  }
  if (parsed.positionals.length > (options.positionals ?? 0))
    throw new UsageError(`unexpected argument "${parsed.positionals[options.positionals ?? 0]}"`);
  const values = parsed.values as Record<string, string | boolean | undefined>;
  for (const [k, s] of Object.entries(table)) {
    const v = values[k];
    if (s.type === 'string' && v === '' && !s.optionalValue)
      throw new KwError('ARGUMENT_INVALID', `--${k} needs a value; found an empty string`, {
        flag: `--${k}`,
      });
    if (s.range && typeof v === 'string') parseNumber(`--${k}`, v, s.range);
  }
  return { values, positionals: parsed.positionals };
}

/** A numeric flag's value (already checked by {@link parseFlags}), or undefined when absent. */
export function numberFlag(
  flags: ParsedFlags,
  table: OptionTable,
  name: string,
): number | undefined {
  const v = flags.values[name];
  if (typeof v !== 'string') return undefined;
  return parseNumber(`--${name}`, v, table[name]!.range ?? {});
}

/**
 * A flag that takes one of a few words: the word, or undefined when absent; anything else is a
 * usage error listing them (`--stem must be auto, imagenet or small; found "x"`).
 */
export function choiceFlag<T extends string>(
  flag: string,
  v: unknown,
  allowed: readonly T[],
): T | undefined {
  if (v === undefined) return undefined;
  if ((allowed as readonly unknown[]).includes(v)) return v as T;
  const words = `${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}`;
  throw new UsageError(`--${flag} must be ${words}; found "${String(v)}"`);
}

/** The `--help` text of a command: its usage line, then one line per option with its default. */
export function helpText(usage: string, table: OptionTable, intro = ''): string {
  const rows = Object.entries(table).map(([k, s]) => {
    const left = `--${k}${s.type === 'string' ? ` ${s.optionalValue ? `[${s.value ?? 'VALUE'}]` : (s.value ?? 'VALUE')}` : ''}`;
    return [left, `${s.help}${s.default !== undefined ? ` (default: ${s.default})` : ''}`] as const;
  });
  const w = Math.max(0, ...rows.map(([l]) => l.length));
  return `usage: ${usage}\n${intro ? `\n${intro}\n` : ''}\noptions:\n${rows
    .map(([l, r]) => `  ${l.padEnd(w)}  ${r}`)
    .join('\n')}\n  ${'--help'.padEnd(w)}  this text\n`;
}
