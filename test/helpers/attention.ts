/**
 * An independent float64 attention oracle for tests: written from SPEC.md §3 directly, sharing no code with
 * src/ (so a bug in the reference backend cannot hide itself). Whole sequences in, one output per query row.
 */
export type Visible = (t: number, p: number) => boolean;

/**
 * q: [N, Hq, D]; k, v: [N, Hkv, D] for all N tokens (positions 0..N−1). For each query head qh (KV head ⌊qh/G⌋),
 * rows `rows` (absolute positions), keys where visible(kvHead)(t, p). Returns [rows.length, Hq, D] float64.
 */
export function maskedAttention(
  q: Float32Array, k: Float32Array, v: Float32Array,
  N: number, Hq: number, Hkv: number, D: number,
  rows: number[], visibleFor: (kvHead: number) => Visible,
): Float64Array {
  const G = Hq / Hkv;
  const out = new Float64Array(rows.length * Hq * D);
  const scale = 1 / Math.sqrt(D);
  rows.forEach((t, i) => {
    for (let qh = 0; qh < Hq; qh++) {
      const h = Math.floor(qh / G);
      const vis = visibleFor(h);
      const ps: number[] = [], s: number[] = [];
      for (let p = 0; p < N; p++) {
        if (!vis(t, p)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * Hq + qh) * D + d]! * k[(p * Hkv + h) * D + d]!;
        ps.push(p);
        s.push(dot * scale);
      }
      const m = Math.max(...s);
      let sum = 0;
      const w = s.map((x) => {
        const e = Math.exp(x - m);
        sum += e;
        return e;
      });
      for (let d = 0; d < D; d++) {
        let acc = 0;
        ps.forEach((p, j) => (acc += w[j]! * v[(p * Hkv + h) * D + d]!));
        out[(i * Hq + qh) * D + d] = ps.length ? acc / sum : 0;
      }
    }
  });
  return out;
}

/** Max |a−b| and the first index where |a−b| > atol + rtol·|b| (−1 if none). */
export function compare(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): { maxAbs: number; bad: number } {
  let maxAbs = 0, bad = -1;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (!(e <= atol + rtol * Math.abs(b[i]!)) && bad < 0) bad = i;
    if (e > maxAbs || Number.isNaN(e)) maxAbs = Number.isNaN(e) ? NaN : e;
  }
  return { maxAbs, bad };
}

/** Upstream streaming rule (SPEC.md §3.2): in a call starting at c, query t sees p ≤ t with p < S or p ≥ c − R. */
export const upstreamVisible = (S: number, R: number, chunkStart: (t: number) => number): Visible =>
  (t, p) => p <= t && (p < S || p >= chunkStart(t) - R);
/** Window rule: query t sees p ≤ t with p < S or p ≥ t − R. */
export const windowVisible = (S: number, R: number): Visible => (t, p) => p <= t && (p < S || p >= t - R);
export const causal: Visible = (t, p) => p <= t;
