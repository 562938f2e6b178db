/**
 * The model as the fast score (fast-score.ts) runs it: weights held by a ModelKernels set (kernels.ts: "wasm",
 * "wasm-parallel", or any later set) in the model's own dtype, f32 activations. Built from a model directory (the
 * file's dtype is kept: a bf16 0.5B model holds 1 GB, not the 4 GB of the float64 GateModel) or from an in-memory
 * GateModel (tests: planted and random models, narrowed to f32).
 */
import { type ModelConfig, loadConfig } from "../model/config.ts";
import type { ModelKernels } from "../model/kernels.ts";
import { inverseFrequencies } from "../model/rope.ts";
import { openWeights } from "../model/safetensors.ts";
import { checkTensors, type LayerWeights, loadWeights } from "../model/weights.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import type { GateLayer, GateModel } from "./model.ts";

export interface FastModel {
  config: ModelConfig;
  kernels: ModelKernels;
  embed: import("../model/kernels.ts").Matrix; // [vocab, hidden]
  layers: LayerWeights[];
  invFreq: Float64Array; // [D/2]
}

/** Load a Hugging Face model directory's weights into `kernels` in their file dtype (heads in the file's order). */
export async function loadFastModel(dir: string, kernels: ModelKernels): Promise<FastModel> {
  dir = dir.replace(/[/\\]+$/, "");
  const config = await loadConfig(dir);
  const tensors = await openWeights(dir);
  const bytes = checkTensors(tensors, config);
  kernels.reserve(bytes + 64 * (4 + 16 * config.numLayers), 0); // CAPACITY before anything is loaded
  const w = await loadWeights(tensors, config, kernels, HeadSchedule.full(config.numLayers, config.numKvHeads));
  return { config, kernels, embed: w.embed, layers: w.layers, invFreq: inverseFrequencies(config.headDim, config.ropeTheta, config.ropeScaling) };
}

/** A GateModel's float64 weights narrowed to f32 matrices in `kernels`. */
export function fastModelFromGate(m: GateModel, kernels: ModelKernels): FastModel {
  const mat = (data: Float64Array, rows: number, cols: number) => {
    const x = kernels.matrix(rows, cols, "f32"), f = Float32Array.from(data);
    kernels.write(x, 0, new Uint8Array(f.buffer));
    return x;
  };
  const vec = (data: Float64Array | undefined) => (data ? kernels.vector(Float32Array.from(data)) : undefined);
  const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = m.config;
  const layers = m.layers.map((L: GateLayer): LayerWeights => ({
    inputNorm: vec(L.inputNorm)!, postNorm: vec(L.postNorm)!,
    q: mat(L.q, Hq * D, H), k: mat(L.k, Hkv * D, H), v: mat(L.v, Hkv * D, H), o: mat(L.o, H, Hq * D),
    qBias: vec(L.qBias), kBias: vec(L.kBias), vBias: vec(L.vBias), oBias: vec(L.oBias),
    gate: mat(L.gate, I, H), up: mat(L.up, I, H), down: mat(L.down, H, I),
    gateBias: vec(L.gateBias), upBias: vec(L.upBias), downBias: vec(L.downBias),
  }));
  return { config: m.config, kernels, embed: mat(m.embed, V, H), layers, invFreq: m.invFreq };
}
