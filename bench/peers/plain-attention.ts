/**
 * The plain-TypeScript peer: full-attention decode for one layer written the straightforward way, f32 throughout,
 * one thread. The cache is head-major ([Hkv, T, D]) so each head scans its keys contiguously; query head q reads
 * KV head ⌊q/G⌋. What a JavaScript engine without a kernel library would do; `duo bench` times it beside ours.
 */
export interface PlainShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

export class PlainDecode {
  readonly k: Float32Array;
  readonly v: Float32Array;
  private readonly scores: Float32Array;

  /** A cache of `context` tokens with seeded contents. */
  constructor(readonly shape: PlainShape, readonly context: number, fill: (a: Float32Array, seed: number) => void) {
    const n = shape.numKvHeads * context * shape.headDim;
    this.k = new Float32Array(n);
    this.v = new Float32Array(n);
    fill(this.k, 1);
    fill(this.v, 2);
    this.scores = new Float32Array(context);
  }

  /** out[q, :] = softmax(q·Kᵀ / √D) · V over all `context` tokens, for q: [Hq, D]. */
  attend(q: Float32Array, out: Float32Array): void {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.shape;
    const T = this.context, G = Hq / Hkv, scale = 1 / Math.sqrt(D);
    const { k, v, scores } = this;
    for (let h = 0; h < Hq; h++) {
      const base = Math.floor(h / G) * T * D, qo = h * D;
      let max = -Infinity;
      for (let t = 0; t < T; t++) {
        let dot = 0;
        const ko = base + t * D;
        for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
        const s = dot * scale;
        scores[t] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = 0; t < T; t++) {
        const e = Math.exp(scores[t]! - max);
        scores[t] = e;
        sum += e;
      }
      out.fill(0, qo, qo + D);
      for (let t = 0; t < T; t++) {
        const w = scores[t]! / sum, vo = base + t * D;
        for (let d = 0; d < D; d++) out[qo + d] = out[qo + d]! + w * v[vo + d]!;
      }
    }
  }
}
