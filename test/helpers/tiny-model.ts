/**
 * Tiny random Llama-family models written as real Hugging Face directories (config.json, safetensors — single or
 * sharded —, a byte-level BPE tokenizer.json, tokenizer_config.json with a chat template, generation_config.json)
 * in a temp dir, plus the test oracle: a straightforward float64 forward over the stored weights, with the
 * DuoAttention visibility rules (SPEC §3.2) for streaming heads.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../../src/dtype.ts";
import { rng } from "./random.ts";

export type Dtype = "f32" | "f16" | "bf16";

export interface TinySpec {
  architecture?: "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM";
  layers?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  intermediate?: number;
  dtype?: Dtype;
  ropeTheta?: number;
  ropeScaling?: Record<string, unknown> | null;
  tie?: boolean;
  /** Llama attention_bias (q/k/v/o biases); Qwen2 always has q/k/v biases */
  attentionBias?: boolean;
  mlpBias?: boolean;
  seed?: number;
  /** split the weights over this many safetensors files + model.safetensors.index.json */
  shards?: number;
  /** keys merged into config.json last (to make it wrong on purpose) */
  config?: Record<string, unknown>;
}

export interface Tensor {
  shape: number[];
  /** the values as stored (after rounding to the file dtype) */
  data: Float64Array;
}

export interface TinyModel {
  dir: string;
  config: Record<string, unknown>;
  weights: Map<string, Tensor>;
  vocab: number;
  bosId: number;
  eosId: number;
  dispose(): void;
}


// ---------------------------------------------------------------------------------------------------------------
// tokenizer: GPT-2 style byte-level BPE over the 256 byte symbols + a few merges, <unk> <s> </s> specials

function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + extra++));
  return out;
}

const MERGES: [string, string][] = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["a", "n"], ["e", "r"], ["Ġ", "a"], ["o", "n"], ["Ġ", "s"], ["r", "e"]];

export function tokenizerJson(): { json: Record<string, unknown>; vocab: number } {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  byteSymbols().forEach((s, b) => (vocab[s] = 3 + b));
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
  return { json, vocab: Object.keys(vocab).length };
}

export const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

// ---------------------------------------------------------------------------------------------------------------
// safetensors writer

const ST_DTYPE: Record<Dtype, string> = { f32: "F32", f16: "F16", bf16: "BF16" };

function encode(values: Float64Array, dtype: Dtype): { bytes: Uint8Array; stored: Float64Array } {
  const stored = new Float64Array(values.length);
  if (dtype === "f32") {
    const f = Float32Array.from(values);
    stored.set(f);
    return { bytes: new Uint8Array(f.buffer), stored };
  }
  const bits = new Uint16Array(values.length);
  values.forEach((v, i) => {
    bits[i] = dtype === "bf16" ? f32ToBf16Bits(v) : f32ToF16Bits(v);
    stored[i] = dtype === "bf16" ? bf16BitsToF32(bits[i]!) : f16BitsToF32(bits[i]!);
  });
  return { bytes: new Uint8Array(bits.buffer), stored };
}

/** Write a safetensors file: header padded with spaces to a multiple of 8, then the tensors back to back. */
export function writeSafetensors(path: string, tensors: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]): void {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  let at = 8 + json.length;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  writeFileSync(path, out);
}

// ---------------------------------------------------------------------------------------------------------------
// the model directory

export function writeTinyModel(spec: TinySpec = {}): TinyModel {
  const arch = spec.architecture ?? "LlamaForCausalLM";
  const qwen = arch === "Qwen2ForCausalLM";
  const L = spec.layers ?? 2, H = spec.hidden ?? 32, Hq = spec.heads ?? 4, Hkv = spec.kvHeads ?? 2;
  const D = spec.headDim ?? H / Hq, I = spec.intermediate ?? 48, dtype = spec.dtype ?? "f32";
  const { json: tok, vocab: V } = tokenizerJson();
  const rand = rng(spec.seed ?? 1);
  const uniform = (n: number, scale: number, center = 0) => Float64Array.from({ length: n }, () => center + scale * (2 * rand() - 1));
  const weights = new Map<string, Tensor>();
  const files: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
  const add = (name: string, shape: number[], values: Float64Array, dt: Dtype = dtype) => {
    const { bytes, stored } = encode(values, dt);
    weights.set(name, { shape, data: stored });
    files.push({ name, dtype: ST_DTYPE[dt], shape, bytes });
  };
  const linear = (name: string, out: number, inp: number, bias: boolean) => {
    add(`${name}.weight`, [out, inp], uniform(out * inp, Math.sqrt(3 / inp)));
    if (bias) add(`${name}.bias`, [out], uniform(out, 0.2));
  };
  add("model.embed_tokens.weight", [V, H], uniform(V * H, 1));
  const qkvBias = qwen || spec.attentionBias === true, oBias = !qwen && spec.attentionBias === true, mlpBias = !qwen && spec.mlpBias === true;
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}input_layernorm.weight`, [H], uniform(H, 0.2, 1), "f32");
    linear(`${p}self_attn.q_proj`, Hq * D, H, qkvBias);
    linear(`${p}self_attn.k_proj`, Hkv * D, H, qkvBias);
    linear(`${p}self_attn.v_proj`, Hkv * D, H, qkvBias);
    linear(`${p}self_attn.o_proj`, H, Hq * D, oBias);
    add(`${p}post_attention_layernorm.weight`, [H], uniform(H, 0.2, 1));
    linear(`${p}mlp.gate_proj`, I, H, mlpBias);
    linear(`${p}mlp.up_proj`, I, H, mlpBias);
    linear(`${p}mlp.down_proj`, H, I, mlpBias);
  }
  add("model.norm.weight", [H], uniform(H, 0.2, 1));
  if (!spec.tie) add("lm_head.weight", [V, H], uniform(V * H, Math.sqrt(3 / H)));

  const dir = mkdtempSync(join(tmpdir(), "duo-tiny-"));
  const config: Record<string, unknown> = {
    architectures: [arch],
    model_type: qwen ? "qwen2" : arch === "MistralForCausalLM" ? "mistral" : "llama",
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: Hq,
    num_key_value_heads: Hkv,
    ...(spec.headDim ? { head_dim: D } : {}),
    vocab_size: V,
    hidden_act: "silu",
    rms_norm_eps: 1e-5,
    rope_theta: spec.ropeTheta ?? 10000,
    rope_scaling: spec.ropeScaling ?? null,
    max_position_embeddings: 4096,
    tie_word_embeddings: spec.tie === true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: dtype === "f32" ? "float32" : dtype === "f16" ? "float16" : "bfloat16",
    ...(qwen ? { use_sliding_window: false, sliding_window: 32 } : {}),
    ...(arch === "LlamaForCausalLM" ? { attention_bias: spec.attentionBias === true, mlp_bias: spec.mlpBias === true } : {}),
    ...(arch === "MistralForCausalLM" ? { sliding_window: null } : {}),
    ...spec.config,
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: [2] }));
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tok));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", chat_template: CHAT_TEMPLATE }));
  const shards = spec.shards ?? 1;
  if (shards <= 1) writeSafetensors(join(dir, "model.safetensors"), files);
  else {
    const map: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const name = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
      const part = files.filter((_, i) => i % shards === s);
      part.forEach((t) => (map[t.name] = name));
      writeSafetensors(join(dir, name), part);
    }
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: map }));
  }
  return { dir, config, weights, vocab: V, bosId: 1, eosId: 2, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------------------------
// the float64 oracle

export interface OracleOptions {
  /** [layer][kvHead] true = retrieval, original head order (default: all retrieval) */
  heads?: readonly (readonly boolean[])[];
  sink?: number;
  recent?: number;
  mode?: "upstream" | "window";
  /** absolute positions where an attention call started (upstream mode: the first call is dense, later calls
   *  see the compacted cache + the call's tokens) */
  callStarts?: readonly number[];
}

/** RoPE inverse frequencies as HF transformers defines them (default / linear / llama3), float64. */
export function oracleInvFreq(cfg: Record<string, unknown>, D: number): number[] {
  const theta = cfg.rope_theta as number;
  let inv = Array.from({ length: D / 2 }, (_, i) => Math.pow(theta, -(2 * i) / D));
  const rs = cfg.rope_scaling as Record<string, number | string> | null;
  const type = rs ? (rs.rope_type ?? rs.type) : "default";
  if (type === "linear") inv = inv.map((f) => f / (rs!.factor as number));
  if (type === "llama3") {
    const factor = rs!.factor as number, low = rs!.low_freq_factor as number, high = rs!.high_freq_factor as number;
    const old = rs!.original_max_position_embeddings as number;
    inv = inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < old / high) return f;
      if (wavelen > old / low) return f / factor;
      const smooth = (old / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  return inv;
}

/** Logits (float64) after each position in `at`, for the token sequence `ids`. */
export function oracleLogits(m: TinyModel, ids: readonly number[], at: readonly number[], o: OracleOptions = {}): Float64Array[] {
  const cfg = m.config;
  const H = cfg.hidden_size as number, Hq = cfg.num_attention_heads as number, Hkv = cfg.num_key_value_heads as number;
  const D = (cfg.head_dim as number | undefined) ?? H / Hq, G = Hq / Hkv, I = cfg.intermediate_size as number;
  const eps = cfg.rms_norm_eps as number, V = cfg.vocab_size as number, N = ids.length;
  const S = o.sink ?? 0, R = o.recent ?? 0, mode = o.mode ?? "upstream", starts = o.callStarts ?? [0];
  const W = (name: string) => m.weights.get(name)?.data;
  const inv = oracleInvFreq(cfg, D);

  const rmsnorm = (x: number[], w: Float64Array) => {
    const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
    return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]!);
  };
  const linear = (x: number[], w: Float64Array, out: number, b?: Float64Array) =>
    Array.from({ length: out }, (_, r) => x.reduce((a, v, i) => a + v * w[r * x.length + i]!, b ? b[r]! : 0));
  const rope = (vec: number[], heads: number, pos: number) => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < D / 2; i++) {
        const c = Math.cos(pos * inv[i]!), s = Math.sin(pos * inv[i]!);
        const a = vec[h * D + i]!, b = vec[h * D + i + D / 2]!;
        vec[h * D + i] = a * c - b * s;
        vec[h * D + i + D / 2] = b * c + a * s;
      }
    }
    return vec;
  };
  const visible = (retrieval: boolean, t: number, p: number) => {
    if (p > t) return false;
    if (retrieval) return true;
    if (mode === "window") return p < S || p >= t - R;
    const c = Math.max(...starts.filter((s) => s <= t));
    if (c === 0 || p >= c) return true; // the first call is dense; the call's own tokens are causal
    return c <= S + R || p < S || p >= c - R;
  };

  const embed = W("model.embed_tokens.weight")!;
  let x = ids.map((id) => Array.from(embed.subarray(id * H, (id + 1) * H)));
  for (let l = 0; l < (cfg.num_hidden_layers as number); l++) {
    const p = `model.layers.${l}.`;
    const h = x.map((r) => rmsnorm(r, W(`${p}input_layernorm.weight`)!));
    const q = h.map((r, t) => rope(linear(r, W(`${p}self_attn.q_proj.weight`)!, Hq * D, W(`${p}self_attn.q_proj.bias`)), Hq, t));
    const k = h.map((r, t) => rope(linear(r, W(`${p}self_attn.k_proj.weight`)!, Hkv * D, W(`${p}self_attn.k_proj.bias`)), Hkv, t));
    const v = h.map((r) => linear(r, W(`${p}self_attn.v_proj.weight`)!, Hkv * D, W(`${p}self_attn.v_proj.bias`)));
    const attn = q.map((qt, t) => {
      const out = new Array<number>(Hq * D).fill(0);
      for (let qh = 0; qh < Hq; qh++) {
        const kh = Math.floor(qh / G), retrieval = o.heads?.[l]?.[kh] ?? true;
        const keys = Array.from({ length: N }, (_, j) => j).filter((j) => visible(retrieval, t, j));
        const s = keys.map((j) => {
          let d = 0;
          for (let i = 0; i < D; i++) d += qt[qh * D + i]! * k[j]![kh * D + i]!;
          return d / Math.sqrt(D);
        });
        const mx = Math.max(...s), e = s.map((z) => Math.exp(z - mx)), sum = e.reduce((a, b) => a + b, 0);
        keys.forEach((j, n) => {
          for (let i = 0; i < D; i++) out[qh * D + i]! += (e[n]! / sum) * v[j]![kh * D + i]!;
        });
      }
      return out;
    });
    x = x.map((r, t) => {
      const o1 = linear(attn[t]!, W(`${p}self_attn.o_proj.weight`)!, H, W(`${p}self_attn.o_proj.bias`));
      const r1 = r.map((v1, i) => v1 + o1[i]!);
      const h2 = rmsnorm(r1, W(`${p}post_attention_layernorm.weight`)!);
      const g = linear(h2, W(`${p}mlp.gate_proj.weight`)!, I, W(`${p}mlp.gate_proj.bias`));
      const u = linear(h2, W(`${p}mlp.up_proj.weight`)!, I, W(`${p}mlp.up_proj.bias`));
      const act = g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]!);
      const d = linear(act, W(`${p}mlp.down_proj.weight`)!, H, W(`${p}mlp.down_proj.bias`));
      return r1.map((v1, i) => v1 + d[i]!);
    });
  }
  const head = W("lm_head.weight") ?? embed;
  return at.map((t) => Float64Array.from(linear(rmsnorm(x[t]!, W("model.norm.weight")!), head, V)));
}

/** max |a − b| / max |b| with the index of the worst element, for assert messages. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): { rel: number; at: number } {
  let worst = 0, at = -1, scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i]! - b[i]!);
    if (!(e <= worst)) (worst = e), (at = i);
  }
  return { rel: worst / (scale || 1), at };
}
