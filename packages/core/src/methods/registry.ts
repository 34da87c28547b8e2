/**
 * The method registry: every dynamic method, KernelWarehouse included, by `kind`. Adding a
 * method is one module implementing {@link DynamicMethod} and one line in the list below.
 */
import type { DynamicMethodRef } from '../spec/types.js';
import { condConvMethod } from './condconv.js';
import { doConvMethod } from './doconv.js';
import { dyConvMethod } from './dyconv.js';
import { kwMethod } from './kw.js';
import { odConvMethod } from './odconv.js';
import { slakMethod } from './slak.js';
import type { DynamicMethod } from './types.js';
import { weightNetMethod } from './weightnet.js';

export type {
  DynamicMethod,
  DynamicNode,
  FoldResult,
  ForwardContext,
  LayerContext,
  LayerMacs,
  NormalizeContext,
} from './types.js';

/** A registered method with its settings and group plan types erased. */
// biome-ignore lint/suspicious/noExplicitAny: the registry holds methods of every settings and group type
export type AnyMethod = DynamicMethod<DynamicMethodRef, any>;

const REGISTERED = [
  kwMethod,
  condConvMethod,
  dyConvMethod,
  odConvMethod,
  weightNetMethod,
  doConvMethod,
  slakMethod,
] as const;

/** Every registered dynamic method, by `kind`. */
export const METHODS: ReadonlyMap<string, AnyMethod> = new Map<string, AnyMethod>(
  REGISTERED.map((m) => [m.kind, m as unknown as AnyMethod]),
);

/** The method of `kind`, or undefined. */
export function getMethod(kind: string): AnyMethod | undefined {
  return METHODS.get(kind);
}
