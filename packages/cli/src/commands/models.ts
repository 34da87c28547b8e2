import { formatBudget } from '@kernelwarehouse/core';
import { listModels } from '@kernelwarehouse/zoo';
import { type Io, table } from '../io.js';

/** `kw models`: the zoo with its published budgets and parameter counts. */
export function modelsCommand(args: string[], io: Io): number {
  const json = args.includes('--json');
  const models = listModels();
  if (json) {
    io.out(
      `${JSON.stringify(
        models.map((m) => ({
          id: m.id,
          description: m.description,
          inputShape: m.inputShape,
          publishedBudgets: m.publishedBudgets,
          published: m.published,
        })),
        null,
        2,
      )}\n`,
    );
    return 0;
  }
  const rows: (string | number)[][] = [
    ['model', 'input', 'published budgets', 'published params (plain -> KW)', 'description'],
  ];
  for (const m of models) {
    rows.push([
      m.id,
      m.inputShape.join('x'),
      m.publishedBudgets.length
        ? m.publishedBudgets.map(formatBudget).join(', ')
        : 'any (no published rows)',
      m.published.map((p) => `${p.paramsM}M`).join(' -> ') || '-',
      m.description,
    ]);
  }
  io.out(`${table(rows)}\n`);
  return 0;
}
