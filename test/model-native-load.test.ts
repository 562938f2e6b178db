import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { probeNative } from "../src/backend/native.ts";
import { DuoError } from "../src/errors.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModelKernels, type ModelKernels } from "../src/model/kernels.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { openWeights } from "../src/model/safetensors.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { loadWeights } from "../src/model/weights.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

// The native load path: kernels "native" read every matrix straight from the safetensors file into the library's
// memory (duo_read_file, native/src/file.c); the JS path (streamTensor + write) stays for the other kernels. Both must
// give the same bytes, hence bit-identical logits.

const native = await probeNative({});
const skip = native.usable ? false : `skipped: native backend not usable here (${native.reason})`;

/** The same native kernels without the file hook: the loader falls back to reading through the JS heap. */
function withoutReadFile(k: ModelKernels): ModelKernels {
  return new Proxy(k, {
    get: (t, p) => {
      if (p === "readFile") return undefined;
      const v = Reflect.get(t, p, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

const IDS = [1, 7, 42, 9, 3, 77, 5];
const HEADS = [[false, true], [true, false]]; // layer 1 permuted: its attention weights take the JS path on both

for (const [dtype, shards, architecture] of [["bf16", 2, "LlamaForCausalLM"], ["f32", 1, "LlamaForCausalLM"], ["f16", 3, "Qwen2ForCausalLM"]] as const) {
  test(`native file read = JS read: ${architecture}, ${dtype} weights, ${shards} shard(s), identical logits, progress to the total`, { skip }, async () => {
    const m = writeTinyModel({ dtype, shards, layers: 2, heads: 4, kvHeads: 2, architecture });
    try {
      const seen: [number, number][] = [];
      const direct = await LlamaModel.load(m.dir, { backend: "native", kernels: "native", heads: HEADS, kvDtype: "f32", memory: 1 << 30, onProgress: (a, b) => seen.push([a, b]) });
      assert.ok(direct.kernels.readFile, "the native kernels have the file hook");
      const viaJs = await LlamaModel.load(m.dir, { backend: "native", kernels: withoutReadFile(await createModelKernels("native")), heads: HEADS, kvDtype: "f32" });
      try {
        const a = await direct.forward(IDS), b = await viaJs.forward(IDS);
        assert.deepEqual(a, b);
        assert.ok(a.some((x) => x !== 0));
        // Progress: increasing, ending at the bytes of every tensor the model reads.
        const total = [...(await openWeights(m.dir)).values()].reduce((s, t) => s + t.byteLength, 0);
        assert.ok(seen.length > 3);
        for (let i = 1; i < seen.length; i++) assert.ok(seen[i]![0] > seen[i - 1]![0]);
        assert.deepEqual(seen.at(-1), [total, total]);
        // One budget: weights and KV reported beside it.
        const mem = direct.memory();
        assert.equal(mem.budget, 1 << 30);
        assert.equal(mem.weights, viaJs.memory().weights);
        assert.ok(mem.weights > 0 && mem.kv > 0, JSON.stringify(mem));
      } finally {
        await direct.dispose();
        await viaJs.dispose();
      }
    } finally {
      m.dispose();
    }
  });
}

test("native load refuses a model over the memory budget before reading anything, naming the directory, bytes and largest tensor", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", layers: 2 });
  try {
    let progress = 0;
    await assert.rejects(LlamaModel.load(m.dir, { backend: "native", memory: 4096, maxContext: 64, onProgress: () => progress++ }), (e: unknown) => {
      assert.ok(e instanceof DuoError && e.code === "CAPACITY", String(e));
      assert.ok(e.message.startsWith(`${m.dir}: the model needs `), e.message);
      assert.match(e.message, /weights .* \+ KV budget .*, but 4096 bytes \(4\.00 KiB\) are available \(the memory option\); nothing was read/);
      assert.match(e.message, /largest tensor "(model\.embed_tokens\.weight|lm_head\.weight)" in .*model\.safetensors/);
      return true;
    });
    assert.equal(progress, 0);
    // The KV budget counts: weights alone fit in 1 MiB, a 1 Mi-token full KV does not.
    await assert.rejects(LlamaModel.load(m.dir, { backend: "native", memory: 1 << 20, maxContext: 1 << 20 }), /KV budget/);
  } finally {
    m.dispose();
  }
});

test("native load of a file truncated after its header was read: IO naming the file and the tensor", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", layers: 1 });
  const k = await createModelKernels("native", { memoryBudget: 1 << 30 });
  try {
    const cfg = parseConfig(JSON.parse(readFileSync(join(m.dir, "config.json"), "utf8")));
    const tensors = await openWeights(m.dir); // validated against the full file
    const file = join(m.dir, "model.safetensors");
    const last = [...tensors.values()].reduce((a, t) => (t.offset > a.offset ? t : a));
    truncateSync(file, last.offset + 1);
    await assert.rejects(loadWeights(tensors, cfg, k, HeadSchedule.full(cfg.numLayers, cfg.numKvHeads)), (e: unknown) => {
      assert.ok(e instanceof DuoError && e.code === "IO", String(e));
      assert.match(e.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: reading tensor "${last.name.replace(/\./g, "\\.")}"`));
      assert.match(e.message, /is truncated|ends at byte/);
      return true;
    });
  } finally {
    k.dispose();
    m.dispose();
  }
});

test("duo info --json reports the memory a native model's weights + KV may take", async () => {
  const { runCli } = await import("./helpers/cli.ts");
  const r = await runCli(["info", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const { memory } = JSON.parse(r.stdout) as { memory: { bytes: number; source: string } };
  assert.ok(Number.isSafeInteger(memory.bytes) && memory.bytes > 0, JSON.stringify(memory));
  assert.match(memory.source, /MemAvailable|os\.freemem/);
});

test("duo generate --backend native --memory: a model over the budget is refused before loading", { skip }, async () => {
  const { runCli } = await import("./helpers/cli.ts");
  const m = writeTinyModel({ dtype: "bf16", layers: 1 });
  try {
    const r = await runCli(["generate", "--model", m.dir, "--backend", "native", "--memory", "4KiB", "--prompt", "hi", "--max-tokens", "1"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /the model needs \d+ bytes .* but 4096 bytes \(4\.00 KiB\) are available \(the memory option\); nothing was read/);
    const ok = await runCli(["generate", "--model", m.dir, "--backend", "native", "--memory", "1GiB", "--prompt", "hi", "--max-tokens", "1"]);
    assert.equal(ok.code, 0, ok.stderr);
  } finally {
    m.dispose();
  }
});
