/**
 * The token count T of an attend / fill call, from the lengths of q [T, numHeads, D], k and v [T, numKvHeads, D];
 * when they disagree, a SHAPE_MISMATCH that names each tensor that is wrong and says what it must be.
 *
 * Which tensor is wrong is decided by agreement: the T that most of them imply is taken as meant. One mistake is
 * common enough to be recognised on its own: k and v passed with all numHeads heads (GQA: they carry numKvHeads),
 * which makes them as long as q; then which one is wrong cannot be told from lengths, and the message says how
 * their shapes differ.
 */
import { DuoError } from "../errors.ts";

export interface CallDims {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** What a length check needs of a tensor: a host array, or a device tensor (backend/types.ts). */
export interface Sized {
  readonly length: number;
}

interface Tensor {
  name: "q" | "k" | "v";
  a: Sized;
  heads: number;
  /** the T this tensor's length implies, or null when it is not a whole number of rows >= 1 */
  T: number | null;
}

/** T of a call; `q` is null for fill (k and v only). Throws SHAPE_MISMATCH naming every wrong tensor. */
export function callTokens(q: Sized | null, k: Sized, v: Sized, dims: CallDims): number {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = dims;
  const rows = (a: Sized, heads: number) => (a.length > 0 && a.length % (heads * D) === 0 ? a.length / (heads * D) : null);
  const all: Tensor[] = [
    ...(q ? [{ name: "q" as const, a: q, heads: Hq }] : []),
    { name: "k" as const, a: k, heads: Hkv },
    { name: "v" as const, a: v, heads: Hkv },
  ].map((t) => ({ ...t, T: rows(t.a, t.heads) }));
  const shapes = `${q ? `q [T, numHeads=${Hq}, headDim=${D}], ` : ""}k and v [T, numKvHeads=${Hkv}, headDim=${D}]`;

  if (all.every((t) => t.a.length === 0)) {
    throw new DuoError("SHAPE_MISMATCH", `this call has no tokens (${q ? "q, k and v are" : "k and v are"} empty); pass T >= 1 tokens: ${shapes}`);
  }
  if (q && Hq !== Hkv && k.length === q.length && v.length === q.length) {
    throw new DuoError("SHAPE_MISMATCH", `q, k and v all have ${q.length} elements, but k and v carry numKvHeads=${Hkv} heads per token where q carries numHeads=${Hq} (each KV head is shared by ${Hq / Hkv} query heads): for T tokens they must be ${shapes}`);
  }
  const T = meantTokens(all, q !== null);
  const wrong = all.filter((t) => t.T !== T);
  if (T === null) {
    const got = all.map((t) => `${t.name} has ${t.a.length} elements${t.T === null ? ` (not a whole number of ${t.heads} × ${D} rows)` : ` (T = ${t.T})`}`);
    throw new DuoError("SHAPE_MISMATCH", `${all.map((t) => t.name).join(", ")} disagree on the number of tokens T: ${got.join("; ")}; they must be ${shapes} with one T`);
  }
  if (wrong.length === 0) return T;
  const agree = all.filter((t) => t.T === T).map((t) => t.name);
  const by = agree.length ? ` (as ${agree.join(" and ")} ${agree.length === 1 ? "has" : "have"})` : "";
  throw new DuoError("SHAPE_MISMATCH", wrong.map((t) => {
    const want = T * t.heads * D;
    const what = t.name === "q" ? `numHeads=${Hq}` : `numKvHeads=${Hkv}`;
    return `${t.name} has ${t.a.length} elements; for T=${T} tokens${by} it must be [T, ${what}, headDim=${D}] = ${want}${headHint(t, T, dims)}`;
  }).join("; "));
}

/** The T that most tensors imply; null when none agree. */
function meantTokens(all: Tensor[], hasQ: boolean): number | null {
  const votes = new Map<number, number>();
  for (const t of all) if (t.T !== null) votes.set(t.T, (votes.get(t.T) ?? 0) + 1);
  let best: number | null = null, most = 0;
  for (const [T, n] of votes) if (n > most) [best, most] = [T, n];
  // One vote each: with q, q's T (the call's output is [T, numHeads, D]); without, k and v must agree.
  if (most === 1) return hasQ ? all[0]!.T : null;
  return best;
}

/** A hint when k or v holds every query head (the GQA mix-up; q with the KV heads' count is as long as k and v, and
 *  met above). */
function headHint(t: Tensor, T: number, { numHeads: Hq, numKvHeads: Hkv, headDim: D }: CallDims): string {
  if (Hq === Hkv || t.name === "q" || t.a.length !== T * Hq * D) return "";
  return ` (it holds numHeads=${Hq} heads per token; k and v carry the ${Hkv} KV heads, each shared by ${Hq / Hkv} query heads)`;
}
