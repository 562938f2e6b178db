/**
 * One decode step of a Llama-family model over weights held by a kernel set and one engine sequence: the same
 * kernel calls, in the same order, as LlamaModel's chunk with T = 1 (src/model/llama.ts, what Session.forward runs),
 * without the tokenizer, config file and sessions a LlamaModel needs, so that `duo bench model` can time a model
 * made in memory with random weights (no biases, no RoPE frequency factors).
 */
import type { Sequence } from "../../engine/sequence.ts";
import type { ModelKernels } from "../../model/kernels.ts";
import type { RopeScaling } from "../../model/config.ts";
import { decoderLayer, logitsOf } from "../../model/layer.ts";
import { Workspace } from "../../model/workspace.ts";
import { inverseFrequencies, ropeTables } from "../../model/rope.ts";
import type { ModelWeights } from "../../model/weights.ts";
import type { RandomShape } from "./model-random.ts";

export class DecodeStep {
  private readonly invFreq: Float64Array;
  private readonly ws: Workspace; // one row
  private readonly logits: Float32Array; // [vocab]

  constructor(private readonly s: RandomShape, private readonly kernels: ModelKernels, private readonly w: ModelWeights, ropeTheta: number, ropeScaling: RopeScaling, private readonly eps = 1e-5) {
    this.invFreq = inverseFrequencies(s.headDim, ropeTheta, ropeScaling);
    this.ws = new Workspace(kernels, s, 1);
    this.logits = new Float32Array(s.vocabSize);
  }

  /** Token `id` at position `pos` (= seq.length) through every layer; returns the logits [vocab] (a view, reused). */
  async run(seq: Sequence, id: number, pos: number): Promise<Float32Array> {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.s;
    const { kernels: k, w, ws, eps } = this, s = ws.pass(1);
    k.embed(s.x, Int32Array.of(id), w.embed);
    const { cos, sin } = ropeTables(this.invFreq, pos, 1);
    const heads = { Hq, Hkv, D };
    for (let l = 0; l < w.layers.length; l++) {
      await decoderLayer(k, w.layers[l]!, ws, s, 1, eps, heads, cos, sin, seq, l);
    }
    return logitsOf(k, ws, s, 0, w.norm, w.lmHead, eps, this.logits);
  }
}
