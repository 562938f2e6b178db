/**
 * One decode step of a Llama-family model over weights held by a kernel set and one engine sequence: the same
 * kernel calls, in the same order, as LlamaModel's chunk with T = 1 (src/model/llama.ts, what Session.forward runs),
 * without the tokenizer, config file and sessions a LlamaModel needs, so that `duo bench model` can time a model
 * made in memory with random weights (no biases, no RoPE frequency factors).
 */
import type { Sequence } from "../../engine/sequence.ts";
import type { ModelKernels } from "../../model/kernels.ts";
import type { RopeScaling } from "../../model/config.ts";
import { attentionInputs, layerOutput } from "../../model/layer.ts";
import { inverseFrequencies, ropeTables } from "../../model/rope.ts";
import type { ModelWeights } from "../../model/weights.ts";
import type { RandomShape } from "./model-random.ts";

export class DecodeStep {
  private readonly invFreq: Float64Array;
  private readonly x: Float32Array; // [hidden] residual stream
  private readonly h: Float32Array; // [hidden] normed
  private readonly q: Float32Array; // [Hq, D]
  private readonly k: Float32Array; // [Hkv, D]
  private readonly v: Float32Array; // [Hkv, D]
  private readonly o: Float32Array; // [hidden]
  private readonly gate: Float32Array; // [I]
  private readonly up: Float32Array; // [I]
  private readonly logits: Float32Array; // [vocab]

  constructor(private readonly s: RandomShape, private readonly kernels: ModelKernels, private readonly w: ModelWeights, ropeTheta: number, ropeScaling: RopeScaling, private readonly eps = 1e-5) {
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D } = s;
    this.invFreq = inverseFrequencies(D, ropeTheta, ropeScaling);
    [this.x, this.h, this.o] = [new Float32Array(H), new Float32Array(H), new Float32Array(H)];
    this.q = new Float32Array(Hq * D);
    [this.k, this.v] = [new Float32Array(Hkv * D), new Float32Array(Hkv * D)];
    [this.gate, this.up] = [new Float32Array(I), new Float32Array(I)];
    this.logits = new Float32Array(s.vocabSize);
  }

  /** Token `id` at position `pos` (= seq.length) through every layer; returns the logits [vocab] (a view, reused). */
  async run(seq: Sequence, id: number, pos: number): Promise<Float32Array> {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.s;
    const { kernels: k, w, x, h, q, v, o, gate, up, eps } = this;
    k.embed(x, Int32Array.of(id), w.embed);
    const { cos, sin } = ropeTables(this.invFreq, pos, 1);
    const qkv = { h, q, k: this.k, v }, mlp = { h, o, gate, up }, heads = { Hq, Hkv, D };
    for (let l = 0; l < w.layers.length; l++) {
      const L = w.layers[l]!;
      attentionInputs(k, L, x, 1, eps, heads, cos, sin, qkv);
      const a = await seq.attend(l, q, this.k, v); // [1, Hq, D]
      layerOutput(k, L, x, a, 1, eps, mlp);
    }
    k.rmsnorm(h, x, w.norm, 1, eps);
    k.matmul(this.logits, h, w.lmHead, 1);
    return this.logits;
  }
}
