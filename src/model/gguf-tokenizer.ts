/**
 * A GGUF file's tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) as the Hugging Face files
 * TextTokenizer reads: a tokenizer.json object and a tokenizer_config.json object. Two tokenizer models exist in
 * llama.cpp's Llama-family files:
 *   - "gpt2": byte-level BPE (Llama 3, Qwen2): vocab + merges as stored; the pre-tokenizer regex chosen by
 *     `tokenizer.ggml.pre` (default / gpt2, llama-bpe, qwen2 — others are refused, as their splits differ);
 *   - "llama": SentencePiece BPE (Llama 2, Mistral): vocab + scores; the merges are rebuilt from the scores the way
 *     transformers converts a sentencepiece model (every split of a piece into two vocabulary pieces, ranked by the
 *     piece's score), with byte fallback to the <0xXX> tokens.
 * Token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; 2–4 become added tokens.
 */
import { DuoError } from "../errors.ts";

export interface TokenizerFiles {
  /** tokenizer.json */
  json: Record<string, unknown>;
  /** tokenizer_config.json (special tokens, chat_template) */
  config: Record<string, unknown>;
}

export const GGUF_TOKENIZERS = ["gpt2", "llama"] as const;

/** Pre-tokenizer split regexes of the byte-level BPE models (as in those models' tokenizer.json). */
const PRE_SPLIT: Record<string, string | null> = {
  default: null,
  gpt2: null,
  "llama-bpe": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4;

function addedToken(id: number, content: string, special: boolean): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/** Adds BOS in front of each sequence (what llama.cpp does when tokenizer.ggml.add_bos_token is true). */
function bosProcessor(bos: string, bosId: number): Record<string, unknown> {
  return {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

/** The merges of a SentencePiece BPE vocabulary, from the piece scores (transformers' SentencePieceExtractor). */
function spmMerges(tokens: readonly string[], scores: readonly number[], types: readonly number[]): string[] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => ids.set(t, i));
  const merges: { l: string; r: string; score: number; li: number; ri: number }[] = [];
  tokens.forEach((piece, i) => {
    if (types[i] !== NORMAL) return;
    const chars = Array.from(piece);
    for (let s = 1; s < chars.length; s++) {
      const l = chars.slice(0, s).join(""), r = chars.slice(s).join("");
      const li = ids.get(l), ri = ids.get(r);
      if (li !== undefined && ri !== undefined) merges.push({ l, r, score: scores[i] ?? 0, li, ri });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.li - b.li || a.ri - b.ri);
  return merges.map((m) => `${m.l} ${m.r}`);
}

/** Build the tokenizer files from GGUF metadata; UNSUPPORTED (naming the file and what is supported) otherwise. */
export function ggufTokenizer(md: Record<string, unknown>, file: string): TokenizerFiles {
  const model = md["tokenizer.ggml.model"];
  const tokens = md["tokenizer.ggml.tokens"];
  if (!(GGUF_TOKENIZERS as readonly unknown[]).includes(model) || !Array.isArray(tokens)) {
    throw new DuoError("UNSUPPORTED", `${file}: tokenizer.ggml.model ${JSON.stringify(model)} is not supported; supported: gpt2 (byte-level BPE: Llama 3, Qwen2), llama (SentencePiece BPE: Llama 2, Mistral)`);
  }
  const types = (md["tokenizer.ggml.token_type"] as number[] | undefined) ?? tokens.map(() => NORMAL);
  const id = (key: string) => {
    const v = md[`tokenizer.ggml.${key}`];
    return typeof v === "number" || typeof v === "bigint" ? Number(v) : undefined;
  };
  const bosId = id("bos_token_id"), eosId = id("eos_token_id"), unkId = id("unknown_token_id");
  const text = (i: number | undefined) => (i === undefined ? undefined : (tokens[i] as string | undefined));
  const vocab: Record<string, number> = {};
  tokens.forEach((t: string, i) => (vocab[t] ??= i));
  const added = tokens.flatMap((t: string, i) => {
    const ty = types[i];
    return ty === UNKNOWN || ty === CONTROL || ty === USER_DEFINED ? [addedToken(i, t, ty !== USER_DEFINED)] : [];
  });
  const spm = model === "llama";
  const addBos = (md["tokenizer.ggml.add_bos_token"] as boolean | undefined) ?? spm;
  const postProcessor = addBos && bosId !== undefined ? bosProcessor(tokens[bosId] as string, bosId) : null;
  let json: Record<string, unknown>;
  if (spm) {
    const scores = (md["tokenizer.ggml.scores"] as number[] | undefined) ?? [];
    const prefix = (md["tokenizer.ggml.add_space_prefix"] as boolean | undefined) ?? true;
    const replace = { type: "Replace", pattern: { String: " " }, content: "▁" };
    json = {
      version: "1.0", truncation: null, padding: null, added_tokens: added,
      normalizer: prefix ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, replace] } : replace,
      pre_tokenizer: null,
      post_processor: postProcessor,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          ...(prefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: "BPE", dropout: null, unk_token: text(unkId) ?? null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: spmMerges(tokens, scores, types),
      },
    };
  } else {
    const pre = String(md["tokenizer.ggml.pre"] ?? "default");
    if (!(pre in PRE_SPLIT)) {
      throw new DuoError("UNSUPPORTED", `${file}: tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported; supported byte-level BPE pre-tokenizers: ${Object.keys(PRE_SPLIT).join(", ")}`);
    }
    const split = PRE_SPLIT[pre];
    const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: split === null };
    json = {
      version: "1.0", truncation: null, padding: null, added_tokens: added,
      normalizer: pre === "qwen2" ? { type: "NFC" } : null,
      pre_tokenizer: split === null ? byteLevel : {
        type: "Sequence",
        pretokenizers: [{ type: "Split", pattern: { Regex: split }, behavior: "Isolated", invert: false }, byteLevel],
      },
      post_processor: postProcessor,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: false, byte_fallback: false, ignore_merges: pre === "llama-bpe", vocab,
        merges: (md["tokenizer.ggml.merges"] as string[] | undefined) ?? [],
      },
    };
  }
  const template = md["tokenizer.chat_template"];
  const config: Record<string, unknown> = {
    bos_token: text(bosId), eos_token: text(eosId), unk_token: text(unkId),
    ...(typeof template === "string" ? { chat_template: template } : {}),
  };
  return { json, config };
}
