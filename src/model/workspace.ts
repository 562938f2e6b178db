/**
 * The activations of a forward pass of up to `rows` tokens, held by a kernel set (kernels.ts `Activations`: the
 * wasm memory, device memory, or host arrays), made once per model and reused by every chunk, plus the host
 * mirrors of what crosses to the attention engine (q, k, v down), made on first use: a set that attends in the
 * engine's backend (cuda on cuda) never needs them.
 */
import type { ModelConfig } from "./config.ts";
import type { Activations, ModelKernels } from "./kernels.ts";

/** The sizes a workspace needs: those of a ModelConfig (or of any shape that has them, like the bench's random models). */
export type LayerDims = Pick<ModelConfig, "hiddenSize" | "intermediateSize" | "numHeads" | "numKvHeads" | "headDim" | "vocabSize">;

/** One pass's activations, each [T, ·] row-major. */
export interface PassActivations {
  x: Activations; // [T, hidden] residual stream
  h: Activations; // [T, hidden] normed
  q: Activations; // [T, Hq, D]
  k: Activations; // [T, Hkv, D]
  v: Activations; // [T, Hkv, D]
  a: Activations; // [T, Hq, D] attention output
  o: Activations; // [T, hidden] a projection's output
  gate: Activations; // [T, I]
  up: Activations; // [T, I]
}

export class Workspace {
  private readonly all: PassActivations;
  /** [hidden] the last row normed, and [vocab] its logits */
  readonly last: Activations;
  readonly logits: Activations;
  private mirrors?: { q: Float32Array; k: Float32Array; v: Float32Array };

  constructor(private readonly kn: ModelKernels, readonly dims: LayerDims, readonly rows: number) {
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = dims;
    const f = (n: number) => kn.activations(rows * n);
    this.all = { x: f(H), h: f(H), q: f(Hq * D), k: f(Hkv * D), v: f(Hkv * D), a: f(Hq * D), o: f(H), gate: f(I), up: f(I) };
    this.last = kn.activations(H);
    this.logits = kn.activations(V);
  }

  /** The host mirrors of q [rows, Hq·D], k and v [rows, Hkv·D], allocated on the first call. */
  hostMirrors(): { q: Float32Array; k: Float32Array; v: Float32Array } {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.dims, rows = this.rows;
    return this.mirrors ??= { q: new Float32Array(rows * Hq * D), k: new Float32Array(rows * Hkv * D), v: new Float32Array(rows * Hkv * D) };
  }

  /** Bytes of kernel-set activations a workspace of `rows` rows holds (for ModelKernels.reserve). */
  static bytes(dims: LayerDims, rows: number): number {
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = dims;
    return 4 * (rows * (3 * H + 2 * Hq * D + 2 * Hkv * D + 2 * I) + H + V) + 64 * 11;
  }

  /** Views of the first T rows (T ≤ rows). */
  pass(T: number): PassActivations {
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.dims;
    const v = (a: Activations, n: number) => this.kn.view(a, 0, T * n);
    const s = this.all;
    return { x: v(s.x, H), h: v(s.h, H), q: v(s.q, Hq * D), k: v(s.k, Hkv * D), v: v(s.v, Hkv * D), a: v(s.a, Hq * D), o: v(s.o, H), gate: v(s.gate, I), up: v(s.up, I) };
  }

  release(): void {
    for (const a of [...Object.values(this.all), this.last, this.logits]) this.kn.release(a);
  }
}
