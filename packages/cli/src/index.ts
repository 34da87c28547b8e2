/**
 * @kernelwarehouse/cli: the `kw` command. Each subcommand is one module under `commands/`.
 *
 * @packageDocumentation
 */
import { KwError } from '@kernelwarehouse/core';
import { CONVERT_HELP, convertCommand } from './commands/convert.js';
import { exportCommand } from './commands/export.js';
import { modelsCommand } from './commands/models.js';
import { onnxInfoCommand } from './commands/onnx-info.js';
import { planCommand } from './commands/plan.js';
import { trainCommand } from './commands/train.js';
import { type Io, UsageError } from './io.js';

export { parseInput, parseMethod, parseModelArgs, planJson } from './commands/plan.js';
export { type AtomicFs, makeDir, readFileBytes, writeFileAtomic } from './fsio.js';
export { type Io, UsageError } from './io.js';

/** One subcommand. */
export interface Command {
  /** Runs with the arguments after the subcommand name; returns the exit code. */
  run: (args: string[], io: Io) => number | Promise<number>;
  /** One usage line. */
  help: string;
}

/** Subcommands by name: each takes its arguments and an output sink and returns an exit code. */
export const COMMANDS: Record<string, Command> = {
  plan: {
    run: planCommand,
    help: 'kw plan <model> [--budget 1x|1/2x|0.25|plain | --method odconv:4|dyconv:4|condconv:8|doconv|weightnet|se] [--classes N] [--input 224x224x3] [--width W] [--json]',
  },
  models: { run: modelsCommand, help: 'kw models [--json]' },
  export: {
    run: exportCommand,
    help: 'kw export <model> [--budget B] [--classes N] [--input HxWxC] [--weights w.safetensors | --seed S] [--weights-out w.safetensors] [--temperature T] --out model.onnx',
  },
  'onnx-info': { run: onnxInfoCommand, help: 'kw onnx-info model.onnx [--json]' },
  convert: { run: convertCommand, help: CONVERT_HELP },
  train: {
    run: trainCommand,
    help: 'kw train [--model resnet8_cifar] [--width W] [--dataset mnist|fashion-mnist] [--data-dir DIR] [--methods plain,kw:1x,kw:1/2x,odconv:4,... | --budgets plain,1x,1/2x] [--epochs 2] [--train-size 2000] [--test-size 500] [--batch 64] [--lr 0.005] [--temp-epochs E] [--backend wasm|cpu] [--seed 0] [--seeds 1] [--checkpoint-every 50] [--bn-passes 32] [--out DIR] [--resume [RUN_DIR]] [--preset paper-direction (width-4 ResNet-8, 3 seeds, ~1 h on 2 cores)]',
  },
};

function usage(): string {
  return `usage:\n${Object.values(COMMANDS)
    .map((c) => `  ${c.help}`)
    .join('\n')}\n`;
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
    io.out(`usage: ${cmd.help}\n`);
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
