/**
 * Merge the partial attention results of the shards that each hold some pages of the retrieval heads
 * (src/schedule/shard.ts): for every query row and retrieval query head, with lse_s the log-sum-exp of shard s's
 * scores, out = Σ_s e^(lse_s − m) · o_s / Σ_s e^(lse_s − m), m = max_s lse_s — the n-way form of the reference
 * backend's mergeState. Shards that saw no key (lse = −Infinity) contribute nothing; if none did, out = 0.
 */
export function mergePartials(
  out: Float32Array, // [T, Hq, D], written for the query heads in `qHeads`
  parts: readonly { o: Float32Array; lse: Float32Array }[], // o: [T, Hq, D], lse: [T, Hq]
  qHeads: Int32Array, // query heads to merge
  T: number, numHeads: number, headDim: number,
): void {
  const w = new Float64Array(parts.length);
  for (let t = 0; t < T; t++) {
    for (const qh of qHeads) {
      const r = t * numHeads + qh;
      let m = -Infinity;
      for (const p of parts) if (p.lse[r]! > m) m = p.lse[r]!;
      const base = r * headDim;
      if (m === -Infinity) {
        out.fill(0, base, base + headDim);
        continue;
      }
      let sum = 0;
      parts.forEach((p, s) => (sum += w[s] = Math.exp(p.lse[r]! - m)));
      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        for (let s = 0; s < parts.length; s++) if (w[s]! > 0) acc += w[s]! * parts[s]!.o[base + d]!;
        out[base + d] = acc / sum;
      }
    }
  }
}
