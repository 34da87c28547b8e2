/**
 * Parameter declaration types and constructors: a leaf module (no imports), so method modules
 * and the parameter table both read it without an import cycle.
 */
/** How a tensor is initialised by {@link initWeights}. */
export type InitRule =
  /** N(0, 2 / fanOut) (PyTorch kaiming_normal_, mode fan_out, ReLU gain). */
  | { kind: 'kaimingNormalFanOut'; fanOut: number }
  /** U(-bound, bound). PyTorch's default Linear init uses bound = 1/sqrt(fan_in). */
  | { kind: 'uniform'; bound: number }
  | { kind: 'normal'; std: number }
  | { kind: 'const'; value: number }
  /** KW warehouse: every layer's owned slice gets Kaiming fan-out over (end-start)*c_out. */
  | { kind: 'kwWarehouse'; warehouse: string }
  /** Delegated to the method module's init(). */
  | { kind: 'method'; node: string };

/** One named tensor of a model. */
export interface ParamDecl {
  /** Full dotted name, e.g. `layer1.0.conv1.attention.fc1.weight`. */
  name: string;
  shape: number[];
  /** 'param' is trained; 'buffer' is state (BatchNorm running statistics). */
  role: 'param' | 'buffer';
  /** Official recipe: 1-D tensors and biases are not weight-decayed. */
  decay: boolean;
  init: InitRule;
  /** Node that owns it; undefined for warehouses (shared by several nodes). */
  node: string | undefined;
}

/** Name of the tensor holding a warehouse's cells. */
export function warehouseParamName(warehouseId: string): string {
  return `warehouses.${warehouseId}`;
}

/**
 * The official recipe's weight-decay rule (optim_factory.py): 1-D tensors and any tensor named
 * `bias` (or `*.bias`) are not decayed; buffers never are.
 */
export function decays(name: string, shape: readonly number[], role: 'param' | 'buffer'): boolean {
  return role === 'param' && shape.length > 1 && !/(^|\.)bias$/.test(name);
}

/** A parameter declaration (`node` undefined for method-relative names and warehouses). */
export function paramDecl(
  node: string | undefined,
  name: string,
  shape: number[],
  init: InitRule,
  role: 'param' | 'buffer' = 'param',
): ParamDecl {
  return { name, shape, role, decay: decays(name, shape, role), init, node };
}
