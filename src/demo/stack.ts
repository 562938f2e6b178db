/**
 * Drive a whole attention stack (every layer of a model shape) through one engine sequence with synthetic,
 * seeded q/k/v: chunked prefill, cache fills to a target context, timed decode steps. No model weights — this
 * measures exactly the attention and KV-cache part of inference.
 */
import type { Sequence } from "../engine/sequence.ts";
import type { ModelShape } from "../shape.ts";

/** Seeded uniform [-1, 1) data (xorshift32): cheap enough to make hundreds of MB. */
export function randomData(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s >>> 0) / 2147483648 - 1;
  }
  return a;
}

/** Reusable per-shape buffers: one chunk of K/V for fills, one token of q/k/v for decode. */
export class SyntheticInputs {
  readonly q1: Float32Array; // [1, Hq, D]
  readonly k1: Float32Array; // [1, Hkv, D]
  readonly v1: Float32Array;
  private readonly kChunk: Float32Array; // [chunk, Hkv, D]
  private readonly vChunk: Float32Array;
  private readonly qChunk: Float32Array; // [chunk, Hq, D]

  constructor(readonly shape: ModelShape, readonly chunk: number, seed = 42) {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
    this.q1 = randomData(Hq * D, seed);
    this.k1 = randomData(Hkv * D, seed + 1);
    this.v1 = randomData(Hkv * D, seed + 2);
    this.qChunk = randomData(chunk * Hq * D, seed + 3);
    this.kChunk = randomData(chunk * Hkv * D, seed + 4);
    this.vChunk = randomData(chunk * Hkv * D, seed + 5);
  }

  /** q/k/v of a T-token chunk (T ≤ chunk), views into the shared buffers. */
  chunkOf(T: number): [Float32Array, Float32Array, Float32Array] {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.shape;
    return [this.qChunk.subarray(0, T * Hq * D), this.kChunk.subarray(0, T * Hkv * D), this.vChunk.subarray(0, T * Hkv * D)];
  }
}

/** Chunked prefill of `tokens` tokens through every layer. Calls `progress(done)` after each layer-chunk. */
export async function prefill(seq: Sequence, inputs: SyntheticInputs, tokens: number, progress?: (done: number) => void): Promise<number> {
  const t0 = performance.now();
  let done = 0;
  for (let start = 0; start < tokens; start += inputs.chunk) {
    const [q, k, v] = inputs.chunkOf(Math.min(inputs.chunk, tokens - start));
    for (let l = 0; l < inputs.shape.numLayers; l++) {
      await seq.attend(l, q, k, v);
      progress?.(++done);
    }
  }
  return performance.now() - t0;
}

/** Store K/V (no attention) until every layer holds `context` tokens. */
export async function fillTo(seq: Sequence, inputs: SyntheticInputs, context: number, progress?: (tokens: number) => void): Promise<void> {
  const L = inputs.shape.numLayers;
  while (seq.length(L - 1) < context) {
    const T = Math.min(inputs.chunk, context - seq.length(L - 1));
    const [, k, v] = inputs.chunkOf(T);
    for (let l = 0; l < L; l++) await seq.fill(l, k, v);
    progress?.(seq.length(L - 1));
  }
}

/** Decode through every layer of each sequence: one untimed warm-up step each, then `steps` rounds of one step per
 *  sequence in turn, so that all of them see the same machine; returns each one's fastest step in milliseconds (on a
 *  shared machine single steps swing by tens of percent: the fastest is what the hardware does). */
export async function decode(seqs: Sequence[], inputs: SyntheticInputs, steps: number): Promise<number[]> {
  const step = async (seq: Sequence) => {
    for (let l = 0; l < inputs.shape.numLayers; l++) await seq.attend(l, inputs.q1, inputs.k1, inputs.v1);
  };
  for (const seq of seqs) await step(seq);
  const best = seqs.map(() => Infinity);
  for (let i = 0; i < steps; i++) {
    for (const [j, seq] of seqs.entries()) {
      const t0 = performance.now();
      await step(seq);
      best[j] = Math.min(best[j]!, performance.now() - t0);
    }
  }
  return best;
}
