/**
 * @kernelwarehouse/cli: the `kw` command. Each subcommand is one module under `commands/`.
 *
 * @packageDocumentation
 */
import { KwError } from '@kernelwarehouse/core';
import { helpText, type OptionTable } from './args.js';
import { convertCommand } from './commands/convert.js';
import { exportCommand } from './commands/export.js';
import { modelsCommand } from './commands/models.js';
import { onnxInfoCommand } from './commands/onnx-info.js';
import { planCommand } from './commands/plan.js';
import { trainCommand } from './commands/train.js';
import { CONVERT_FLAGS, EXPORT_FLAGS, JSON_FLAG, MODEL_FLAGS } from './flags.js';
import { type Io, UsageError } from './io.js';
import { TRAIN_FLAGS } from './train-options.js';

export {
  type NumberRange,
  type OptionSpec,
  type OptionTable,
  type ParsedFlags,
  parseFlags,
  parseNumber,
  SEED_RANGE,
} from './args.js';
export { parseInput, parseMethod, parseModelArgs, planJson } from './commands/plan.js';
export {
  type AtomicFs,
  makeDir,
  readFileBytes,
  writeFileAtomic,
} from './fsio.js';
export { type Io, UsageError } from './io.js';
export { Progress } from './progress.js';

/** One subcommand. */
export interface Command {
  /** Runs with the arguments after the subcommand name; returns the exit code. */
  run: (args: string[], io: Io) => number | Promise<number>;
  /** One usage line. */
  help: string;
  /** What it does, in a sentence. */
  summary: string;
  /** Its options (parser, ranges, defaults): `kw <command> --help` lists each with its default. */
  options: OptionTable;
}

/**
 * Subcommands by name: each takes its arguments and an output sink and returns an exit code.
 * A new command is one entry here.
 */
export const COMMANDS: Record<string, Command> = {
  plan: {
    run: planCommand,
    help: 'kw plan <model> [options]',
    summary:
      "a zoo model's KernelWarehouse plan (warehouses, cells, parameters, MACs) or another method's",
    options: MODEL_FLAGS,
  },
  models: {
    run: modelsCommand,
    help: 'kw models [--json]',
    summary: 'the zoo with its published budgets and parameter counts',
    options: JSON_FLAG,
  },
  export: {
    run: exportCommand,
    help: 'kw export <model> [options] (--out model.onnx | --triton-repo DIR)',
    summary: 'a zoo model (seeded or trained weights) as ONNX (opset 17, dynamic batch)',
    options: { ...MODEL_FLAGS, ...EXPORT_FLAGS },
  },
  'onnx-info': {
    run: onnxInfoCommand,
    help: 'kw onnx-info model.onnx [--json]',
    summary: "an ONNX file's inputs, outputs, op histogram, initializer bytes and opsets",
    options: JSON_FLAG,
  },
  convert: {
    run: convertCommand,
    help: 'kw convert <in.pth|in.safetensors> --model M [options] --out weights.safetensors',
    summary:
      "an official PyTorch checkpoint (.pth or safetensors) in this project's names, or back with --to official",
    options: CONVERT_FLAGS,
  },
  train: {
    run: trainCommand,
    help: 'kw train [options]',
    summary:
      'train the plain backbone and the chosen variants on MNIST-style data (tfjs), export each to ONNX, check ONNX against tfjs, write runs/<name>/',
    options: TRAIN_FLAGS,
  },
};

/** `kw <command> --help`: usage, summary, every option with its default. */
export function commandHelp(name: string): string {
  const c = COMMANDS[name]!;
  return helpText(c.help, c.options, c.summary);
}

function usage(): string {
  return `usage: kw <command> [options]   (kw <command> --help: that command alone)\n\n${Object.keys(
    COMMANDS,
  )
    .map((n) => commandHelp(n))
    .join('\n')}`;
}

/**
 * Run the `kw` command line. Returns the exit code: 0 on success, 2 on a usage error (one line
 * saying what is accepted), 1 on any other error.
 */
export async function main(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    io.err(`kw: unknown command "${name}"; accepted: ${Object.keys(COMMANDS).join(', ')}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(commandHelp(name));
    return 0;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`kw ${name}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof KwError) {
      io.err(`kw ${name}: ${e.message}\n`);
      return e.code.startsWith('BUDGET') || e.code === 'ARGUMENT_INVALID' ? 2 : 1;
    }
    throw e;
  }
}
