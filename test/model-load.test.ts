import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { DuoError, type DuoErrorCode } from "../src/errors.ts";
import { parseConfig } from "../src/model/config.ts";
import { LlamaModel, type LoadOptions } from "../src/model/llama.ts";
import { runtime } from "../src/runtime.ts";
import { type TinyModel, type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";

// Bad model directories and options fail at load with a DuoError whose code and message say what is wrong.

async function rejects(dir: string, code: DuoErrorCode, pattern: RegExp, options: LoadOptions = { backend: "reference" }): Promise<void> {
  await assert.rejects(LlamaModel.load(dir, options), (e: unknown) => {
    assert.ok(e instanceof DuoError, `expected a DuoError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

async function withModel(spec: TinySpec, edit: (m: TinyModel) => void, run: (m: TinyModel) => Promise<void>): Promise<void> {
  const m = writeTinyModel(spec);
  try {
    edit(m);
    await run(m);
  } finally {
    m.dispose();
  }
}

function editConfig(m: TinyModel, change: Record<string, unknown>): void {
  const path = join(m.dir, "config.json");
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, "utf8")), ...change }));
}

test("missing files: config.json, tokenizer.json, weights", async () => {
  await withModel({}, (m) => rmSync(join(m.dir, "config.json")), (m) => rejects(m.dir, "IO", /no config\.json/));
  await withModel({}, (m) => rmSync(join(m.dir, "tokenizer.json")), (m) => rejects(m.dir, "IO", /no tokenizer\.json/));
  await withModel({}, (m) => rmSync(join(m.dir, "model.safetensors")), (m) => rejects(m.dir, "IO", /no model\.safetensors or model\.safetensors\.index\.json/));
  await rejects("/nonexistent/duo-model", "IO", /no config\.json/);
});

test("unknown architecture, activation or RoPE type: UNSUPPORTED, listing what is supported", async () => {
  await withModel({}, (m) => editConfig(m, { architectures: ["GPT2LMHeadModel"] }), (m) =>
    rejects(m.dir, "UNSUPPORTED", /GPT2LMHeadModel.*supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM/));
  await withModel({}, (m) => editConfig(m, { rope_scaling: { rope_type: "yarn", factor: 4 } }), (m) =>
    rejects(m.dir, "UNSUPPORTED", /RoPE type "yarn" is not supported; supported: none, default, linear, llama3/));
  await withModel({}, (m) => editConfig(m, { hidden_act: "gelu" }), (m) => rejects(m.dir, "UNSUPPORTED", /hidden_act "gelu".*silu/));
});

test("config vs tensor shapes: the tensor, its shape and the expected one are named", async () => {
  await withModel({}, (m) => editConfig(m, { intermediate_size: 40 }), (m) =>
    rejects(m.dir, "SHAPE_MISMATCH", /tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[48, 32\] but config\.json implies \[40, 32\]/));
  await withModel({}, (m) => editConfig(m, { num_key_value_heads: 4 }), (m) =>
    rejects(m.dir, "SHAPE_MISMATCH", /"model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[16, 32\] but config\.json implies \[32, 32\]/));
  // Untied config but no lm_head tensor in the file.
  await withModel({ tie: true }, (m) => editConfig(m, { tie_word_embeddings: false }), (m) =>
    rejects(m.dir, "SHAPE_MISMATCH", /no tensor "lm_head\.weight".*expected shape \[\d+, 32\]/));
  // Llama with attention_bias: the biases must be there.
  await withModel({}, (m) => editConfig(m, { attention_bias: true }), (m) => rejects(m.dir, "SHAPE_MISMATCH", /no tensor "model\.layers\.0\.self_attn\.q_proj\.bias"/));
});

test("truncated or corrupt safetensors: the file, the tensor and the sizes are named", async () => {
  await withModel({}, (m) => {
    const path = join(m.dir, "model.safetensors");
    const bytes = readFileSync(path);
    writeFileSync(path, bytes.subarray(0, bytes.length - 100));
  }, (m) => rejects(m.dir, "IO", /model\.safetensors: is truncated or corrupt: tensor "lm_head\.weight" needs bytes \[\d+, \d+\) of the data section, which has \d+ bytes/));
  await withModel({}, (m) => writeFileSync(join(m.dir, "model.safetensors"), new Uint8Array(5)), (m) => rejects(m.dir, "IO", /is 5 bytes, too short/));
  await withModel({}, (m) => {
    const path = join(m.dir, "model.safetensors");
    const bytes = readFileSync(path);
    bytes[8] = "!".charCodeAt(0); // the opening brace of the JSON header
    writeFileSync(path, bytes);
  }, (m) => rejects(m.dir, "IO", /header is not valid JSON/));
  await withModel({}, (m) => {
    const path = join(m.dir, "model.safetensors");
    const bytes = readFileSync(path);
    new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, BigInt(bytes.length), true);
    writeFileSync(path, bytes);
  }, (m) => rejects(m.dir, "IO", /truncated: the header needs \d+ bytes but the file has \d+/));
});

test("sharded index naming a tensor its shard does not have", async () => {
  await withModel({ shards: 2 }, (m) => {
    const path = join(m.dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(path, "utf8"));
    index.weight_map["model.norm.weight"] = index.weight_map["model.norm.weight"].includes("00001") ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    writeFileSync(path, JSON.stringify(index));
  }, (m) => rejects(m.dir, "IO", /says tensor "model\.norm\.weight" is in model-0000\d-of-00002\.safetensors, but that file has no such tensor/));
});

test("bad options: heads of the wrong shape, pattern and heads together, sparsity alone, unknown keys", async () => {
  await withModel({}, () => {}, async (m) => {
    await rejects(m.dir, "SHAPE_MISMATCH", /3 layers x 2 KV heads, but the model has 2 layers x 2 KV heads/, { backend: "reference", heads: [[true, true], [true, false], [false, false]] });
    await rejects(m.dir, "INVALID_ARGUMENT", /either pattern \(\+ sparsity\) or heads/, { backend: "reference", heads: [[true, true], [true, true]], pattern: "x" });
    await rejects(m.dir, "INVALID_ARGUMENT", /sparsity needs a pattern/, { backend: "reference", sparsity: 0.5 });
    await rejects(m.dir, "INVALID_ARGUMENT", /unknown LlamaModel\.load option "sink"; valid options: .*sinkSize/, { backend: "reference", sink: 4 } as LoadOptions);
    await rejects(m.dir, "INVALID_ARGUMENT", /prefillChunk must be an integer >= 1/, { backend: "reference", prefillChunk: 0 });
  });
  await withModel({ architecture: "MistralForCausalLM" }, (m) => editConfig(m, { sliding_window: 64 }), (m) =>
    rejects(m.dir, "UNSUPPORTED", /sliding window of 64 tokens.*maxContext <= 64/, { backend: "reference", maxContext: 1000 }));
});

test("forward rejects ids outside the vocabulary and contexts past maxContext, leaving the sequence unchanged", async () => {
  await withModel({}, () => {}, async (m) => {
    const model = await LlamaModel.load(m.dir, { backend: "reference", maxContext: 8 });
    try {
      await assert.rejects(model.forward([1, m.vocab]), /token id \d+ at index 1 is outside the vocabulary \[0, \d+\)/);
      await assert.rejects(model.forward([]), /at least one token id/);
      const a = await model.forward([1, 5, 6]);
      await assert.rejects(model.forward([1, 2, 3, 4, 5, 6]), (e: unknown) => e instanceof DuoError && e.code === "CAPACITY" && /holds 3 tokens; 6 more would exceed maxContext = 8/.test(e.message));
      assert.deepEqual(model.tokens, [1, 5, 6]);
      model.reset();
      assert.deepEqual(await model.forward([1, 5, 6]), a);
    } finally {
      await model.dispose();
    }
    await assert.rejects(model.forward([1]), /disposed/);
  });
});

test("config parsing: defaults, rope_parameters (transformers 5), generation_config eos ids", () => {
  const base = { architectures: ["LlamaForCausalLM"], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 100 };
  const c = parseConfig(base);
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.headDim, 8);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: "none" });
  const v5 = parseConfig({ ...base, eos_token_id: 2, rope_parameters: { rope_type: "llama3", rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, "config.json", { eos_token_id: [2, 7] });
  assert.equal(v5.ropeTheta, 500000);
  assert.deepEqual(v5.ropeScaling, { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.deepEqual(v5.eosTokenIds, [2, 7]);
  assert.throws(() => parseConfig({ ...base, num_key_value_heads: 3 }), /multiple of num_key_value_heads/);
  assert.throws(() => parseConfig({ ...base, hidden_size: "big" }), /"hidden_size" must be an integer >= 1, got "big"/);
  assert.equal(parseConfig({ model_type: "qwen2", ...base, architectures: undefined }).architecture, "Qwen2ForCausalLM");
});

// A model whose weights exceed one wasm instance's 4 GiB: a sparse 5.4 GB file (no data written) whose header
// describes a 2^20-token vocabulary; the load must fail before reading any weight, stating the bytes.
test("a model larger than the 4 GiB of one wasm instance fails at load with the bytes needed and available", { skip: runtime().wasmSimd ? false : "skipped: no WebAssembly SIMD" }, async () => {
  await withModel({}, (m) => {
    const V = 1 << 20, H = 1280;
    editConfig(m, { vocab_size: V, hidden_size: H, num_attention_heads: 10, num_key_value_heads: 10, intermediate_size: 64, num_hidden_layers: 1 });
    const shapes: [string, number[]][] = [["model.embed_tokens.weight", [V, H]], ["lm_head.weight", [V, H]], ["model.norm.weight", [H]]];
    for (const n of ["input_layernorm", "post_attention_layernorm"]) shapes.push([`model.layers.0.${n}.weight`, [H]]);
    for (const n of ["q", "k", "v", "o"]) shapes.push([`model.layers.0.self_attn.${n}_proj.weight`, [H, H]]);
    shapes.push(["model.layers.0.mlp.gate_proj.weight", [64, H]], ["model.layers.0.mlp.up_proj.weight", [64, H]], ["model.layers.0.mlp.down_proj.weight", [H, 64]]);
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [name, shape] of shapes) {
      const bytes = shape.reduce((a, d) => a * d, 1) * 2;
      header[name] = { dtype: "BF16", shape, data_offsets: [off, off + bytes] };
      off += bytes;
    }
    const json = new TextEncoder().encode(JSON.stringify(header));
    const path = join(m.dir, "model.safetensors");
    const head = new Uint8Array(8 + json.length);
    new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
    head.set(json, 8);
    writeFileSync(path, head);
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array(1), 0, 1, head.length + off - 1);
    closeSync(fd);
    truncateSync(path, head.length + off);
  }, (m) => rejects(m.dir, "CAPACITY", /needs \d{10} bytes of weights \(5\.\d\d GiB\) .* one wasm instance holds 4294967296 bytes \(4 GiB\) and \d+ are available/, { backend: "reference", kernels: "wasm" }));
});
