// `duo bench capacity` and `duo bench accuracy` (src/cli/bench/capacity-budget.ts, accuracy.ts) at small sizes: the
// filled counts against the bytes they hold, the ≥ 7x target for Duo int4 vs full bf16 (Llama-3-8B, published pattern),
// the GPU formula against the paper's BF16 figure, and the error ordering of the quantized caches.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createWasmBackend, probeWasm } from "../src/backend/wasm.ts";
import { accuracy } from "../src/cli/bench/accuracy.ts";
import { budgetReport, fillBudget, formulaRows, modelParams } from "../src/cli/bench/capacity-budget.ts";
import { resolveCases } from "../src/cli/bench/cases.ts";
import { parseBytes } from "../src/cli/bench/options.ts";
import { getPreset } from "../src/schedule/presets.ts";
import { skipNoPatterns } from "./helpers/patterns.ts";
import { isDuo } from "./helpers/errors.ts";

const wasm = await probeWasm({});
const skip = wasm.usable ? skipNoPatterns : `skipped: wasm backend not usable here (${wasm.reason})`;

test("capacity: four caches filled until CAPACITY in 80 MiB; Duo int4 holds >= 7x the tokens of full bf16 (Llama-3-8B, published pattern)", { skip }, async () => {
  const [c] = await resolveCases({ shape: "llama-3-8b" });
  const budget = 80 << 20;
  const rows = await fillBudget(c!, budget, () => {});
  const by = (mode: string, dtype: string) => rows.find((r) => r.mode === mode && r.dtype === dtype)!.result;
  for (const r of rows) {
    assert.ok(r.result.filled !== null && r.result.filled > 0, `${r.mode} ${r.dtype} filled nothing`);
    // what it holds cannot exceed the budget, and whole pages (256 tokens) are all that may be left over
    const perToken = { bf16: 2 * 256, int4: 2 * 68 }[r.dtype as "bf16" | "int4"] * 8 * 32 * (r.mode === "duo" ? 0.5 : 1);
    assert.ok(r.result.filled! * perToken <= budget, `${r.mode} ${r.dtype}: ${r.result.filled} tokens x ${perToken} B exceed the budget`);
  }
  assert.ok(by("full", "int4").filled! > 3 * by("full", "bf16").filled!, "int4 holds more than 3x bf16");
  const ratio = by("duo", "int4").filled! / by("full", "bf16").filled!;
  assert.ok(ratio >= 7, `Duo int4 / full bf16 = ${ratio}`);
  assert.match(budgetReport(c!, budget, rows, formulaRows(c!)), /target: Duo int4 holds >= 7x the tokens of full bf16 in the same memory: [\d.]+x, met/);
});

test("capacity formula: Llama-3-8B has 8.03B parameters; 80 GB gives the paper's 0.52M bf16 tokens (within 5 %), Duo int4 >= 7x that", { skip: skipNoPatterns }, async () => {
  assert.equal(Math.round(modelParams(getPreset("llama-3-8b")) / 1e7), 803);
  const [c] = await resolveCases({ shape: "llama-3-8b" });
  const f = formulaRows(c!).filter((r) => r.gpu.startsWith("80"));
  const bf16 = f.find((r) => r.mode === "full" && r.dtype === "bf16")!, duo4 = f.find((r) => r.mode === "duo" && r.dtype === "int4")!;
  assert.equal(bf16.perToken, 128 * 1024);
  assert.ok(Math.abs(bf16.tokens / 0.52e6 - 1) < 0.05, `${bf16.tokens}`);
  assert.equal(duo4.perToken, 2 * 68 * 128, "int4 record bytes x K and V x 128 retrieval heads");
  assert.ok(duo4.tokens / bf16.tokens >= 7);
});

test("--memory parses 512M, 2G, 1.5GiB and refuses less than 1 MiB", () => {
  assert.equal(parseBytes("--memory", "512M"), 512 * 2 ** 20);
  assert.equal(parseBytes("--memory", "2G"), 2 * 2 ** 30);
  assert.equal(parseBytes("--memory", "1.5GiB"), 1.5 * 2 ** 30);
  assert.throws(() => parseBytes("--memory", "12k"), isDuo("INVALID_ARGUMENT", /at least 1 MiB/));
});

test("accuracy: int8 beats int4 everywhere; on random data int8 keeps cosine > 0.999 and int4 > 0.95; outlier keys hurt int4 more", { skip: wasm.usable ? false : "skipped: wasm backend not usable here" }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const rows = await accuracy(b, { shape: { numLayers: 1, numHeads: 8, numKvHeads: 2, headDim: 64 }, context: 400, steps: 3, sinkSize: 4, recentSize: 32 });
  await b.dispose();
  const get = (data: string, dtype: string, heads: string) => rows.find((r) => r.data === data && r.dtype === dtype && r.heads === heads)!;
  for (const data of ["random", "outliers"]) for (const heads of ["retrieval", "streaming"]) {
    assert.equal(get(data, "bf16", heads).relErr, 0);
    assert.ok(get(data, "int8", heads).relErr < get(data, "int4", heads).relErr, `${data} ${heads}`);
    assert.ok(get(data, "bf16", heads).relErrF32 < get(data, "int8", heads).relErrF32, `${data} ${heads}: bf16 closer to f32 than int8`);
  }
  for (const heads of ["retrieval", "streaming"]) {
    assert.ok(get("random", "int8", heads).cosMin > 0.999, `${heads}: ${get("random", "int8", heads).cosMin}`);
    assert.ok(get("random", "int4", heads).cosMin > 0.95, `${heads}: ${get("random", "int4", heads).cosMin}`);
    assert.ok(get("outliers", "int4", heads).relErr > get("random", "int4", heads).relErr, heads);
  }
});

test("duo pattern --kv-dtype int4: the memory rows count 68-byte records (Llama-3-8B at 50 %: 34 KiB full, 17 KiB Duo per token)", { skip: skipNoPatterns }, async () => {
  const { patternCommand } = await import("../src/cli/pattern.ts");
  const { patternPath } = await import("./helpers/patterns.ts");
  const out = await patternCommand([patternPath("Llama-3-8B-Instruct-Gradient-1048k"), "--sparsity", "0.5", "--kv-dtype", "int4", "--context", "1000000"]);
  assert.match(out, /KV cache, int4 \(68 bytes per head and token: 64 bytes of codes \+ f16 scale \+ f16 min\)/);
  assert.match(out, /per token, once S \+ R = 384 tokens are held\s+34\.0 KiB\s+17\.0 KiB\s+0\.500/);
  await assert.rejects(patternCommand([patternPath("Llama-3-8B-Instruct-Gradient-1048k"), "--kv-dtype", "int3"]), isDuo("INVALID_ARGUMENT", /--kv-dtype must be one of "f32", "f16", "bf16", "int8", "int4"/));
});

test("model runner with kvDtype int8 / int4 (reference and wasm): logits stay close to an f32 cache, kvBytes() counts the records", async () => {
  const { LlamaModel } = await import("../src/model/llama.ts");
  const { writeTinyModel } = await import("./helpers/tiny-model.ts");
  const m = writeTinyModel({ dtype: "f32", seed: 5, headDim: 16 });
  try {
    const ids = Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % 40);
    const run = async (kvDtype: "f32" | "int8" | "int4", backend: "reference" | "wasm") => {
      const model = await LlamaModel.load(m.dir, { backend, kvDtype, prefillChunk: 5, threads: 0 });
      try {
        const prefill = await model.forward(ids), step = await model.forward([9]);
        return { logits: [prefill, step], bytes: model.kvBytes().total };
      } finally {
        await model.dispose();
      }
    };
    const cos = (a: Float32Array, b: Float32Array) => {
      let ab = 0, aa = 0, bb = 0;
      for (let i = 0; i < a.length; i++) { ab += a[i]! * b[i]!; aa += a[i]! ** 2; bb += b[i]! ** 2; }
      return ab / Math.sqrt(aa * bb);
    };
    const f32 = await run("f32", "reference");
    for (const backend of ["reference", ...(wasm.usable ? ["wasm" as const] : [])] as const) {
      for (const [dtype, min] of [["int8", 0.9999], ["int4", 0.99]] as const) {
        const q = await run(dtype, backend);
        for (const [i, l] of q.logits.entries()) assert.ok(cos(l, f32.logits[i]!) > min, `${backend} ${dtype} call ${i}: cosine ${cos(l, f32.logits[i]!)}`);
        // 13 tokens x 2 layers x 2 KV heads x K and V, one record each: D + 4 (int8) or D/2 + 4 (int4) bytes, D = 16
        assert.equal(q.bytes, 13 * 2 * 2 * 2 * (dtype === "int8" ? 20 : 12), `${backend} ${dtype} kvBytes`);
      }
    }
  } finally {
    m.dispose();
  }
});
