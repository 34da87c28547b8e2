import { describeValue, KwError } from './errors.js';
import { METHODS } from './methods/registry.js';
import { layerContext, type ParamDecl, paramTable } from './params.js';
import { Rng } from './rng.js';
import type { DynamicConv2dNode, DynamicLinearNode } from './spec/types.js';
import { numel, type Tensor, type WeightMap } from './tensor.js';

/** Options of {@link initWeights}. */
export interface InitOptions {
  /** PRNG seed, an integer in [0, 2^32 - 1] (as the CLI's `--seed`); equal seeds give identical weights. Default 0. */
  seed?: number;
}

/** The largest seed: the PRNG keeps 32 bits of it (`seed >>> 0`), so larger ones would alias. */
export const MAX_SEED = 2 ** 32 - 1;

/**
 * Check a seed: an integer in [0, 2^32 - 1]. Anything else (NaN, infinities, null, strings,
 * fractions, negatives, 2^32 and above) would be coerced by `>>> 0` to another seed (NaN and
 * 2^32 to 0, -1 to 2^32 - 1, 1.5 to 1), so it is refused with ARGUMENT_INVALID naming the value.
 */
function checkSeed(seed: unknown): number {
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
    throw new KwError(
      'ARGUMENT_INVALID',
      `initWeights: seed must be an integer in [0, ${MAX_SEED}], found ${describeValue(seed)}`,
      { field: 'seed', expected: `integer in [0, ${MAX_SEED}]`, actual: seed },
    );
  }
  return seed;
}

/**
 * Fresh weights for a spec, initialised as the official code does: convs Kaiming-normal
 * fan-out, BatchNorm 1/0, KW attention Linear layers Kaiming-normal fan-out with zero bias,
 * and every warehouse slice that a layer owns Kaiming-normal fan-out over
 * `(end - start) * c_out` (official `allocate()`).
 *
 * @example
 * const weights = initWeights(spec, { seed: 1 });
 */
export function initWeights(spec: unknown, options: InitOptions = {}): WeightMap {
  const seed = options?.seed === undefined ? 0 : checkSeed(options.seed);
  const table = paramTable(spec);
  const rng = new Rng(seed);
  const out: WeightMap = new Map();
  const methodInits = new Map<string, Map<string, Tensor>>();
  for (const p of table.params) {
    out.set(p.name, initOne(p, table, rng, methodInits));
  }
  return out;
}

function initOne(
  p: ParamDecl,
  table: ReturnType<typeof paramTable>,
  rng: Rng,
  methodInits: Map<string, Map<string, Tensor>>,
): Tensor {
  const n = numel(p.shape);
  const r = p.init;
  switch (r.kind) {
    case 'kaimingNormalFanOut':
      return { shape: p.shape, data: rng.normalArray(n, Math.sqrt(2 / r.fanOut)) };
    case 'uniform':
      return { shape: p.shape, data: rng.uniformArray(n, -r.bound, r.bound) };
    case 'normal':
      return { shape: p.shape, data: rng.normalArray(n, r.std) };
    case 'const':
      return { shape: p.shape, data: new Float32Array(n).fill(r.value) };
    case 'kwWarehouse': {
      const w = table.kw.warehouses.find((x) => x.id === r.warehouse)!;
      const data = new Float32Array(n);
      const cell = w.cellOut * w.cellIn;
      for (const id of w.layers) {
        const l = table.kw.layers.get(id)!;
        const std = Math.sqrt(2 / ((l.end - l.start) * w.cellOut));
        for (let i = l.start * cell; i < l.end * cell; i++) data[i] = std * rng.normal();
      }
      return { shape: p.shape, data };
    }
    case 'method': {
      let m = methodInits.get(r.node);
      if (!m) {
        const node = table.analyzed.byId.get(r.node) as DynamicConv2dNode | DynamicLinearNode;
        const method = METHODS.get(node.method.kind);
        if (!method?.init)
          throw new KwError(
            'SPEC_UNKNOWN_METHOD',
            `node "${r.node}": method "${node.method.kind}" has no init`,
          );
        m = method.init(layerContext(table, node), rng);
        methodInits.set(r.node, m);
      }
      const t = m.get(p.name.slice(r.node.length + 1));
      if (!t)
        throw new KwError(
          'WEIGHTS_MISSING',
          `method init of node "${r.node}" did not produce "${p.name}"`,
        );
      return t;
    }
  }
}
