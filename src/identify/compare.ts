/**
 * Agreement between two gate tables over the same heads (IDENTIFICATION.md §2.1, §4.1 `--compare`):
 *  - Spearman's rank correlation (average ranks for ties);
 *  - per sparsity s, with B's retrieval set R_B = sparsify(B, s) (upstream's seed-42 tie-break) as the truth:
 *    AUC = P(a retrieval head of B outscores a streaming head of B under A), ties counting ½; and the top-k
 *    overlap |R_A ∩ R_B| / |R_B| with R_A = sparsify(A, s) (k = the same count for both).
 */
import { DuoError } from "../errors.ts";
import { makePattern } from "../pattern/pattern.ts";
import { sparsify } from "../pattern/sparsify.ts";
import { rankGates, ranks } from "./score.ts";

export interface SparsityAgreement {
  sparsity: number;
  /** retrieval heads kept at this sparsity */
  kept: number;
  auc: number;
  overlap: number;
}

export interface GateAgreement {
  heads: number;
  spearman: number;
  sparsities: SparsityAgreement[];
}

function pearson(a: Float64Array, b: Float64Array): number {
  const n = a.length, ma = a.reduce((s, x) => s + x, 0) / n, mb = b.reduce((s, x) => s + x, 0) / n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb);
    saa += (a[i]! - ma) ** 2;
    sbb += (b[i]! - mb) ** 2;
  }
  return saa === 0 || sbb === 0 ? NaN : sab / Math.sqrt(saa * sbb);
}

export function spearman(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return pearson(ranks(a), ranks(b));
}

function retrievalSet(gates: ArrayLike<number>, numKvHeads: number, s: number): boolean[] {
  const rows = Array.from({ length: gates.length / numKvHeads }, (_, l) => Array.from({ length: numKvHeads }, (_, h) => Math.min(1, Math.max(0, gates[l * numKvHeads + h]!))));
  return sparsify(makePattern(rows, { sinkSize: 0, recentSize: 0 }), { sparsity: s }).mask.flat();
}

/** A (scores or gates, any scale) against B (the reference gates), both [layers·numKvHeads] in C order. */
export function compareGates(a: ArrayLike<number>, b: ArrayLike<number>, numKvHeads: number, sparsities: readonly number[] = [0.5, 0.75]): GateAgreement {
  if (a.length !== b.length || a.length === 0 || a.length % numKvHeads !== 0) {
    throw new DuoError("SHAPE_MISMATCH", `cannot compare ${a.length} gates with ${b.length}: both patterns need the same layers x KV heads`);
  }
  const out: SparsityAgreement[] = sparsities.map((s) => {
    const truth = retrievalSet(b, numKvHeads, s);
    const mine = retrievalSet(rankGates(a), numKvHeads, s); // any scale: sparsify sees A's order
    let wins = 0, pairs = 0, both = 0, kept = 0;
    truth.forEach((rt, i) => {
      if (!rt) return;
      kept++;
      if (mine[i]) both++;
      truth.forEach((st, j) => {
        if (st) return;
        pairs++;
        wins += a[i]! > a[j]! ? 1 : a[i]! === a[j]! ? 0.5 : 0;
      });
    });
    return { sparsity: s, kept, auc: pairs ? wins / pairs : NaN, overlap: kept ? both / kept : NaN };
  });
  return { heads: a.length, spearman: spearman(a, b), sparsities: out };
}
