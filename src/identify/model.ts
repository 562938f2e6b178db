/**
 * The model as gate identification sees it: a Llama-family config and every weight as a float64 array in Hugging
 * Face layout (the reference computes in float64; f16/bf16/f32 weights widen exactly). Loaded from a model
 * directory, or built in memory (tests build planted-circuit models this way).
 */
import { DuoError } from "../errors.ts";
import { type ModelConfig, loadConfig } from "../model/config.ts";
import { inverseFrequencies } from "../model/rope.ts";
import { openWeights, readTensorF32 } from "../model/safetensors.ts";
import { TextTokenizer } from "../model/tokenizer.ts";
import { checkTensors, expectedTensors } from "../model/weights.ts";

export interface GateLayer {
  inputNorm: Float64Array; // [hidden]
  q: Float64Array; // [Hq·D, hidden]
  k: Float64Array; // [Hkv·D, hidden]
  v: Float64Array; // [Hkv·D, hidden]
  o: Float64Array; // [hidden, Hq·D]
  qBias?: Float64Array;
  kBias?: Float64Array;
  vBias?: Float64Array;
  oBias?: Float64Array;
  postNorm: Float64Array; // [hidden]
  gate: Float64Array; // [I, hidden]
  up: Float64Array; // [I, hidden]
  down: Float64Array; // [hidden, I]
  gateBias?: Float64Array;
  upBias?: Float64Array;
  downBias?: Float64Array;
}

export interface GateModel {
  config: ModelConfig;
  embed: Float64Array; // [vocab, hidden]
  layers: GateLayer[];
  norm: Float64Array; // [hidden]
  invFreq: Float64Array; // [D/2] RoPE inverse frequencies, scaling applied
}

/** Build from named tensors (HF names, checked against the config's shapes). No LM head: the loss reads the final
 *  normed hidden state (upstream calls `model.model`). */
export function gateModelFromTensors(config: ModelConfig, tensor: (name: string) => ArrayLike<number> | undefined): GateModel {
  const get = (name: string, shape: number[]): Float64Array => {
    const t = tensor(name);
    const n = shape.reduce((a, b) => a * b, 1);
    if (!t) throw new DuoError("SHAPE_MISMATCH", `the model has no tensor "${name}" (shape [${shape.join(", ")}])`);
    if (t.length !== n) throw new DuoError("SHAPE_MISMATCH", `tensor "${name}" has ${t.length} elements; config.json implies [${shape.join(", ")}]`);
    return Float64Array.from(t);
  };
  const want = expectedTensors(config);
  const req = (name: string) => get(name, want.get(name)!);
  const opt = (name: string) => (want.has(name) ? req(name) : undefined);
  const layers: GateLayer[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`, a = `${p}self_attn.`, m = `${p}mlp.`;
    layers.push({
      inputNorm: req(`${p}input_layernorm.weight`),
      q: req(`${a}q_proj.weight`), k: req(`${a}k_proj.weight`), v: req(`${a}v_proj.weight`), o: req(`${a}o_proj.weight`),
      qBias: opt(`${a}q_proj.bias`), kBias: opt(`${a}k_proj.bias`), vBias: opt(`${a}v_proj.bias`), oBias: opt(`${a}o_proj.bias`),
      postNorm: req(`${p}post_attention_layernorm.weight`),
      gate: req(`${m}gate_proj.weight`), up: req(`${m}up_proj.weight`), down: req(`${m}down_proj.weight`),
      gateBias: opt(`${m}gate_proj.bias`), upBias: opt(`${m}up_proj.bias`), downBias: opt(`${m}down_proj.bias`),
    });
  }
  return {
    config,
    embed: req("model.embed_tokens.weight"),
    layers,
    norm: req("model.norm.weight"),
    invFreq: inverseFrequencies(config.headDim, config.ropeTheta, config.ropeScaling),
  };
}

/** A Hugging Face model directory: config.json (a Llama-family architecture), safetensors, tokenizer.json. */
export async function loadGateModel(dir: string): Promise<{ model: GateModel; tokenizer: TextTokenizer }> {
  dir = dir.replace(/[/\\]+$/, "");
  const config = await loadConfig(dir); // non-Llama architectures fail here, naming the supported ones
  const tensors = await openWeights(dir);
  checkTensors(tensors, config);
  const data = new Map<string, Float32Array>();
  for (const name of expectedTensors(config).keys()) data.set(name, await readTensorF32(tensors.get(name)!));
  const tokenizer = await TextTokenizer.load(dir);
  return { model: gateModelFromTensors(config, (n) => data.get(n)), tokenizer };
}
