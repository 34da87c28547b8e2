/**
 * The command-line form of a method, `kind[:a[:b]]` (`odconv:4`, `condconv:8`, `weightnet:2:2`,
 * `kw:1/2x`), read through the method's own `normalize`, so the CLI, the zoo and specs share one
 * set of settings and defaults.
 */
import { KwError } from '../errors.js';
import { METHODS } from './registry.js';

/** A method read from its text form: `kind` and its settings with every default filled. */
export interface ParsedMethod {
  kind: string;
  settings: Record<string, unknown>;
}

/** The accepted text forms, e.g. `odconv[:kernels]`, one per registered method. */
export function methodTextForms(kinds?: readonly string[]): string[] {
  const out: string[] = [];
  for (const m of METHODS.values()) {
    if (kinds && !kinds.includes(m.kind)) continue;
    out.push(`${m.kind}${(m.textForm?.fields ?? []).map((f) => `[:${f}]`).join('')}`);
  }
  return out;
}

/**
 * Parse `kind[:a[:b]]`. Positional values fill the method's text fields (integers written in
 * decimal, unless the method reads the field itself, as KW's budget `1/2x`); the method's
 * normalize then checks them and fills the defaults. Throws ARGUMENT_INVALID naming the text.
 *
 * @example
 * parseMethodText('odconv:4'); // { kind: 'odconv', settings: { kind: 'odconv', kernels: 4, reduction: 0.0625, ... } }
 * parseMethodText('kw:1/2x'); // { kind: 'kw', settings: { kind: 'kw', budget: 0.5 } }
 */
export function parseMethodText(text: string): ParsedMethod {
  const [rawKind = '', ...args] = text.trim().split(':');
  const kind = rawKind.toLowerCase();
  const method = METHODS.get(kind);
  const where = `method "${text}"`;
  if (!method) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `unknown ${where}; accepted: ${methodTextForms().join(', ')}`,
      { actual: text },
    );
  }
  const form = method.textForm ?? { fields: [] };
  if (args.length > form.fields.length) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `${where}: ${kind} takes at most ${form.fields.length} value(s) after ':' (${methodTextForms([kind])[0]})`,
      { actual: text },
    );
  }
  const raw: Record<string, unknown> = { kind };
  args.forEach((a, i) => {
    const field = form.fields[i]!;
    if (form.parse) {
      raw[field] = form.parse(field, a);
      return;
    }
    if (!/^[0-9]+$/.test(a)) {
      throw new KwError(
        'ARGUMENT_INVALID',
        `${where}: "${a}" (${field}) must be an integer written in decimal`,
        { field, actual: a },
      );
    }
    raw[field] = Number(a);
  });
  try {
    const settings = form.settings
      ? form.settings(raw, where)
      : (method.normalize(where, raw) as unknown as Record<string, unknown>);
    return { kind, settings };
  } catch (e) {
    if (e instanceof KwError && e.code === 'SPEC_BAD_FIELD') {
      throw new KwError('ARGUMENT_INVALID', e.message, { actual: text });
    }
    throw e;
  }
}
