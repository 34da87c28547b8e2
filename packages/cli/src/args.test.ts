import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isKwError } from '@kernelwarehouse/core';
import { describe, expect, it } from 'vitest';
import { run } from '../test/harness.js';
import { parseFlags, parseNumber, SEED_RANGE } from './args.js';
import { COMMANDS } from './index.js';

const thrown = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
};

describe('the strict numeric parser', () => {
  it('accepts plain decimals within the range', () => {
    expect(parseNumber('--epochs', '3', { int: true, min: 1 })).toBe(3);
    expect(parseNumber('--lr', '0.005', { min: 0, minExclusive: true })).toBe(0.005);
    expect(parseNumber('--lr', '1e-3', { min: 0, minExclusive: true })).toBe(0.001);
    expect(parseNumber('--seed', '4294967295', SEED_RANGE)).toBe(4294967295);
    expect(parseNumber('--seed', '0', SEED_RANGE)).toBe(0);
  });

  it('refuses hex, binary, empty, padded, exponent-for-integer, out-of-range, NaN and Infinity, naming the flag', () => {
    for (const [text, range] of [
      ['0x10', { int: true, min: 1 }],
      ['0b1', { int: true, min: 0 }],
      ['', { int: true, min: 0 }],
      [' 3', { int: true, min: 0 }],
      ['3 ', { min: 0 }],
      ['1e3', { int: true, min: 1 }],
      ['1.0', { int: true, min: 1 }],
      ['4294967296', SEED_RANGE],
      ['18446744073709551617', SEED_RANGE],
      ['-1', SEED_RANGE],
      ['NaN', { min: 0 }],
      ['Infinity', { min: 0 }],
      ['0', { min: 0, minExclusive: true }],
      ['+3', { int: true, min: 0 }],
    ] as const) {
      const e = thrown(() => parseNumber('--x', text, range));
      expect(isKwError(e, 'ARGUMENT_INVALID'), JSON.stringify(text)).toBe(true);
      expect((e as Error).message).toMatch(/^\[ARGUMENT_INVALID\] --x must be /);
      expect((e as Error).message).toContain(`found ${JSON.stringify(text)}`);
    }
    expect((thrown(() => parseNumber('--seed', '4294967296', SEED_RANGE)) as Error).message).toBe(
      '[ARGUMENT_INVALID] --seed must be an integer in [0, 4294967295]; found "4294967296"',
    );
  });

  it('refuses a flag given twice and reads a negative value as the value', () => {
    const table = {
      seed: { type: 'string' as const, help: '', range: SEED_RANGE },
      out: { type: 'string' as const, help: '' },
    };
    expect(thrown(() => parseFlags(['--seed', '1', '--seed', '2'], table))).toSatisfy(
      (e: unknown) =>
        isKwError(e, 'ARGUMENT_INVALID') &&
        (e as Error).message.includes('--seed is given more than once'),
    );
    expect(thrown(() => parseFlags(['--seed=1', '--seed', '1'], table))).toSatisfy((e: unknown) =>
      isKwError(e, 'ARGUMENT_INVALID'),
    );
    expect((thrown(() => parseFlags(['--seed', '-5'], table)) as Error).message).toBe(
      '[ARGUMENT_INVALID] --seed must be an integer in [0, 4294967295]; found "-5"',
    );
    expect((thrown(() => parseFlags(['--out', ''], table)) as Error).message).toBe(
      '[ARGUMENT_INVALID] --out needs a value; found an empty string',
    );
    expect(parseFlags(['--seed', '7', '--out', 'a'], table).values).toEqual({
      seed: '7',
      out: 'a',
    });
  });

  it('applies to kw train, plan and export: exit 2 with one line naming the flag', async () => {
    for (const [argv, msg] of [
      [
        ['train', '--seed', '4294967296'],
        '--seed must be an integer in [0, 4294967295]; found "4294967296"',
      ],
      [['train', '--seed', '-1'], '--seed must be an integer in [0, 4294967295]; found "-1"'],
      [['train', '--epochs', '0x10'], '--epochs must be an integer in [1, 100000]; found "0x10"'],
      [['train', '--epochs', '1e3'], '--epochs must be an integer in [1, 100000]; found "1e3"'],
      [['train', '--batch', ''], '--batch needs a value; found an empty string'],
      [['train', '--lr', '-0.1'], '--lr must be a number > 0 and <= 100; found "-0.1"'],
      [['train', '--epochs', '2', '--epochs', '3'], '--epochs is given more than once'],
      [['train', '--fma', 'yes'], '--fma must be on or off; found "yes"'],
      [['train', '--winograd', 'yes'], '--winograd must be on or off; found "yes"'],
      [
        ['plan', 'resnet18', '--classes', '0x10'],
        '--classes must be an integer in [1, 1000000]; found "0x10"',
      ],
      [['plan', 'resnet18', '--width', '-2'], '--width must be a number > 0 and <= 64; found "-2"'],
      [
        ['plan', 'resnet18', '--classes', '10', '--classes', '10'],
        '--classes is given more than once',
      ],
      [
        ['export', 'resnet8_cifar', '--seed', '-1', '--out', '/tmp/x.onnx'],
        '--seed must be an integer in [0, 4294967295]; found "-1"',
      ],
      [
        ['export', 'resnet8_cifar', '--temperature', '2', '--out', '/tmp/x.onnx'],
        '--temperature must be a number in [0, 1]; found "2"',
      ],
      [
        ['export', 'resnet8_cifar', '--max-batch', '1.5', '--triton-repo', '/tmp/r'],
        '--max-batch must be an integer in [0, 1000000]; found "1.5"',
      ],
    ] as [string[], string][]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toBe(
        `kw ${argv[0]}: [ARGUMENT_INVALID] ${msg}${msg.endsWith('once') ? '; give it once' : ''}\n`,
      );
    }
  });
});

describe('help', () => {
  it('kw <command> --help lists every option of the command, with its default where it has one', async () => {
    for (const [name, c] of Object.entries(COMMANDS)) {
      const r = await run(name, '--help');
      expect(r.code).toBe(0);
      for (const [flag, o] of Object.entries(c.options)) {
        const line = r.out
          .split('\n')
          .find(
            (l) =>
              l.trimStart().startsWith(`--${flag} `) ||
              l.trim() === `--${flag}` ||
              l.trimStart().startsWith(`--${flag}  `),
          );
        expect(line, `${name} --${flag}`).toBeDefined();
        expect(line!.length).toBeGreaterThan(flag.length + 6);
        if (o.default !== undefined)
          expect(line, `${name} --${flag}`).toContain(`(default: ${o.default})`);
      }
    }
    const all = await run('--help');
    expect(all.code).toBe(0);
    for (const name of Object.keys(COMMANDS)) expect(all.out).toContain(`usage: kw ${name}`);
    expect(all.out).toContain('--checkpoint-every N');
    expect(all.out).toContain('(default: 50)');
  });
});

describe("the README's way of calling kw", () => {
  it('`npx -y pnpm@10.34.9 -s kw plan ... --json` prints only the JSON on stdout', () => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_config_')),
    );
    const r = spawnSync(
      'npx',
      ['-y', 'pnpm@10.34.9', '-s', 'kw', 'plan', 'resnet18', '--budget', '1/2x', '--json'],
      { cwd: root, encoding: 'utf8', env },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).params.total).toBe(7_431_044);
  }, 600_000);
});
