import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { probeBackend } from "../src/backend/registry.ts";
import { LlamaModel, type LoadOptions } from "../src/model/llama.ts";
import { loadPattern } from "../src/pattern/io.ts";
import { sparsify } from "../src/pattern/sparsify.ts";
import { runtime } from "../src/runtime.ts";
import { oracleLogits, relError, type TinySpec, writeTinyModel } from "./helpers/tiny-model.ts";
import { rng } from "./helpers/random.ts";

// model.forward against the float64 oracle of test/helpers/tiny-model.ts (its own RoPE, RMSNorm, attention with
// the DuoAttention visibility rules, SwiGLU). Tolerance: max |logit − oracle| ≤ 1e-5 · max |oracle| (f32
// activations and KV; measured ≈ 2e-7 with the reference kernels, ≈ 4e-7 with the wasm kernels). The native model
// kernels (the wasm C in libduo.so), where the library loads, run every case too.
const TOL = 1e-5;
const KERNELS = ["reference", ...(runtime().wasmSimd ? ["wasm" as const] : []),
  ...((await probeBackend("native")).usable ? ["native" as const] : [])] as const;

function prompt(n: number, seed: number, vocab: number): number[] {
  const r = rng(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(r() * (vocab - 3)))];
}

/** Prefill `ids` (chunked by the model), then feed `decode` one token at a time; compare every call's logits. */
async function check(spec: TinySpec, load: LoadOptions, n: number, decode: number, label: string, oracle: { heads?: boolean[][]; mode?: "upstream" | "window" } = {},
                     kernelSets: readonly (LoadOptions["kernels"])[] = KERNELS) {
  const m = writeTinyModel(spec);
  try {
    for (const kernels of kernelSets) {
      const model = await LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32", ...load, ...(kernels === undefined ? {} : { kernels }) });
      if (kernels === undefined) assert.equal(model.kernels.name, load.backend === "wasm" ? "wasm" : load.backend, "the model math runs on the attention backend's own kernels");
      try {
        const ids = prompt(n + decode, spec.seed ?? 1, m.vocab);
        const C = model.prefillChunk;
        const starts = [...Array.from({ length: Math.ceil(n / C) }, (_, i) => i * C), ...Array.from({ length: decode }, (_, i) => n + i)];
        const at = [n - 1, ...Array.from({ length: decode }, (_, i) => n + i)];
        const want = oracleLogits(m, ids, at, {
          heads: oracle.heads, sink: load.sinkSize, recent: load.recentSize, mode: oracle.mode, callStarts: starts,
        });
        const got = [await model.forward(ids.slice(0, n))];
        for (let i = 0; i < decode; i++) got.push(await model.forward([ids[n + i]!]));
        got.forEach((g, i) => {
          const { rel, at: where } = relError(g, want[i]!);
          assert.ok(rel <= TOL, `${label}, ${kernels} kernels, position ${at[i]}: max |logit − oracle| = ${rel.toExponential(2)} of max |oracle| at token ${where}`);
        });
        assert.equal(model.tokens.length, n + decode);
      } finally {
        await model.dispose();
      }
    }
  } finally {
    m.dispose();
  }
}

test("Llama MHA, f32 weights, attention and MLP biases, no RoPE scaling: forward matches the oracle", async () => {
  await check({ heads: 4, kvHeads: 4, dtype: "f32", attentionBias: true, mlpBias: true, seed: 11 }, { prefillChunk: 4 }, 10, 2, "llama-mha-f32");
});

test("Llama GQA, bf16 weights, llama3 RoPE scaling, 3 layers: forward matches the oracle", async () => {
  const ropeScaling = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 };
  await check({ layers: 3, heads: 4, kvHeads: 2, dtype: "bf16", ropeTheta: 100, ropeScaling, seed: 12 }, { prefillChunk: 5 }, 12, 2, "llama-gqa-bf16-llama3");
});

test("Mistral GQA (G = 4), f16 weights, linear RoPE scaling, head_dim != hidden/heads: forward matches the oracle", async () => {
  await check({ architecture: "MistralForCausalLM", heads: 4, kvHeads: 1, headDim: 16, dtype: "f16", ropeScaling: { type: "linear", factor: 4 }, seed: 13 }, { prefillChunk: 3 }, 8, 2, "mistral-f16-linear");
});

test("Qwen2 GQA, bf16 weights, q/k/v biases, tied embeddings: forward matches the oracle", async () => {
  await check({ architecture: "Qwen2ForCausalLM", heads: 4, kvHeads: 2, dtype: "bf16", tie: true, seed: 14 }, { prefillChunk: 6 }, 9, 2, "qwen2-bf16-tied");
});

test("sharded safetensors load to the same logits as one file", async () => {
  const one = writeTinyModel({ dtype: "bf16", seed: 21 }), three = writeTinyModel({ dtype: "bf16", seed: 21, shards: 3 });
  try {
    const ids = prompt(7, 5, one.vocab);
    const a = await LlamaModel.load(one.dir, { backend: "reference" }), b = await LlamaModel.load(three.dir, { backend: "reference" });
    assert.deepEqual(await b.forward(ids), await a.forward(ids));
    await a.dispose();
    await b.dispose();
  } finally {
    one.dispose();
    three.dispose();
  }
});

test("an all-retrieval head mask gives the same logits as the plain (no pattern) forward", async () => {
  const m = writeTinyModel({ seed: 22 });
  try {
    const ids = prompt(11, 6, m.vocab);
    for (const kernels of KERNELS) {
      const plain = await LlamaModel.load(m.dir, { backend: "reference", kernels, prefillChunk: 4, sinkSize: 1, recentSize: 2 });
      const full = await LlamaModel.load(m.dir, { backend: "reference", kernels, prefillChunk: 4, sinkSize: 1, recentSize: 2, heads: [[true, true], [true, true]] });
      assert.equal(plain.schedule.retrievalHeads, 4);
      assert.deepEqual(await full.forward(ids), await plain.forward(ids), `${kernels} kernels`);
      assert.deepEqual(await full.forward([9]), await plain.forward([9]), `${kernels} kernels, decode`);
      await plain.dispose();
      await full.dispose();
    }
  } finally {
    m.dispose();
  }
});

// S = 2, R = 4, a 23-token prompt in chunks of 5 (calls at 0, 5, 10, 15, 20), then 4 decode steps. Layer 0 mixes
// retrieval and streaming heads (and is permuted at load: streaming head 0 moves behind retrieval head 1), layer 1
// streams only, layer 2 is all retrieval.
const MASK = [[false, true], [false, false], [true, true]];
const DUO_SPEC: TinySpec = { layers: 3, heads: 4, kvHeads: 2, dtype: "bf16", seed: 31 };

test("DuoAttention (upstream prefill): chunked prefill and decode match the oracle's streaming masks", async () => {
  await check(DUO_SPEC, { heads: MASK, sinkSize: 2, recentSize: 4, prefillChunk: 5, prefill: "upstream" }, 23, 4, "duo-upstream", { heads: MASK, mode: "upstream" });
});

test("DuoAttention (window prefill): every query sees sinks + R recent tokens, as the oracle", async () => {
  await check(DUO_SPEC, { heads: MASK, sinkSize: 2, recentSize: 4, prefillChunk: 5, prefill: "window" }, 23, 4, "duo-window", { heads: MASK, mode: "window" });
});

test("DuoAttention changes the logits (the streaming masks are applied), and a pattern + sparsity gives the sparsified mask", async () => {
  const m = writeTinyModel(DUO_SPEC);
  const pat = join(m.dir, "pattern");
  mkdirSync(pat);
  writeFileSync(join(pat, "full_attention_heads.tsv"), "1.0e-01\t9.0e-01\n2.0e-01\t3.0e-01\n8.0e-01\t7.0e-01\n");
  writeFileSync(join(pat, "config.json"), JSON.stringify({ sink_size: 128, recent_size: 256 }));
  try {
    const ids = prompt(23, 31, m.vocab);
    const full = await LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32", prefillChunk: 5 });
    const duo = await LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32", prefillChunk: 5, pattern: pat, sparsity: 0.5, sinkSize: 2, recentSize: 4 });
    const want = sparsify(await loadPattern(pat), { sparsity: 0.5 });
    assert.deepEqual(duo.schedule.mask, want.mask);
    assert.deepEqual(duo.schedule.mask, MASK);
    const a = await full.forward(ids), b = await duo.forward(ids);
    const { rel } = relError(b, a);
    assert.ok(rel > 1e-3, `DuoAttention logits differ from full attention by only ${rel.toExponential(2)}`);
    const [o] = oracleLogits(m, ids, [22], { heads: MASK, sink: 2, recent: 4, callStarts: [0, 5, 10, 15, 20] });
    assert.ok(relError(b, o!).rel <= TOL, `pattern-loaded model vs oracle: ${relError(b, o!).rel.toExponential(2)}`);
    await full.dispose();
    await duo.dispose();
  } finally {
    m.dispose();
  }
});

const wasmBackend = await probeBackend("wasm");
const nativeBackend = await probeBackend("native");
test("DuoAttention through the native attention backend (2 threads) matches the oracle", { skip: nativeBackend.usable ? false : `skipped: native backend not usable: ${nativeBackend.reason}` }, async () => {
  await check(DUO_SPEC, { backend: "native", threads: 2, heads: MASK, sinkSize: 2, recentSize: 4, prefillChunk: 5 }, 23, 2, "duo-native-backend", { heads: MASK, mode: "upstream" });
});
test("DuoAttention through the wasm attention backend matches the oracle", { skip: wasmBackend.usable ? false : `skipped: wasm attention backend not usable: ${wasmBackend.reason}` }, async () => {
  await check(DUO_SPEC, { backend: "wasm", threads: 0, heads: MASK, sinkSize: 2, recentSize: 4, prefillChunk: 5 }, 23, 2, "duo-wasm-backend", { heads: MASK, mode: "upstream" });
});

// One code path: with no kernels option the model math comes from the attention backend (Backend.modelKernels).
for (const [backend, probe] of [["reference", { usable: true, reason: "" }], ["wasm", wasmBackend], ["native", nativeBackend]] as const) {
  test(`backend ${backend} alone: the model math runs on its own kernels and matches the oracle`, { skip: probe.usable ? false : `skipped: ${backend} backend not usable: ${probe.reason}` }, async () => {
    await check(DUO_SPEC, { backend, threads: backend === "wasm" ? 0 : 2, heads: MASK, sinkSize: 2, recentSize: 4, prefillChunk: 5 }, 23, 2, `duo-${backend}-alone`, { heads: MASK, mode: "upstream" }, [undefined]);
  });
}
