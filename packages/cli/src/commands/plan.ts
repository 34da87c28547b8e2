import {
  formatBudget,
  isKwError,
  type ModelPlan,
  methodTextForms,
  parseBudget,
  parseMethodText,
  planModel,
} from '@kernelwarehouse/core';
import {
  createModel,
  getModel,
  listModels,
  type MethodOption,
  MODEL_METHODS,
} from '@kernelwarehouse/zoo';
import { numberFlag, type OptionTable, parseFlags } from '../args.js';
import { MODEL_FLAGS } from '../flags.js';
import { human, type Io, int, table, UsageError } from '../io.js';

/** Parse `224x224x3` (H x W x C) into `[C, H, W]`. */
export function parseInput(text: string): [number, number, number] {
  const m = /^(\d+)x(\d+)x(\d+)$/i.exec(text.trim());
  if (!m || [m[1], m[2], m[3]].some((v) => Number(v) < 1)) {
    throw new UsageError(
      `--input must be HxWxC with positive integers, e.g. 224x224x3 or 28x28x1; found "${text}"`,
    );
  }
  return [Number(m[3]), Number(m[1]), Number(m[2])];
}

/**
 * Parse `--method`: a zoo method in core's text form, `odconv[:kernels]`, `dyconv[:kernels]`,
 * `condconv[:experts]`, `doconv[:dMul]`, `weightnet[:M[:G]]`, or `se`. Settings and defaults
 * come from the method's own `normalize` in core (`parseMethodText`), the same ones specs and
 * the zoo use (e.g. CondConv: 8 experts).
 */
export function parseMethod(text: string): MethodOption {
  const accepted = () =>
    `accepted: ${methodTextForms(MODEL_METHODS.filter((k) => k !== 'se')).join(', ')}, se`;
  const t = text.trim().toLowerCase();
  if (t === 'se') return { kind: 'se' };
  const kind = t.split(':')[0]!;
  if (!(MODEL_METHODS as readonly string[]).includes(kind)) {
    throw new UsageError(`unknown --method "${text}"; ${accepted()}`);
  }
  try {
    return parseMethodText(t).settings as MethodOption;
  } catch (e) {
    if (isKwError(e)) throw new UsageError(`bad --method "${text}": ${e.message}; ${accepted()}`);
    throw e;
  }
}

/**
 * Shared option parsing of the model-building commands (plan, export, ...): `MODEL_FLAGS`
 * plus the command's own, by the strict parser of args.ts (numeric ranges, no repeated flags).
 */
export function parseModelArgs(args: string[], extra: OptionTable = {}) {
  const parsed = parseFlags(args, { ...MODEL_FLAGS, ...extra }, { positionals: 1 });
  const { values, positionals } = parsed;
  const id = positionals[0];
  if (!id)
    throw new UsageError(
      `a model is required; one of: ${listModels()
        .map((m) => m.id)
        .join(', ')}`,
    );
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  try {
    getModel(id);
  } catch {
    throw new UsageError(
      `unknown model "${id}"; accepted: ${listModels()
        .map((m) => m.id)
        .join(', ')}`,
    );
  }
  let budget: number | null = null;
  if (values.budget !== undefined && values.budget !== 'plain' && values.budget !== 'none') {
    try {
      budget = parseBudget(values.budget as string);
    } catch {
      throw new UsageError(
        `bad budget "${values.budget}"; accepted: 1/4x, 1/2x, 1x, 2x, 4x, a number > 0 like 0.25, or "plain"`,
      );
    }
  }
  const classes = numberFlag(parsed, MODEL_FLAGS, 'classes');
  const width = numberFlag(parsed, MODEL_FLAGS, 'width');
  const inputShape = values.input === undefined ? undefined : parseInput(values.input as string);
  const method = values.method === undefined ? undefined : parseMethod(values.method as string);
  if (method && budget !== null)
    throw new UsageError('give --budget (KernelWarehouse) or --method, not both');
  return { id, budget, classes, width, inputShape, method, values, flags: parsed };
}

/** The JSON document of `kw plan --json`. */
export function planJson(
  id: string,
  budget: number | null,
  plan: ModelPlan,
  inputShape: number[],
  classes: number,
) {
  return {
    model: id,
    budget: budget === null ? null : formatBudget(budget),
    budgetValue: budget,
    input: inputShape,
    classes,
    params: plan.params,
    warehouses: plan.kw.warehouses.map((w) => ({
      id: w.id,
      cell: [w.cellOut, w.cellIn],
      budget: w.budget,
      mt: w.mt,
      n: w.n,
      params: w.params,
      layers: w.layers.map((lid) => {
        const l = plan.kw.layers.get(lid)!;
        return {
          id: lid,
          shape: l.weightShape,
          m: l.m,
          ownedCells: [l.start, l.end],
          attentionParams: l.attentionParams,
        };
      }),
    })),
    macs: plan.macs,
    kernelBytesPerSample: plan.kernelFloatsPerSample * 4,
  };
}

/** `kw plan <model> [--budget B] [--classes N] [--input HxWxC] [--width W] [--json]`. */
export function planCommand(args: string[], io: Io): number {
  const { id, budget, classes, width, inputShape, method } = parseModelArgs(args);
  const spec = createModel(id, { budget, classes, width, inputShape, method });
  let plan: ModelPlan;
  try {
    plan = planModel(spec);
  } catch (e) {
    if (isKwError(e, 'BUDGET_CANNOT_TILE'))
      throw new UsageError((e as Error).message.replace(/^\[BUDGET_CANNOT_TILE\] /, ''));
    throw e;
  }
  const nClasses = plan.nodes.at(-1)!.outShape[0]!;
  if (args.includes('--json')) {
    io.out(`${JSON.stringify(planJson(id, budget, plan, spec.inputShape, nClasses), null, 2)}\n`);
    return 0;
  }
  const bLabel = method
    ? `${method.kind} ${JSON.stringify(method)}`
    : budget === null
      ? 'plain'
      : `KW ${formatBudget(budget)}`;
  io.out(`${id}  ${bLabel}  input ${spec.inputShape.join('x')} (CxHxW)  ${nClasses} classes\n\n`);
  if (plan.kw.warehouses.length) {
    const wrows: (string | number)[][] = [
      ['warehouse', 'b', 'cell', 'layers', 'm_t', 'n', 'params'],
    ];
    for (const w of plan.kw.warehouses) {
      wrows.push([
        w.id,
        formatBudget(w.budget),
        `${w.cellOut}x${w.cellIn}x1x1`,
        w.layers.length,
        w.mt,
        w.n,
        int(w.params),
      ]);
    }
    io.out(`Warehouses\n${table(wrows, ['l', 'r', 'l', 'r', 'r', 'r', 'r'])}\n\n`);
    const lrows: (string | number)[][] = [
      ['layer', 'kernel', 'warehouse', 'm', 'owned cells', 'attention'],
    ];
    for (const [lid, l] of plan.kw.layers) {
      lrows.push([
        lid,
        l.weightShape.join('x'),
        l.warehouse,
        l.m,
        `[${l.start}, ${l.end})`,
        int(l.attentionParams),
      ]);
    }
    io.out(`KW layers\n${table(lrows, ['l', 'l', 'l', 'r', 'r', 'r'])}\n\n`);
  } else {
    io.out(
      method
        ? `No KernelWarehouse layers (${method.kind}: ${plan.nodes.filter((n) => n.op === 'dynamicConv2d' || n.op === 'dynamicLinear').length} dynamic layers).\n\n`
        : 'No KernelWarehouse layers (plain backbone); pass --budget 1x to plan one.\n\n',
    );
  }
  const p = plan.params;
  const trows: (string | number)[][] = [
    ['', 'value'],
    ['params: warehouses', int(p.warehouse)],
    ['params: attention', int(p.attention)],
    ['params: other', int(p.other)],
    ['params: total', `${int(p.total)} (${(p.total / 1e6).toFixed(2)}M)`],
    [
      'params: plain baseline',
      `${int(p.baseline)} (${(p.baseline / 1e6).toFixed(2)}M, x${(p.total / p.baseline).toFixed(3)})`,
    ],
    ['MACs/image: conv', human(plan.macs.conv, 'MAC')],
    ['MACs/image: attention', human(plan.macs.attention, 'MAC')],
    ['MACs/image: assembly', human(plan.macs.assembly, 'MAC')],
    ['MACs/image: total', human(plan.macs.total, 'MAC')],
    ['per-sample kernels (fp32)', human(plan.kernelFloatsPerSample * 4, 'B')],
  ];
  io.out(`Totals\n${table(trows, ['l', 'r'])}\n`);
  return 0;
}
