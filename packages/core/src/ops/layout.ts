/** Layout helpers shared by the backends (pure index arithmetic). */

/**
 * `shape` and `perm` with size-1 axes dropped and runs of axes that stay neighbours merged: the
 * same data movement on the fewest axes (e.g. `[32, 3, 3, 1, 1, 256, 256]` by
 * `[0, 1, 2, 3, 4, 6, 5]` is 288 matrices `[256, 256]` transposed).
 */
export function simplifyTranspose(
  shape: readonly number[],
  perm: readonly number[],
): { shape: number[]; perm: number[] } {
  const keep = shape.map((d) => d !== 1);
  const renum = new Map<number, number>();
  shape.forEach((_, a) => {
    if (keep[a]) renum.set(a, renum.size);
  });
  const s1 = shape.filter((_, a) => keep[a]);
  const p1 = perm.filter((a) => keep[a]).map((a) => renum.get(a)!);
  // merge input axes a, a + 1 that follow each other in the permutation
  const groups: number[][] = [];
  for (const a of p1) {
    const g = groups[groups.length - 1];
    if (g && g[g.length - 1]! + 1 === a) g.push(a);
    else groups.push([a]);
  }
  const order = [...groups].sort((x, y) => x[0]! - y[0]!);
  const outShape = order.map((g) => g.reduce((m, a) => m * s1[a]!, 1));
  const outPerm = groups.map((g) => order.indexOf(g));
  return { shape: outShape, perm: outPerm };
}
