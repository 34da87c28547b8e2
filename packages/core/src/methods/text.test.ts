// The command-line text form of the methods goes through each method's normalize.
import { describe, expect, it } from 'vitest';
import { isKwError } from '../errors.js';
import { CONDCONV_DEFAULT_EXPERTS } from './condconv.js';
import { METHODS } from './registry.js';
import { methodTextForms, parseMethodText } from './text.js';

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return isKwError(e) ? e.code : `not a KwError: ${String(e)}`;
  }
  return 'no error';
};

describe('parseMethodText', () => {
  it('fills positional fields and every default from the method', () => {
    expect(parseMethodText('odconv:4').settings).toEqual({
      kind: 'odconv',
      kernels: 4,
      reduction: 1 / 16,
      minHidden: 16,
      temperature: 1,
    });
    expect(parseMethodText('condconv').settings).toEqual({
      kind: 'condconv',
      experts: CONDCONV_DEFAULT_EXPERTS,
    });
    expect(parseMethodText('WeightNet:4').settings).toEqual({ kind: 'weightnet', M: 4, G: 2 });
    expect(parseMethodText('kw:1/2x')).toEqual({
      kind: 'kw',
      settings: { kind: 'kw', budget: 0.5 },
    });
    expect(parseMethodText('kw').settings).toEqual({ kind: 'kw', budget: 1 });
    expect(parseMethodText('doconv').settings).toEqual({ kind: 'doconv' });
  });

  it('refuses unknown kinds, extra values, non-decimal and out-of-range numbers', () => {
    expect(code(() => parseMethodText('magic'))).toBe('ARGUMENT_INVALID');
    expect(() => parseMethodText('magic')).toThrow(/accepted: kw\[:budget\], condconv\[:experts\]/);
    expect(code(() => parseMethodText('odconv:4:4'))).toBe('ARGUMENT_INVALID');
    expect(code(() => parseMethodText('odconv:0x10'))).toBe('ARGUMENT_INVALID');
    expect(code(() => parseMethodText('odconv:'))).toBe('ARGUMENT_INVALID');
    expect(code(() => parseMethodText('odconv:0'))).toBe('ARGUMENT_INVALID');
    expect(code(() => parseMethodText('kw:abc'))).toBe('BUDGET_INVALID');
  });

  it('lists one form per registered method', () => {
    expect(methodTextForms()).toHaveLength(METHODS.size);
    expect(methodTextForms(['weightnet'])).toEqual(['weightnet[:M][:G]']);
  });
});
