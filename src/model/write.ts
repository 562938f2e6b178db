/**
 * A model writer: a Llama-shaped model with RANDOM weights (seeded), written as a Hugging Face directory
 * (config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json) and/or a GGUF
 * file (model-<dtype>.gguf) holding the same values. It produces text-shaped noise, not language: it exists so that
 * `duo generate`, `duo niah` and the llama.cpp comparison run offline in seconds, at any real model's shape.
 *
 * Values: embedding U(−1, 1), projections U(−√(3/in), √(3/in)), norms U(0.8, 1.2), biases U(−0.2, 0.2), each
 * tensor from its own stream (seed, tensor name), rounded to the dtype; both formats store the rounded values, so
 * they hold the same weights. The quantized types exist only in GGUF; their safetensors twin stores the decoded
 * values as F32. q8_0 / q4_0 quantize the drawn values as ggml does; q4_k (like llama.cpp's Q4_K_M: Q4_K matrices,
 * Q6_K embedding and lm_head) draws random K-quant blocks, as there is no K-quant quantizer here.
 * Norms and biases are stored as F32 in GGUF (as llama.cpp does), rounded to the dtype first.
 * The GGUF file follows llama.cpp's converter: names blk.N.*, q/k rows of the llama architecture RoPE-interleaved,
 * Llama 3.1 RoPE scaling as a rope_freqs.weight tensor, a gpt2 (byte-level BPE) tokenizer in the metadata.
 */
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../dtype.ts";
import { checkOneOf, DuoError } from "../errors.ts";
import { makeDir, writeBytes, writeText } from "../runtime.ts";
import { parseConfig, type ModelConfig } from "./config.ts";
import { type GgufValue, ggufHeader, type GgufTensorSpec } from "./gguf-write.ts";
import { ggufTensorName } from "./gguf.ts";
import { ggufTokenizer } from "./gguf-tokenizer.ts";
import { inverseFrequencies } from "./rope.ts";
import { Prng } from "./sampler.ts";
import { expectedTensors } from "./weights.ts";
import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0, tensorBytes, type TensorDtype, toF32 } from "./tensor-types.ts";

export type WriteDtype = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k";
export const WRITE_DTYPES: readonly WriteDtype[] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"];
const QUANTIZED = (d: WriteDtype) => d === "q8_0" || d === "q4_0" || d === "q4_k";
/** Elements per block of each dtype's matrices (rows must be whole blocks). */
const ROW_BLOCK: Record<WriteDtype, number> = { f32: 1, f16: 1, bf16: 1, q8_0: 32, q4_0: 32, q4_k: 256 };
export type WriteFormat = "safetensors" | "gguf" | "both";
export const WRITE_FORMATS: readonly WriteFormat[] = ["safetensors", "gguf", "both"];

/** config.json fields of the shapes the writer knows (the published-pattern models and small ones). */
export const MODEL_SHAPES: Record<string, Record<string, unknown>> = {
  tiny: {
    architectures: ["LlamaForCausalLM"], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, vocab_size: 512, rope_theta: 500000, max_position_embeddings: 8192,
    rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  },
  /** Llama 3 style at about 0.18 B parameters (0.7 GB in f32): the llama.cpp comparison's default */
  "llama-3-180m": {
    architectures: ["LlamaForCausalLM"], hidden_size: 1024, intermediate_size: 3584, num_hidden_layers: 8, num_attention_heads: 16,
    num_key_value_heads: 4, vocab_size: 32000, rope_theta: 500000, max_position_embeddings: 131072,
    rope_scaling: { rope_type: "llama3", factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  },
  "llama-3-1b": {
    architectures: ["LlamaForCausalLM"], hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32,
    num_key_value_heads: 8, vocab_size: 128256, rope_theta: 500000, max_position_embeddings: 131072, tie_word_embeddings: true,
    rope_scaling: { rope_type: "llama3", factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  },
  "llama-3-8b": {
    architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32,
    num_key_value_heads: 8, vocab_size: 128256, rope_theta: 500000, max_position_embeddings: 8192,
  },
  "llama-2-7b": {
    architectures: ["LlamaForCausalLM"], hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
    num_key_value_heads: 32, vocab_size: 32000, rope_theta: 10000, max_position_embeddings: 4096,
  },
  "mistral-7b": {
    architectures: ["MistralForCausalLM"], hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32,
    num_key_value_heads: 8, vocab_size: 32768, rope_theta: 1000000, max_position_embeddings: 32768, sliding_window: null,
  },
  "qwen2-0.5b": {
    architectures: ["Qwen2ForCausalLM"], hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
    num_key_value_heads: 2, vocab_size: 151936, rope_theta: 1000000, max_position_embeddings: 32768, tie_word_embeddings: true,
    use_sliding_window: false,
  },
};

export interface WriteModelOptions {
  /** a MODEL_SHAPES name (default "tiny"), or config.json fields */
  shape?: string | Record<string, unknown>;
  dtype?: WriteDtype;
  format?: WriteFormat;
  seed?: number;
  /** the vocabulary's kind (default: "llama" SentencePiece for llama-2-7b and mistral-7b, else "gpt2" byte-level BPE) */
  tokenizer?: WriteTokenizer;
  /** called after each tensor with bytes written so far and in all */
  progress?: (done: number, total: number) => void;
}

export interface WrittenModel {
  dir: string;
  config: ModelConfig;
  /** paths written */
  files: string[];
  /** the GGUF file, when one was written */
  gguf: string | null;
  /** bytes of tensor data per format */
  bytes: number;
}

/** Rows per generated block of a large tensor (bounded memory for vocab-sized matrices). */
const BLOCK_ELEMENTS = 1 << 24;
export const RANDOM_WEIGHTS_NOTE = "RANDOM weights written by `duo make-model`: the model runs at a real shape but produces noise, not language.";

// ---------------------------------------------------------------------------------------------------------------
// tokenizers, as llama.cpp stores them, 3 specials (<unk> <s> </s>), then filler words up to the vocabulary size (so
// that every id decodes to some text):
//   gpt2   byte-level BPE over the 256 byte symbols and a few merges (Llama 3, Qwen2 style);
//   llama  SentencePiece BPE: 256 <0xXX> byte-fallback tokens, "▁", the letters, a few longer pieces; merge order is
//          the pieces' scores (Llama 2, Mistral style).

export type WriteTokenizer = "gpt2" | "llama";
/** The shapes whose models come with a SentencePiece vocabulary; the others get byte-level BPE. */
const SPM_SHAPES = new Set(["llama-2-7b", "mistral-7b"]);

function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++));
}

const MERGES = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["a", "n"], ["e", "r"], ["Ġ", "a"], ["o", "n"], ["Ġ", "s"], ["r", "e"]];
const SPM_PIECES = ["▁", ..."etaoinshrdlucmfwypvbgkjqxz", "▁t", "he", "▁the", "in", "an", "er", "▁a", "on", "re", "▁s"];
export const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/** Words a, b, .., z, aa, ba, .. (i = 0, 1, ..). */
function word(i: number): string {
  let w = "";
  do w += "abcdefghijklmnopqrstuvwxyz"[i % 26], (i = Math.floor(i / 26)); while (i > 0);
  return w;
}

/** The tokenizer as GGUF metadata (the Hugging Face files are derived from it by ggufTokenizer). */
function tokenizerMetadata(vocab: number, kind: WriteTokenizer): Record<string, GgufValue> {
  const spm = kind === "llama";
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const tokens = ["<unk>", "<s>", "</s>", ...(spm ? [...bytes, ...SPM_PIECES] : [...byteSymbols(), ...MERGES.map(([a, b]) => a! + b!)])];
  if (vocab < tokens.length) throw new DuoError("INVALID_ARGUMENT", `vocab_size must be at least ${tokens.length} (specials, bytes and pieces of the writer's ${kind} tokenizer), got ${vocab}`);
  const have = new Set(tokens);
  for (let i = 26; tokens.length < vocab; i++) {
    // byte-level BPE: capitalized, never a merge result, so encode never emits them; SentencePiece: lowercase words,
    // reachable by merges of the letters (both tokenizers then agree on them with llama.cpp)
    const w = word(i), t = spm ? `▁${w}` : `Ġ${w[0]!.toUpperCase()}${w.slice(1)}`;
    if (!have.has(t)) tokens.push(t), have.add(t);
  }
  const special = (i: number) => (i === 0 ? 2 : i < 3 ? 3 : 0);
  const types = tokens.map((_, i) => special(i) || (spm && i < 3 + 256 ? 6 : 1));
  const U32 = 4, I32 = 5, F32 = 6, STR = 8, ARR = 9, BOOL = 7;
  const model: Record<string, GgufValue> = spm
    ? {
      "tokenizer.ggml.model": { type: STR, value: "llama" },
      "tokenizer.ggml.scores": { type: ARR, subType: F32, value: tokens.map((_, i) => (i < 3 + 256 ? 0 : -(i - 3 - 256))) },
    }
    : {
      "tokenizer.ggml.model": { type: STR, value: "gpt2" },
      "tokenizer.ggml.pre": { type: STR, value: "default" },
      "tokenizer.ggml.merges": { type: ARR, subType: STR, value: MERGES.map(([a, b]) => `${a} ${b}`) },
    } as Record<string, GgufValue>;
  return {
    ...model,
    "tokenizer.ggml.tokens": { type: ARR, subType: STR, value: tokens },
    "tokenizer.ggml.token_type": { type: ARR, subType: I32, value: types },
    "tokenizer.ggml.bos_token_id": { type: U32, value: 1 },
    "tokenizer.ggml.eos_token_id": { type: U32, value: 2 },
    "tokenizer.ggml.unknown_token_id": { type: U32, value: 0 },
    "tokenizer.ggml.add_bos_token": { type: BOOL, value: true },
    "tokenizer.chat_template": { type: STR, value: CHAT_TEMPLATE },
  } as Record<string, GgufValue>;
}

// ---------------------------------------------------------------------------------------------------------------
// values

/** FNV-1a of a tensor name, mixed with the seed: each tensor's own random stream. */
function streamSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Values rounded to `dtype` (q8_0 / q4_0: through their blocks of 32, so whole rows of a multiple of 32). */
function rounded(values: Float32Array, dtype: WriteDtype): Float32Array {
  if (dtype === "f32") return values;
  if (dtype === "q8_0") return dequantizeQ8_0(quantizeQ8_0(values));
  if (dtype === "q4_0") return dequantizeQ4_0(quantizeQ4_0(values));
  const [narrow, widen] = dtype === "bf16" ? [f32ToBf16Bits, bf16BitsToF32] : [f32ToF16Bits, f16BitsToF32];
  return values.map((v) => widen(narrow(v)));
}

/** Bytes of rounded values stored as `file` dtype. */
function encode(values: Float32Array, file: TensorDtype): Uint8Array {
  if (file === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (file === "Q8_0") return quantizeQ8_0(values);
  if (file === "Q4_0") return quantizeQ4_0(values);
  return new Uint8Array(Uint16Array.from(values, file === "BF16" ? f32ToBf16Bits : f32ToF16Bits).buffer);
}

/** llama.cpp's q/k row order (convert_hf_to_gguf permute) on encoded rows: per head of D rows, row j·D/2 + i -> row
 *  2i + j. */
function interleaveRows(bytes: Uint8Array, rows: number, heads: number): Uint8Array {
  const D = rows / heads, half = D / 2, rb = bytes.length / rows, out = new Uint8Array(bytes.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) out.set(bytes.subarray((h * D + j * half + i) * rb, (h * D + j * half + i + 1) * rb), (h * D + 2 * i + j) * rb);
    }
  }
  return out;
}

/** `n` weights of random K-quant blocks whose values span about ±scale (every scale, min and nibble drawn). */
function randomKBlocks(dtype: "Q4_K" | "Q6_K", n: number, rng: Prng, scale: number): Uint8Array {
  const q4 = dtype === "Q4_K", size = q4 ? 144 : 210, out = new Uint8Array((n / 256) * size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < out.length; i++) out[i] = rng.nextU32() & 255;
  for (let o = 0; o < out.length; o += size) {
    if (q4) {
      // (d·scale)·q − dmin·min with 6-bit scales and mins, q in 0..15
      view.setUint16(o, f32ToF16Bits((2 * scale) / (15 * 63)), true);
      view.setUint16(o + 2, f32ToF16Bits(scale / 63), true);
    } else {
      // (d·scale)·q with int8 scales, q in −32..31
      for (let j = 0; j < 16; j++) view.setInt8(o + 192 + j, (32 + (rng.nextU32() % 96)) * (rng.nextU32() & 1 ? -1 : 1));
      view.setUint16(o + 208, f32ToF16Bits(scale / (32 * 127)), true);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// the writer

/** One tensor of a written model: its name, shape, how its random values are drawn, its dtype in each format. */
interface TensorSlot {
  name: string;
  shape: number[];
  scale: number;
  center: number;
  /** dtype the values are rounded to */
  round: WriteDtype;
  st: TensorDtype;
  gguf: TensorDtype;
  /** heads of a llama-architecture q/k matrix (rows interleaved in GGUF) */
  interleave?: number;
}

const FILE_DTYPE: Record<WriteDtype, TensorDtype> = { f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0", q4_0: "Q4_0", q4_k: "Q4_K" };

function tensorSlots(cfg: ModelConfig, dtype: WriteDtype): TensorSlot[] {
  const out: TensorSlot[] = [];
  const vectorDtype: WriteDtype = QUANTIZED(dtype) ? "f32" : dtype;
  for (const [name, shape] of expectedTensors(cfg)) {
    const matrix = shape.length === 2;
    const kind = name.endsWith("layernorm.weight") || name === "model.norm.weight" ? "norm" : name.endsWith(".bias") ? "bias" : name === "model.embed_tokens.weight" ? "embed" : "linear";
    const round = matrix ? dtype : vectorDtype;
    const p: TensorSlot = {
      name, shape, round,
      scale: kind === "norm" ? 0.2 : kind === "bias" ? 0.2 : kind === "embed" ? 1 : Math.sqrt(3 / shape[1]!),
      center: kind === "norm" ? 1 : 0,
      st: matrix ? (QUANTIZED(dtype) ? "F32" : FILE_DTYPE[dtype]) : FILE_DTYPE[vectorDtype],
      gguf: !matrix ? "F32" : dtype === "q4_k" && (kind === "embed" || name === "lm_head.weight") ? "Q6_K" : FILE_DTYPE[dtype],
    };
    const proj = /\.self_attn\.(q|k)_proj\./.exec(name)?.[1];
    if (proj && cfg.architecture !== "Qwen2ForCausalLM") p.interleave = proj === "q" ? cfg.numHeads : cfg.numKvHeads;
    out.push(p);
  }
  return out;
}

/** The safetensors header bytes (JSON padded to 8) for tensors written back to back in `slots` order. */
function safetensorsHeader(slots: readonly TensorSlot[]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt", note: RANDOM_WEIGHTS_NOTE } };
  let offset = 0;
  for (const p of slots) {
    const n = tensorBytes(p.st, p.shape)!;
    header[p.name] = { dtype: p.st, shape: p.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  return out;
}

function ggufMetadata(cfg: ModelConfig, shapeName: string, dtype: WriteDtype, tokenizer: WriteTokenizer): Record<string, GgufValue> {
  const arch = cfg.architecture === "Qwen2ForCausalLM" ? "qwen2" : "llama";
  const U32 = 4, F32 = 6, STR = 8;
  const u = (value: number) => ({ type: U32, value }) as GgufValue;
  const f = (value: number) => ({ type: F32, value }) as GgufValue;
  const md: Record<string, GgufValue> = {
    "general.architecture": { type: STR, value: arch },
    "general.name": { type: STR, value: `${shapeName} shape, RANDOM weights (duo make-model)` },
    "general.file_type": u({ f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k: 15, bf16: 32 }[dtype]),
    [`${arch}.context_length`]: u(cfg.maxPositionEmbeddings),
    [`${arch}.embedding_length`]: u(cfg.hiddenSize),
    [`${arch}.block_count`]: u(cfg.numLayers),
    [`${arch}.feed_forward_length`]: u(cfg.intermediateSize),
    [`${arch}.rope.dimension_count`]: u(cfg.headDim),
    [`${arch}.attention.head_count`]: u(cfg.numHeads),
    [`${arch}.attention.head_count_kv`]: u(cfg.numKvHeads),
    [`${arch}.attention.key_length`]: u(cfg.headDim),
    [`${arch}.attention.value_length`]: u(cfg.headDim),
    [`${arch}.attention.layer_norm_rms_epsilon`]: f(cfg.rmsNormEps),
    [`${arch}.rope.freq_base`]: f(cfg.ropeTheta),
    [`${arch}.vocab_size`]: u(cfg.vocabSize),
  };
  if (cfg.ropeScaling.type === "linear") {
    md[`${arch}.rope.scaling.type`] = { type: STR, value: "linear" } as GgufValue;
    md[`${arch}.rope.scaling.factor`] = f(cfg.ropeScaling.factor);
  }
  return { ...md, ...tokenizerMetadata(cfg.vocabSize, tokenizer) };
}

/** config.json of a shape (a MODEL_SHAPES name or fields) for `dtype`, validated. */
function resolveShape(shape: WriteModelOptions["shape"], dtype: WriteDtype): { name: string; json: Record<string, unknown>; cfg: ModelConfig } {
  const name = typeof shape === "string" ? shape : shape === undefined ? "tiny" : "custom";
  const fields = typeof shape === "object" ? shape : MODEL_SHAPES[name];
  if (!fields) throw new DuoError("INVALID_ARGUMENT", `unknown model shape ${JSON.stringify(name)}; known: ${Object.keys(MODEL_SHAPES).join(", ")}`);
  const json: Record<string, unknown> = {
    hidden_act: "silu", rms_norm_eps: 1e-5, bos_token_id: 1, eos_token_id: 2, tie_word_embeddings: false,
    torch_dtype: QUANTIZED(dtype) ? "float32" : { f32: "float32", f16: "float16", bf16: "bfloat16" }[dtype as "f32"], ...fields,
  };
  json.model_type ??= { LlamaForCausalLM: "llama", MistralForCausalLM: "mistral", Qwen2ForCausalLM: "qwen2" }[String((json.architectures as string[])[0])];
  const cfg = parseConfig(json, `model shape ${name}`);
  const blk = ROW_BLOCK[dtype];
  if (cfg.hiddenSize % blk || cfg.intermediateSize % blk || (cfg.numHeads * cfg.headDim) % blk) {
    throw new DuoError("INVALID_ARGUMENT", `${dtype} needs hidden_size, intermediate_size and heads x head_dim to be multiples of ${blk} (shape ${name})`);
  }
  return { name, json, cfg };
}

/** Llama 3.1 RoPE scaling as llama.cpp stores it: per-frequency divisors [D/2] (rope_freqs.weight), else null. */
function ropeFreqDivisors(cfg: ModelConfig): Float32Array | null {
  if (cfg.ropeScaling.type !== "llama3") return null;
  const plain = inverseFrequencies(cfg.headDim, cfg.ropeTheta, { type: "none" });
  const scaled = inverseFrequencies(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
  return Float32Array.from(plain, (p, i) => p / scaled[i]!);
}

/** The GGUF header of a random model (tensor data not included) and the file's full size: lets tests build a
 *  large model's file as a sparse file. */
export async function randomGgufHeader(shape: WriteModelOptions["shape"], dtype: WriteDtype): Promise<{ header: Uint8Array; fileBytes: number }> {
  const { name, cfg } = resolveShape(shape, dtype);
  const specs = ggufSpecs(tensorSlots(cfg, dtype), ropeFreqDivisors(cfg));
  const { header, offsets } = await ggufHeader(ggufMetadata(cfg, name, dtype, SPM_SHAPES.has(name) ? "llama" : "gpt2"), specs);
  return { header, fileBytes: header.length + offsets.at(-1)! + specs.at(-1)!.byteLength };
}

function ggufSpecs(slots: readonly TensorSlot[], ropeFreqs: Float32Array | null): GgufTensorSpec[] {
  const specs: GgufTensorSpec[] = slots.map((p) => ({ name: ggufTensorName(p.name), dtype: p.gguf, shape: p.shape, byteLength: tensorBytes(p.gguf, p.shape)! }));
  if (ropeFreqs) specs.push({ name: "rope_freqs.weight", dtype: "F32", shape: [ropeFreqs.length], byteLength: ropeFreqs.byteLength });
  return specs;
}

/** Write a random model into `dir` (created); see the module comment. */
export async function writeRandomModel(dir: string, options: WriteModelOptions = {}): Promise<WrittenModel> {
  const dtype = checkOneOf("dtype", options.dtype ?? "bf16", WRITE_DTYPES);
  const format = checkOneOf("format", options.format ?? "both", WRITE_FORMATS);
  const { name: shapeName, json, cfg } = resolveShape(options.shape, dtype);
  const seed = options.seed ?? 0;
  const slots = tensorSlots(cfg, dtype);
  await makeDir(dir);
  const files: string[] = [];
  const tokenizer = checkOneOf("tokenizer", options.tokenizer ?? (SPM_SHAPES.has(shapeName) ? "llama" : "gpt2"), ["gpt2", "llama"] as const);
  const md = ggufMetadata(cfg, shapeName, dtype, tokenizer);
  const writeSt = format !== "gguf", writeGguf = format !== "safetensors";
  const ropeFreqs = ropeFreqDivisors(cfg);

  const stPath = `${dir}/model.safetensors`, ggufPath = `${dir}/model-${dtype}.gguf`;
  let ggufOffsets: number[] = [], ggufAt = 0, ggufDataStart = 0;
  if (writeSt) {
    const tok = ggufTokenizer(Object.fromEntries(Object.entries(md).map(([k, v]) => [k, v.value])), "the writer's tokenizer");
    await writeText(`${dir}/config.json`, JSON.stringify({ ...json, _note: RANDOM_WEIGHTS_NOTE }, null, 2));
    await writeText(`${dir}/generation_config.json`, JSON.stringify({ bos_token_id: 1, eos_token_id: [2] }));
    await writeText(`${dir}/tokenizer.json`, JSON.stringify(tok.json));
    await writeText(`${dir}/tokenizer_config.json`, JSON.stringify({ ...tok.config, note: RANDOM_WEIGHTS_NOTE }));
    await writeBytes(stPath, safetensorsHeader(slots));
    files.push(`${dir}/config.json`, `${dir}/generation_config.json`, `${dir}/tokenizer.json`, `${dir}/tokenizer_config.json`, stPath);
  }
  if (writeGguf) {
    const { header, offsets } = await ggufHeader(md, ggufSpecs(slots, ropeFreqs));
    ggufOffsets = offsets;
    ggufDataStart = header.length;
    await writeBytes(ggufPath, header);
    ggufAt = header.length;
    files.push(ggufPath);
  }
  /** Append to the GGUF file, first padding to tensor i's offset. */
  const ggufAppend = async (i: number, bytes: Uint8Array, first: boolean) => {
    if (first && ggufDataStart + ggufOffsets[i]! > ggufAt) {
      await writeBytes(ggufPath, new Uint8Array(ggufDataStart + ggufOffsets[i]! - ggufAt), true);
      ggufAt = ggufDataStart + ggufOffsets[i]!;
    }
    await writeBytes(ggufPath, bytes, true);
    ggufAt += bytes.length;
  };

  const total = slots.reduce((a, p) => a + tensorBytes(p.st, p.shape)!, 0);
  let done = 0;
  for (const [i, p] of slots.entries()) {
    const rng = new Prng(streamSeed(seed, p.name));
    const cols = p.shape.at(-1)!, rows = p.shape.length === 2 ? p.shape[0]! : 1;
    // Interleaved q/k are reordered as a whole (at most heads x D x hidden values); others stream in row blocks.
    const blockRows = p.interleave ? rows : Math.max(1, Math.floor(BLOCK_ELEMENTS / cols));
    for (let r0 = 0; r0 < rows; r0 += blockRows) {
      const n = Math.min(blockRows, rows - r0) * cols;
      let v: Float32Array, bytes: Uint8Array;
      if (p.gguf === "Q4_K" || p.gguf === "Q6_K") {
        bytes = randomKBlocks(p.gguf, n, rng, p.scale);
        v = toF32(bytes, p.gguf, p.name);
      } else {
        const raw = new Float32Array(n);
        for (let k = 0; k < n; k++) raw[k] = p.center + p.scale * ((rng.nextU32() / 2 ** 31) - 1);
        v = rounded(raw, p.round);
        bytes = encode(v, p.gguf);
      }
      if (writeSt) await writeBytes(stPath, encode(v, p.st), true);
      if (writeGguf) await ggufAppend(i, p.interleave ? interleaveRows(bytes, rows, p.interleave) : bytes, r0 === 0);
    }
    done += tensorBytes(p.st, p.shape)!;
    options.progress?.(done, total);
  }
  if (writeGguf && ropeFreqs) await ggufAppend(slots.length, new Uint8Array(ropeFreqs.buffer), true);
  return { dir, config: cfg, files, gguf: writeGguf ? ggufPath : null, bytes: total };
}
