/**
 * GGUF files (llama.cpp's format: what Ollama, LM Studio and llama.cpp users have on disk), read into what the
 * safetensors path produces — a ModelConfig, tensors under their Hugging Face names and shapes, a tokenizer — so
 * that checkTensors / loadWeights load them unchanged. The header and metadata are parsed by @huggingface/gguf;
 * this module maps them:
 *   - `{arch}.*` metadata -> a config.json equivalent, validated by parseConfig (architectures llama — Llama 2/3/3.1,
 *     Mistral — and qwen2);
 *   - tensor names `blk.N.attn_q.weight` ... -> `model.layers.N.self_attn.q_proj.weight` ..., GGUF dims
 *     [ne0 = cols, ne1 = rows] -> [rows, cols];
 *   - for the llama architecture, llama.cpp's converter interleaves the RoPE halves of q_proj / k_proj rows (its
 *     RoPE rotates adjacent pairs, ours rotate-half): those tensors are marked `interleavedHeads` and read back in
 *     Hugging Face order;
 *   - Llama 3.1's RoPE scaling, which llama.cpp stores as a `rope_freqs.weight` tensor of per-frequency divisors,
 *     is returned as such (the model divides its inverse frequencies by them).
 * Every tensor's byte range is checked against the file size here, before anything large is allocated.
 */
import type { GGUFParseOutput } from "@huggingface/gguf";
import { DuoError } from "../errors.ts";
import { exists, fileSize, listDir } from "../runtime.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { readTensorF32, type TensorEntry } from "./safetensors.ts";
import { ggufTokenizer, type TokenizerFiles } from "./gguf-tokenizer.ts";
import { tensorBytes, TENSOR_DTYPES } from "./tensor-types.ts";

export type GgufMetadata = Record<string, unknown>;
export const GGUF_ARCHITECTURES = ["llama", "qwen2"] as const;

export interface GgufModel {
  file: string;
  config: ModelConfig;
  /** Hugging Face tensor name -> entry (shape [rows, cols], offsets absolute in `file`) */
  tensors: Map<string, TensorEntry>;
  tokenizer: TokenizerFiles;
  /** [D/2] divisors of the RoPE inverse frequencies (llama.cpp's rope_freqs.weight: Llama 3.1 scaling), or null */
  ropeFreqFactors: Float32Array | null;
}

/** GGUF tensor-name suffix -> Hugging Face suffix within a layer. */
const LAYER_NAMES: Record<string, string> = {
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  ffn_norm: "post_attention_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
};
const GLOBAL_NAMES: Record<string, string> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};

/** The Hugging Face name of a GGUF tensor, or undefined for tensors the runner does not use. */
export function hfTensorName(name: string): string | undefined {
  if (GLOBAL_NAMES[name]) return GLOBAL_NAMES[name];
  const m = /^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$/.exec(name);
  const hf = m && LAYER_NAMES[m[2]!];
  return hf ? `model.layers.${m![1]}.${hf}.${m![3]}` : undefined;
}

/** The inverse of hfTensorName (for the writer). */
export function ggufTensorName(hf: string): string {
  for (const [g, h] of Object.entries(GLOBAL_NAMES)) if (h === hf) return g;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  const g = m && Object.entries(LAYER_NAMES).find(([, h]) => h === m[2])?.[0];
  if (!g) throw new DuoError("INVALID_ARGUMENT", `no GGUF name for tensor "${hf}"`);
  return `blk.${m![1]}.${g}.${m![3]}`;
}

/** The GGUF file `path` names: the path itself when it ends in .gguf, or the only .gguf file of a directory
 *  without config.json; null when `path` is a Hugging Face directory (or holds no .gguf). */
export async function findGguf(path: string): Promise<string | null> {
  const entries = await listDir(path);
  if (entries === null) return path.toLowerCase().endsWith(".gguf") ? path : null;
  if (entries.includes("config.json")) return null;
  const ggufs = entries.filter((e) => e.toLowerCase().endsWith(".gguf")).sort();
  if (ggufs.length > 1) throw new DuoError("INVALID_ARGUMENT", `${path} holds ${ggufs.length} GGUF files (${ggufs.join(", ")}); pass the path of one (split GGUF files are not supported)`);
  return ggufs.length === 1 ? `${path}/${ggufs[0]}` : null;
}

const num = (v: unknown) => (typeof v === "bigint" ? Number(v) : v);

/** Parse a GGUF file's header; a file that is not GGUF, or is cut inside its header, is an IO DuoError. */
async function parseHeader(file: string): Promise<GGUFParseOutput> {
  if (!(await exists(file))) throw new DuoError("IO", `${file}: file not found`);
  const { gguf } = await import("@huggingface/gguf");
  try {
    return await gguf(file, { allowLocalFile: true });
  } catch (e) {
    throw new DuoError("IO", `${file}: not a readable GGUF file (${(e as Error).message})`, { cause: e });
  }
}

/** A config.json equivalent of the GGUF metadata, for parseConfig. */
function configJson(md: GgufMetadata, file: string, names: Set<string>, vocabRows: number | undefined): Record<string, unknown> {
  const arch = md["general.architecture"];
  if (!(GGUF_ARCHITECTURES as readonly unknown[]).includes(arch)) {
    throw new DuoError("UNSUPPORTED", `${file}: general.architecture ${JSON.stringify(arch)} is not supported; supported: llama (Llama 2/3/3.1, Mistral), qwen2`);
  }
  const k = (key: string) => num(md[`${arch}.${key}`]);
  const heads = k("attention.head_count");
  const kvHeads = k("attention.head_count_kv") ?? heads;
  if (Array.isArray(kvHeads) || Array.isArray(heads)) throw new DuoError("UNSUPPORTED", `${file}: per-layer head counts are not supported (every layer must have the same heads)`);
  if (Number(k("expert_count") ?? 0) > 0) throw new DuoError("UNSUPPORTED", `${file}: mixture-of-experts models (${arch}.expert_count = ${k("expert_count")}) are not supported; supported: dense llama and qwen2`);
  const headDim = k("attention.key_length") ?? Math.floor(Number(k("embedding_length")) / Number(heads));
  const rotary = k("rope.dimension_count");
  if (rotary !== undefined && rotary !== headDim) throw new DuoError("UNSUPPORTED", `${file}: RoPE on ${rotary} of ${headDim} head dimensions (${arch}.rope.dimension_count) is not supported; supported: RoPE on the whole head`);
  const scaling = md[`${arch}.rope.scaling.type`];
  const tokens = md["tokenizer.ggml.tokens"];
  return {
    architectures: [arch === "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
    hidden_size: k("embedding_length"),
    intermediate_size: k("feed_forward_length"),
    num_hidden_layers: k("block_count"),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    ...(k("attention.key_length") !== undefined ? { head_dim: k("attention.key_length") } : {}),
    vocab_size: vocabRows ?? k("vocab_size") ?? (Array.isArray(tokens) ? tokens.length : undefined),
    rms_norm_eps: k("attention.layer_norm_rms_epsilon"),
    rope_theta: k("rope.freq_base") ?? 10000,
    rope_scaling: scaling === undefined || scaling === "none" ? null : { rope_type: scaling, factor: k("rope.scaling.factor") },
    max_position_embeddings: k("context_length"),
    tie_word_embeddings: !names.has("output.weight"),
    attention_bias: names.has("blk.0.attn_q.bias") && arch === "llama",
    mlp_bias: names.has("blk.0.ffn_gate.bias"),
    bos_token_id: num(md["tokenizer.ggml.bos_token_id"]),
    eos_token_id: ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"].map((x) => num(md[x])).filter((x) => x !== undefined),
  };
}

/** Open a GGUF model file: config, tensors (checked against the file size), tokenizer. */
export async function openGguf(file: string): Promise<GgufModel> {
  const parsed = await parseHeader(file);
  const { GGMLQuantizationType } = await import("@huggingface/gguf");
  const md = parsed.metadata as unknown as GgufMetadata;
  const size = await fileSize(file);
  // The parser reads past the end of a file as zeros, so a file cut inside its header parses to a header that
  // ends beyond the file.
  if (Number(parsed.tensorDataOffset) > size) {
    throw new DuoError("IO", `${file}: is truncated: its header (metadata and tensor infos) ends at byte ${parsed.tensorDataOffset} but the file has ${size} bytes`);
  }
  const names = new Set(parsed.tensorInfos.map((t) => t.name));
  const embed = parsed.tensorInfos.find((t) => t.name === "token_embd.weight");
  const config = parseConfig(configJson(md, file, names, embed ? Number(embed.shape[1]) : undefined), file);
  const llama = md["general.architecture"] === "llama";
  const dataStart = Number(parsed.tensorDataOffset);
  const tensors = new Map<string, TensorEntry>();
  let ropeFreqs: TensorEntry | undefined;
  for (const info of parsed.tensorInfos) {
    const hf = info.name === "rope_freqs.weight" ? info.name : hfTensorName(info.name);
    if (!hf) continue;
    const dtype = GGMLQuantizationType[info.dtype] ?? `type ${info.dtype}`;
    const shape = info.shape.map(Number).reverse(); // GGUF lists the fastest-varying dimension first
    const offset = dataStart + Number(info.offset);
    const byteLength = tensorBytes(dtype, shape);
    if (byteLength === undefined) {
      // Checked here only when the runner needs the tensor: checkTensors names it with the supported types.
      tensors.set(hf, { name: hf, file, dtype, shape, offset, byteLength: 0 });
      continue;
    }
    if (offset + byteLength > size) {
      throw new DuoError("IO", `${file}: is truncated or corrupt: tensor "${info.name}" (${dtype} [${shape.join(", ")}]) needs bytes [${offset}, ${offset + byteLength}) but the file has ${size} bytes`);
    }
    const entry: TensorEntry = { name: hf, file, dtype, shape, offset, byteLength };
    const proj = /\.self_attn\.(q|k)_proj\./.exec(hf)?.[1];
    if (llama && proj) entry.interleavedHeads = proj === "q" ? config.numHeads : config.numKvHeads;
    if (hf === "rope_freqs.weight") ropeFreqs = entry;
    else tensors.set(hf, entry);
  }
  const unsupported = [...tensors.values()].find((t) => !(TENSOR_DTYPES as readonly string[]).includes(t.dtype));
  if (unsupported) {
    throw new DuoError("UNSUPPORTED", `${file}: tensor "${unsupported.name}" has type ${unsupported.dtype}; supported GGUF tensor types are ${TENSOR_DTYPES.join(", ")} (re-quantize with llama.cpp's llama-quantize, e.g. to Q8_0)`);
  }
  let ropeFreqFactors: Float32Array | null = null;
  if (ropeFreqs) {
    if (ropeFreqs.shape.length !== 1 || ropeFreqs.shape[0] !== config.headDim / 2) {
      throw new DuoError("SHAPE_MISMATCH", `${file}: tensor "rope_freqs.weight" has shape [${ropeFreqs.shape.join(", ")}], expected [${config.headDim / 2}] (head_dim / 2)`);
    }
    ropeFreqFactors = await readTensorF32(ropeFreqs);
  }
  return { file, config, tensors, tokenizer: ggufTokenizer(md, file), ropeFreqFactors };
}
