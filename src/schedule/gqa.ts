/**
 * Grouped-query attention mapping (SPEC.md §1.5): with G = numHeads / numKvHeads, query head q reads KV head ⌊q/G⌋,
 * so KV head h serves the G consecutive query heads h·G .. h·G+G−1, and a group moves with its KV head.
 */
import { checkInt, DuoError } from "../errors.ts";

/** The KV head that query head `q` reads. */
export function kvHeadOf(q: number, groupSize: number): number {
  return Math.floor(checkInt("query head", q, 0) / checkInt("groupSize", groupSize, 1));
}

/**
 * The query heads of the given KV heads, group by group in the same order: [h0, h1, …] → [h0·G … h0·G+G−1, h1·G …].
 * Of a layer's retrieval (or streaming) KV heads: its retrieval (streaming) query heads; of a layer's KV-head
 * permutation (new position → original head): the query-head permutation.
 */
export function queryHeads(kvHeads: ArrayLike<number>, groupSize: number): Int32Array {
  checkInt("groupSize", groupSize, 1);
  const out = new Int32Array(kvHeads.length * groupSize);
  for (let i = 0; i < kvHeads.length; i++) {
    const h = kvHeads[i]!;
    if (!Number.isInteger(h) || h < 0) throw new DuoError("INVALID_ARGUMENT", `KV head at index ${i} is ${h}; heads are integers >= 0`);
    for (let g = 0; g < groupSize; g++) out[i * groupSize + g] = h * groupSize + g;
  }
  return out;
}
