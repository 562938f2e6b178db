import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuoError, type DuoErrorCode } from "../src/errors.ts";
import { openGguf } from "../src/model/gguf.ts";
import { ggufTokenizer } from "../src/model/gguf-tokenizer.ts";
import { LlamaModel, type LoadOptions } from "../src/model/llama.ts";
import { openWeights, readTensorBytes, readTensorF32 } from "../src/model/safetensors.ts";
import { TextTokenizer } from "../src/model/tokenizer.ts";
import { randomGgufHeader, type WriteDtype, writeRandomModel, type WriteModelOptions } from "../src/model/write.ts";
import { runtime } from "../src/runtime.ts";
import { probeNative } from "../src/backend/native.ts";
import { relError, tokenizerJson } from "./helpers/tiny-model.ts";

// GGUF files (llama.cpp's format) beside safetensors: the writer's twin files hold the same weights and give the
// same logits; the tokenizer comes from the GGUF metadata; bad files fail at load naming the file and the tensor.

const simd = runtime().wasmSimd;
/** The kernel sets the twin files run through: reference, wasm where SIMD runs, native where libduo.so loads. */
const twinKernels: ("reference" | "wasm" | "native")[] = ["reference", ...(simd ? ["wasm" as const] : []), ...((await probeNative({})).usable ? ["native" as const] : [])];

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "duo-gguf-"));
  try {
    await run(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function rejects(path: string, code: DuoErrorCode, pattern: RegExp, options: LoadOptions = { backend: "reference" }): Promise<void> {
  await assert.rejects(LlamaModel.load(path, options), (e: unknown) => {
    assert.ok(e instanceof DuoError, `expected a DuoError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

/** The same prompt through the safetensors directory and the GGUF file; logits after the prompt and 3 decode steps. */
async function twinLogits(dir: string, gguf: string, kernels: "reference" | "wasm" | "native"): Promise<{ st: Float32Array[]; gg: Float32Array[]; ids: number[] }> {
  const out: Float32Array[][] = [];
  let ids: number[] = [];
  for (const path of [dir, gguf]) {
    // f32 KV: a bf16 cache would turn last-bit differences into bf16 rounding flips
    const model = await LlamaModel.load(path, { backend: "reference", kernels, kvDtype: "f32" });
    try {
      const p = model.tokenizer.encode("the cat sat on the mat, then in the hat");
      if (out.length === 0) ids = p;
      else assert.deepEqual(p, ids, "the GGUF tokenizer encodes like tokenizer.json");
      const logits = [await model.forward(ids)];
      for (const id of [5, 77, 299]) logits.push(await model.forward([id]));
      out.push(logits);
    } finally {
      await model.dispose();
    }
  }
  return { st: out[0]!, gg: out[1]!, ids };
}

/** Rows of 256 for the K-quants (q4_k: Q4_K matrices, Q6_K embedding and lm_head). */
const K_SHAPE = {
  architectures: ["LlamaForCausalLM"], hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 300, rope_theta: 10000, max_position_embeddings: 4096,
};

const QWEN_SHAPE = {
  architectures: ["Qwen2ForCausalLM"], hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 300, rope_theta: 1000000, max_position_embeddings: 4096, tie_word_embeddings: true,
};

test("GGUF and safetensors of the same random weights give the same logits (llama with Llama 3.1 RoPE, qwen2; f32, f16, bf16, q8_0, q4_0, q4_k; reference, wasm and native kernels)", async () => {
  const cases: [WriteModelOptions["shape"], WriteDtype, ("gpt2" | "llama")?][] = [
    ["tiny", "f32"], ["tiny", "f16"], ["tiny", "bf16", "llama"], ["tiny", "q8_0"], ["tiny", "q4_0"], [K_SHAPE, "q4_k"], [QWEN_SHAPE, "bf16"],
    [QWEN_SHAPE, "q8_0"],
  ];
  for (const [shape, dtype, tokenizer] of cases) {
    await withDir(async (dir) => {
      const w = await writeRandomModel(dir, { shape, dtype, format: "both", seed: 7, tokenizer });
      for (const kernels of twinKernels) {
        const { st, gg } = await twinLogits(dir, w.gguf!, kernels);
        for (let i = 0; i < st.length; i++) {
          const { rel, at } = relError(gg[i]!, st[i]!);
          // Same weights, same kernels; only the RoPE frequencies differ in their last bits (GGUF stores Llama 3.1
          // scaling as f32 divisors) and rms_norm_eps is an f32 in GGUF: 1e-5 of the largest logit.
          assert.ok(rel <= 1e-5, `${typeof shape === "string" ? shape : `${shape!.architectures} hidden ${shape!.hidden_size}`} ${dtype} ${kernels} step ${i}: logit ${at} GGUF ${gg[i]![at]} safetensors ${st[i]![at]} (rel ${rel.toExponential(2)})`);
        }
      }
    });
  }
});

test("round trip: every tensor of the GGUF file reads back equal to its safetensors twin (q/k rows back in Hugging Face order)", async () => {
  for (const dtype of ["f16", "q8_0", "q4_0"] as const) {
    await withDir(async (dir) => {
      const w = await writeRandomModel(dir, { dtype, format: "both", seed: 3 });
      const st = await openWeights(dir), g = await openGguf(w.gguf!);
      assert.equal(g.config.numLayers, w.config.numLayers);
      assert.deepEqual({ ...g.config, rmsNormEps: 0 }, { ...w.config, rmsNormEps: 0, maxPositionEmbeddings: g.config.maxPositionEmbeddings, ropeScaling: g.config.ropeScaling });
      assert.equal(g.tensors.size, st.size);
      assert.ok(g.tensors.get("model.layers.0.self_attn.q_proj.weight")!.interleavedHeads === 4, "llama q_proj rows are marked interleaved");
      if (dtype === "q8_0") assert.equal(g.tensors.get("model.layers.1.mlp.down_proj.weight")!.dtype, "Q8_0");
      for (const [name, t] of st) {
        const a = await readTensorF32(t), b = await readTensorF32(g.tensors.get(name)!);
        assert.deepEqual(b, a, `${dtype}: tensor ${name}`);
      }
      assert.ok(g.ropeFreqFactors && g.ropeFreqFactors.length === w.config.headDim / 2, "Llama 3.1 scaling comes back as rope_freqs divisors");
    });
  }
});

test("llama.cpp's q/k row interleave is undone per head: file row 2i + j is row j·D/2 + i", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "rows.bin");
    // 2 heads of D = 4 rows, 1 column: file order per head [r0, r2, r1, r3]
    writeFileSync(file, new Uint8Array(Float32Array.from([0, 2, 1, 3, 4, 6, 5, 7]).buffer));
    const bytes = await readTensorBytes({ name: "q", file, dtype: "F32", shape: [8, 1], offset: 0, byteLength: 32, interleavedHeads: 2 });
    assert.deepEqual([...new Float32Array(bytes.buffer)], [0, 1, 2, 3, 4, 5, 6, 7]);
  });
});

test("a directory holding one GGUF file loads it; two are refused by name", async () => {
  await withDir(async (dir) => {
    const w = await writeRandomModel(dir, { format: "gguf", dtype: "q8_0" });
    const model = await LlamaModel.load(dir, { backend: "reference" });
    try {
      assert.equal(model.config.vocabSize, w.config.vocabSize);
      const text = await model.generate("the", { maxTokens: 4, ignoreEos: true }).text();
      assert.equal(typeof text, "string");
      assert.equal(model.tokens.length, model.tokenizer.encode("the").length + 4);
    } finally {
      await model.dispose();
    }
    copyFileSync(w.gguf!, join(dir, "other.gguf"));
    await rejects(dir, "INVALID_ARGUMENT", /holds 2 GGUF files \(model-q8_0\.gguf, other\.gguf\); pass the path of one/);
  });
});

/** Offset of `needle` (ASCII) in `bytes`. */
function find(bytes: Uint8Array, needle: string): number {
  const n = new TextEncoder().encode(needle);
  outer: for (let i = 0; i + n.length <= bytes.length; i++) {
    for (let j = 0; j < n.length; j++) if (bytes[i + j] !== n[j]) continue outer;
    return i;
  }
  throw new Error(`${needle} not found`);
}

test("bad GGUF files: truncated, not GGUF, unknown tensor type, wrong architecture, partial RoPE — the file and tensor are named", async () => {
  await withDir(async (dir) => {
    const w = await writeRandomModel(dir, { format: "gguf", dtype: "f16" });
    const good = readFileSync(w.gguf!);
    const path = join(dir, "bad.gguf");
    rmSync(w.gguf!);
    writeFileSync(path, good.subarray(0, good.length - 100));
    await rejects(path, "IO", /bad\.gguf: is truncated or corrupt: tensor "blk\.1\.ffn_down\.weight" \(F16 \[64, 128\]\) needs bytes \[\d+, \d+\) but the file has \d+ bytes/);
    writeFileSync(path, good.subarray(0, 2000));
    await rejects(path, "IO", /bad\.gguf: is truncated: its header \(metadata and tensor infos\) ends at byte \d+ but the file has 2000 bytes/);
    await rejects(join(dir, "missing.gguf"), "IO", /missing\.gguf: file not found/);
    writeFileSync(path, new Uint8Array(64).fill(7));
    await rejects(path, "IO", /bad\.gguf: not a readable GGUF file \(.*magic/);
    // blk.0.ffn_up.weight's type (after its name, n_dims and two u64 dims) -> 13 (Q5_K)
    const typed = Uint8Array.from(good);
    const at = find(typed, "blk.0.ffn_up.weight") + "blk.0.ffn_up.weight".length + 4 + 16;
    new DataView(typed.buffer).setUint32(at, 13, true);
    writeFileSync(path, typed);
    await rejects(path, "UNSUPPORTED", /bad\.gguf: tensor "model\.layers\.0\.mlp\.up_proj\.weight" has type Q5_K; supported GGUF tensor types are F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K/);
    const arch = Uint8Array.from(good);
    arch.set(new TextEncoder().encode("gemma"), find(arch, "general.architecture") + "general.architecture".length + 4 + 8);
    writeFileSync(path, arch);
    await rejects(path, "UNSUPPORTED", /bad\.gguf: general\.architecture "gemma" is not supported; supported: llama \(Llama 2\/3\/3\.1, Mistral\), qwen2/);
    const rotary = Uint8Array.from(good); // llama.rope.dimension_count (u32 after its type) 16 -> 8
    new DataView(rotary.buffer).setUint32(find(rotary, "llama.rope.dimension_count") + "llama.rope.dimension_count".length + 4, 8, true);
    writeFileSync(path, rotary);
    await rejects(path, "UNSUPPORTED", /bad\.gguf: RoPE on 8 of 16 head dimensions \(llama\.rope\.dimension_count\) is not supported/);
  });
});

// A Llama-3-8B-shaped bf16 GGUF: the real header and a sparse 16 GB file (no data written).
test("a GGUF model larger than one wasm instance fails at load with the bytes needed, before reading weights", { skip: simd ? false : "skipped: no WebAssembly SIMD" }, async () => {
  await withDir(async (dir) => {
    const { header, fileBytes } = await randomGgufHeader("llama-3-8b", "bf16");
    const path = join(dir, "big.gguf");
    writeFileSync(path, header);
    truncateSync(path, fileBytes);
    await rejects(path, "CAPACITY", /needs \d{11} bytes of weights \(14\.\d\d GiB\) .* one wasm instance holds 4294967296 bytes/, { backend: "reference", kernels: "wasm" });
  });
});

test("GGUF tokenizers: byte-level BPE encodes like the equivalent tokenizer.json; SentencePiece BPE merges from scores with byte fallback", async () => {
  // The test helper's hand-written byte-level BPE, as GGUF metadata.
  const { json } = tokenizerJson();
  const model = json.model as { vocab: Record<string, number>; merges: string[] };
  const tokens: string[] = [];
  for (const [t, i] of Object.entries(model.vocab)) tokens[i] = t;
  const gpt2 = ggufTokenizer({
    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": tokens.map((_, i) => (i < 3 ? 3 : 1)), "tokenizer.ggml.merges": model.merges,
    "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.add_bos_token": true,
  }, "t.gguf");
  const fromGguf = await TextTokenizer.fromJson(gpt2.json, gpt2.config, "t.gguf");
  const fromJson = await TextTokenizer.fromJson(json, { bos_token: "<s>", eos_token: "</s>" }, "tokenizer.json");
  for (const s of ["the there in an", "  spaces\tand\nlines", "héllo wörld ✓", "<s>the</s>"]) {
    assert.deepEqual(fromGguf.encode(s), fromJson.encode(s), JSON.stringify(s));
    assert.equal(fromGguf.decode(fromGguf.encode(s)), fromJson.decode(fromJson.encode(s)));
  }
  assert.equal(fromGguf.encode("the")[0], 1, "BOS added (tokenizer.ggml.add_bos_token)");

  // SentencePiece: <unk> <s> </s>, 256 byte tokens, then pieces with scores (higher merges first).
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const pieces: [string, number][] = [["▁", -1], ["t", -2], ["h", -3], ["e", -4], ["he", -5], ["▁t", -6], ["▁the", -7], ["a", -8]];
  const spmTokens = ["<unk>", "<s>", "</s>", ...bytes, ...pieces.map(([p]) => p)];
  const spm = ggufTokenizer({
    "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": spmTokens,
    "tokenizer.ggml.scores": [0, 0, 0, ...bytes.map(() => 0), ...pieces.map(([, s]) => s)],
    "tokenizer.ggml.token_type": [2, 3, 3, ...bytes.map(() => 6), ...pieces.map(() => 1)],
    "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
  }, "spm.gguf");
  const tok = await TextTokenizer.fromJson(spm.json, spm.config, "spm.gguf");
  const id = (p: string) => spmTokens.indexOf(p);
  assert.deepEqual(tok.encode("the"), [1, id("▁the")]);
  assert.deepEqual(tok.encode("the a", { addSpecialTokens: false }), [id("▁the"), id("▁"), id("a")]);
  assert.deepEqual(tok.encode("é", { addSpecialTokens: false }), [id("▁"), 3 + 0xc3, 3 + 0xa9], "byte fallback");
  assert.equal(tok.decode([1, id("▁the"), id("▁"), 3 + 0xc3, 3 + 0xa9]), "the é");

  assert.throws(() => ggufTokenizer({ "tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"] }, "x.gguf"), /x\.gguf: tokenizer\.ggml\.model "bert" is not supported; supported: gpt2/);
  assert.throws(() => ggufTokenizer({ "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "falcon", "tokenizer.ggml.tokens": ["a"] }, "x.gguf"), /tokenizer\.ggml\.pre "falcon" is not supported; supported byte-level BPE pre-tokenizers: default, gpt2, llama-bpe, qwen2/);
});

test("a head mask that reorders heads: quantized GGUF weights, permuted (re-quantized, or decoded for K-quants), give the safetensors twin's logits", async () => {
  for (const dtype of ["q8_0", "q4_0", "q4_k"] as const) {
    await withDir(async (dir) => {
      const w = await writeRandomModel(dir, { dtype, format: "both", seed: 9, shape: dtype === "q4_k" ? K_SHAPE : "tiny" });
      const heads = [[false, true], [true, false]]; // layer 0: head 1 first; G·D = 32, so whole blocks move
      const logits: Float32Array[] = [];
      for (const path of [dir, w.gguf!]) {
        const model = await LlamaModel.load(path, { backend: "reference", kvDtype: "f32", heads, sinkSize: 2, recentSize: 4 });
        logits.push(await model.forward([1, 40, 41, 42, 43, 44, 45, 46, 47, 48]));
        await model.dispose();
      }
      const { rel, at } = relError(logits[1]!, logits[0]!);
      assert.ok(rel <= 1e-5, `${dtype}: logit ${at} GGUF ${logits[1]![at]} safetensors ${logits[0]![at]} (rel ${rel.toExponential(2)})`);
    });
  }
});
