/**
 * A Hugging Face `config.json` (+ `generation_config.json`) read into the few numbers the Llama-family forward
 * needs, validated: unknown architectures, activations and RoPE types fail here with the list of what works.
 */
import { DuoError } from "../errors.ts";
import { exists, readText } from "../runtime.ts";
import type { RopeScaling as PresetRopeScaling } from "../schedule/presets.ts";

export const ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"] as const;
export type Architecture = (typeof ARCHITECTURES)[number];
const MODEL_TYPES: Record<string, Architecture> = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" };

/** How RoPE frequencies are rescaled for long context (HF `rope_scaling` / `rope_parameters`); the scaled kinds
 *  are the presets' (src/schedule/presets.ts). */
export type RopeScaling = { type: "none" } | PresetRopeScaling;
export const ROPE_TYPES = ["default", "linear", "llama3"] as const;

export interface ModelConfig {
  architecture: Architecture;
  numLayers: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have a bias (Qwen2; Llama with attention_bias) */
  qkvBias: boolean;
  /** o projection has a bias (Llama with attention_bias) */
  oBias: boolean;
  /** gate/up/down projections have a bias (Llama with mlp_bias) */
  mlpBias: boolean;
  /** tokens of the sliding attention window, or null when attention is global */
  slidingWindow: number | null;
  bosTokenId: number | null;
  /** every id that ends generation (config.json and generation_config.json together) */
  eosTokenIds: number[];
}

type Json = Record<string, unknown>;

function num(cfg: Json, key: string, where: string, opts: { int?: boolean; min?: number; fallback?: number } = {}): number {
  const v = cfg[key] ?? opts.fallback;
  const min = opts.min ?? 1;
  if (typeof v !== "number" || !Number.isFinite(v) || (opts.int !== false && !Number.isInteger(v)) || v < min) {
    const kind = opts.int === false ? "a number" : "an integer";
    throw new DuoError("IO", `${where}: "${key}" must be ${kind} >= ${min}, got ${JSON.stringify(cfg[key])}`);
  }
  return v;
}

function ids(v: unknown): number[] {
  if (typeof v === "number" && Number.isInteger(v)) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number" && Number.isInteger(x));
  return [];
}

function parseRope(cfg: Json, where: string): { theta: number; scaling: RopeScaling } {
  // transformers >= 5 writes `rope_parameters: { rope_type, rope_theta, ... }`; older configs `rope_theta` + `rope_scaling`.
  const params = (cfg.rope_parameters ?? cfg.rope_scaling ?? null) as Json | null;
  const theta = num(params && typeof params.rope_theta === "number" ? params : cfg, "rope_theta", where, { int: false, min: 1e-9, fallback: 10000 });
  if (params === null) return { theta, scaling: { type: "none" } };
  if (typeof params !== "object") throw new DuoError("IO", `${where}: "rope_scaling" must be an object or null`);
  const type = params.rope_type ?? params.type ?? "default";
  const at = `${where} rope_scaling`;
  switch (type) {
    case "default":
      return { theta, scaling: { type: "none" } };
    case "linear":
      return { theta, scaling: { type: "linear", factor: num(params, "factor", at, { int: false }) } };
    case "llama3": {
      const s = {
        type: "llama3" as const,
        factor: num(params, "factor", at, { int: false }),
        lowFreqFactor: num(params, "low_freq_factor", at, { int: false, min: 1e-9 }),
        highFreqFactor: num(params, "high_freq_factor", at, { int: false, min: 1e-9 }),
        originalMaxPositionEmbeddings: num(params, "original_max_position_embeddings", at),
      };
      if (s.highFreqFactor <= s.lowFreqFactor) throw new DuoError("IO", `${at}: high_freq_factor (${s.highFreqFactor}) must be greater than low_freq_factor (${s.lowFreqFactor})`);
      return { theta, scaling: s };
    }
    default:
      throw new DuoError("UNSUPPORTED", `${where}: RoPE type ${JSON.stringify(type)} is not supported; supported: none, ${ROPE_TYPES.join(", ")}`);
  }
}

/** Validate a parsed config.json. `generation` is generation_config.json when present (its eos ids are added). */
export function parseConfig(cfg: Json, where = "config.json", generation: Json = {}): ModelConfig {
  const archs = Array.isArray(cfg.architectures) ? cfg.architectures : [];
  const named = archs.find((a): a is Architecture => (ARCHITECTURES as readonly unknown[]).includes(a));
  const architecture = named ?? (archs.length === 0 ? MODEL_TYPES[String(cfg.model_type)] : undefined);
  if (!architecture) {
    const what = archs.length ? `architectures ${JSON.stringify(archs)}` : `model_type ${JSON.stringify(cfg.model_type)}`;
    throw new DuoError("UNSUPPORTED", `${where}: ${what} is not supported; supported: ${ARCHITECTURES.join(", ")}`);
  }
  const act = cfg.hidden_act ?? cfg.hidden_activation ?? "silu";
  if (act !== "silu") throw new DuoError("UNSUPPORTED", `${where}: hidden_act ${JSON.stringify(act)} is not supported; supported: "silu" (SwiGLU MLP)`);
  const hiddenSize = num(cfg, "hidden_size", where);
  const numHeads = num(cfg, "num_attention_heads", where);
  const numKvHeads = num(cfg, "num_key_value_heads", where, { fallback: numHeads });
  if (numHeads % numKvHeads !== 0) throw new DuoError("IO", `${where}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const headDim = num(cfg, "head_dim", where, { fallback: Math.floor(hiddenSize / numHeads) });
  if (headDim % 2 !== 0) throw new DuoError("IO", `${where}: head_dim ${headDim} must be even (RoPE rotates pairs)`);
  const { theta, scaling } = parseRope(cfg, where);
  const qwen = architecture === "Qwen2ForCausalLM";
  const attentionBias = cfg.attention_bias === true;
  const window = qwen ? (cfg.use_sliding_window === true ? cfg.sliding_window : null) : cfg.sliding_window;
  const eos = [...new Set([...ids(cfg.eos_token_id), ...ids(generation.eos_token_id)])];
  const bos = ids(generation.bos_token_id ?? cfg.bos_token_id)[0] ?? null;
  return {
    architecture,
    numLayers: num(cfg, "num_hidden_layers", where),
    hiddenSize,
    intermediateSize: num(cfg, "intermediate_size", where),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: num(cfg, "vocab_size", where),
    rmsNormEps: num(cfg, "rms_norm_eps", where, { int: false, min: 0, fallback: 1e-6 }),
    ropeTheta: theta,
    ropeScaling: scaling,
    maxPositionEmbeddings: num(cfg, "max_position_embeddings", where, { fallback: 2048 }),
    tieWordEmbeddings: cfg.tie_word_embeddings === true,
    qkvBias: qwen || attentionBias,
    oBias: !qwen && attentionBias,
    mlpBias: !qwen && cfg.mlp_bias === true,
    slidingWindow: typeof window === "number" && window > 0 ? window : null,
    bosTokenId: bos,
    eosTokenIds: eos,
  };
}

/** A JSON object file; anything else is an IO DuoError naming the file. */
export async function readJson(path: string): Promise<Json> {
  let v: unknown;
  try {
    v = JSON.parse(await readText(path));
  } catch (e) {
    throw new DuoError("IO", `${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new DuoError("IO", `${path}: expected a JSON object`);
  return v as Json;
}

/** `dir/config.json` (required) and `dir/generation_config.json` (optional). */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const path = `${dir}/config.json`;
  if (!(await exists(path))) throw new DuoError("IO", `${dir}: no config.json (a Hugging Face model directory needs config.json, model.safetensors and tokenizer.json; or pass a .gguf file)`);
  const gen = `${dir}/generation_config.json`;
  return parseConfig(await readJson(path), path, (await exists(gen)) ? await readJson(gen) : {});
}
