/**
 * Softmax attention over a row subset, float64, and its flash-style backward (IDENTIFICATION.md §1.2): the forward
 * keeps only O and the per-row log-sum-exp; the backward recomputes P from them, with Δ = rowsum(dO ⊙ O).
 * Queries are the rows of `qRows`, keys those of `kRows` (a superset of every visible key). GQA: query head h reads
 * KV head ⌊h/G⌋. `window` null = full causal attention (the teacher); otherwise the streaming mask (window.ts).
 */
import { type RowSet, sinkEnd, type StreamingWindow, windowStart } from "./window.ts";

export interface Heads {
  Hq: number;
  Hkv: number;
  D: number;
}

/** The visible keys of query position t: [0, a) ∪ [b, t]. */
function keyRanges(window: StreamingWindow | null, t: number): [number, number] {
  if (window === null) return [0, 0];
  const b = windowStart(window, t);
  return [Math.min(sinkEnd(window), b), b];
}

/**
 * out [nq, Hq, D] = softmax(q kᵀ/√D + mask) v; lse [nq, Hq]. q [nq, Hq, D] on qRows; k, v [nk, Hkv, D] on kRows.
 */
export function attend(out: Float64Array, lse: Float64Array, q: Float64Array, qRows: RowSet, k: Float64Array, v: Float64Array, kRows: RowSet, heads: Heads, window: StreamingWindow | null): void {
  const { Hq, Hkv, D } = heads, G = Hq / Hkv, scale = 1 / Math.sqrt(D);
  const s = new Float64Array(qRows.T);
  for (let i = 0; i < qRows.length; i++) {
    const t = qRows.position(i), [a, b] = keyRanges(window, t);
    for (let h = 0; h < Hq; h++) {
      const qo = (i * Hq + h) * D, kvh = Math.floor(h / G);
      let max = -Infinity, n = 0;
      for (let pass = 0; pass < 2; pass++) {
        for (let j = pass ? b : 0, end = pass ? t + 1 : a; j < end; j++) {
          const ko = (kRows.indexOf(j) * Hkv + kvh) * D;
          let d = 0;
          for (let x = 0; x < D; x++) d += q[qo + x]! * k[ko + x]!;
          const z = d * scale;
          s[n++] = z;
          if (z > max) max = z;
        }
      }
      let sum = 0;
      for (let m = 0; m < n; m++) sum += (s[m] = Math.exp(s[m]! - max));
      out.fill(0, qo, qo + D);
      n = 0;
      for (let pass = 0; pass < 2; pass++) {
        for (let j = pass ? b : 0, end = pass ? t + 1 : a; j < end; j++) {
          const p = s[n++]! / sum, vo = (kRows.indexOf(j) * Hkv + kvh) * D;
          for (let x = 0; x < D; x++) out[qo + x]! += p * v[vo + x]!;
        }
      }
      lse[i * Hq + h] = max + Math.log(sum);
    }
  }
}

/**
 * Given dO [nq, Hq, D], accumulate dq [nq, Hq, D] and dk, dv [nk, Hkv, D] (GQA: summed over the group).
 * Per query row: P_j = exp(s_j − lse), dP_j = dO·v_j, dS_j = P_j (dP_j − Δ), Δ = dO·O;
 * dq += dS_j k_j/√D, dk_j += dS_j q/√D, dv_j += P_j dO. Queries run in ascending position, so every key's sums see
 * their terms in the same order whatever rows are present (the cone and the full run agree to the bit).
 */
export function attendBackward(dq: Float64Array, dk: Float64Array, dv: Float64Array, dO: Float64Array, O: Float64Array, lse: Float64Array, q: Float64Array, qRows: RowSet, k: Float64Array, v: Float64Array, kRows: RowSet, heads: Heads, window: StreamingWindow | null): void {
  const { Hq, Hkv, D } = heads, G = Hq / Hkv, scale = 1 / Math.sqrt(D);
  for (let i = 0; i < qRows.length; i++) {
    const t = qRows.position(i), [a, b] = keyRanges(window, t);
    for (let h = 0; h < Hq; h++) {
      const qo = (i * Hq + h) * D, kvh = Math.floor(h / G), L = lse[i * Hq + h]!;
      let delta = 0, zero = true;
      for (let x = 0; x < D; x++) {
        delta += dO[qo + x]! * O[qo + x]!;
        if (dO[qo + x] !== 0) zero = false;
      }
      if (zero) continue; // outside the cone every term is an exact zero
      for (let pass = 0; pass < 2; pass++) {
        for (let j = pass ? b : 0, end = pass ? t + 1 : a; j < end; j++) {
          const ko = (kRows.indexOf(j) * Hkv + kvh) * D;
          let sc = 0, dp = 0;
          for (let x = 0; x < D; x++) {
            sc += q[qo + x]! * k[ko + x]!;
            dp += dO[qo + x]! * v[ko + x]!;
          }
          const p = Math.exp(sc * scale - L), ds = p * (dp - delta) * scale;
          for (let x = 0; x < D; x++) {
            dq[qo + x]! += ds * k[ko + x]!;
            dk[ko + x]! += ds * q[qo + x]!;
            dv[ko + x]! += p * dO[qo + x]!;
          }
        }
      }
    }
  }
}
