import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { probeNative } from "../src/backend/native.ts";
import { DuoError } from "../src/errors.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModelKernels, type ModelKernels } from "../src/model/kernels.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { openWeights } from "../src/model/safetensors.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { loadWeights } from "../src/model/weights.ts";
import { writeRandomModel } from "../src/model/write.ts";
import { relError, writeTinyModel } from "./helpers/tiny-model.ts";

// The native load path: kernels "native" read every matrix straight from the safetensors file into the library's
// memory (duo_read_file, native/src/file.c); the JS path (streamTensor + write) stays for the other kernels. Both must
// give the same bytes, hence bit-identical logits.

const native = await probeNative({});
const skip = native.usable ? false : `skipped: native backend not usable here (${native.reason})`;

/** The same native kernels without the file hooks (read and map): the loader falls back to reading through the JS heap. */
function withoutReadFile(k: ModelKernels): ModelKernels {
  return new Proxy(k, {
    get: (t, p) => {
      if (p === "readFile" || p === "mapFile") return undefined;
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
      // mmap false: every matrix read by the library (mapped ones: test/model-native-mmap.test.ts)
      const direct = await LlamaModel.load(m.dir, { backend: "native", kernels: "native", heads: HEADS, kvDtype: "f32", memory: 1 << 30, mmap: false, onProgress: (a, b) => seen.push([a, b]) });
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

// GGUF on native: matrices read straight from the file in pieces of whole blocks; a permuted layer's q/k/v row blocks
// and o column blocks move as raw bytes when o's blocks of G·D columns are whole quantization blocks (qwen2: rows not
// interleaved by llama.cpp; G·D = 32 for q8_0 / q4_0, 256 for q4_k), else through the JS heap (llama: interleaved
// q/k rows). q8_0 / q4_0 bytes are the same either way (the JS path re-quantizes to the same blocks); the JS path
// holds a permuted q4_k matrix decoded as f32, so only the matmul's summation order differs there.
const QWEN = (hidden: number) => ({
  architectures: ["Qwen2ForCausalLM"], hidden_size: hidden, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 300, rope_theta: 1000000, max_position_embeddings: 4096, tie_word_embeddings: true,
});
for (const [dtype, shape] of [["q8_0", QWEN(128)], ["q4_0", QWEN(128)], ["q4_k", QWEN(512)], ["q8_0", "tiny"]] as const) {
  const arch = typeof shape === "string" ? "llama" : "qwen2";
  test(`native GGUF load, ${arch} ${dtype}, heads permuted: file reads = JS reads`, { skip }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "duo-native-gguf-"));
    try {
      const w = await writeRandomModel(dir, { shape, dtype, format: "gguf", seed: 5 });
      const opts = { backend: "native" as const, heads: HEADS, kvDtype: "f32" as const, sinkSize: 2, recentSize: 4 };
      const direct = await LlamaModel.load(w.gguf!, { ...opts, kernels: "native" });
      const viaJs = await LlamaModel.load(w.gguf!, { ...opts, kernels: withoutReadFile(await createModelKernels("native")) });
      try {
        const a = await direct.forward(IDS), b = await viaJs.forward(IDS);
        assert.ok(a.some((x) => x !== 0));
        if (dtype === "q4_k") {
          const { rel, at } = relError(a, b);
          assert.ok(rel <= 1e-5, `logit ${at}: file ${a[at]} JS ${b[at]} (rel ${rel.toExponential(2)})`);
        } else assert.deepEqual(a, b);
      } finally {
        await direct.dispose();
        await viaJs.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// readFile preads a range of a matrix on every thread (native/src/file.c), the bytes as the file stores them (16-bit
// rows too: the native kernels read them in file order). Whole, in row blocks out of order, or in pieces that split
// rows, the kernels must see what write() gives: embed() widens every row back to f32 in element order.
test("native readFile of a 16-bit matrix whole (2 threads), in row blocks or in pieces of rows = write()", { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-native-pack-"));
  const k = await createModelKernels("native", { threads: 2, memoryBudget: 1 << 30 });
  try {
    // [2100, 4101]: 17.2 MB, so two 8 MiB parts; 4101 columns leave a row tail of 5 (read one by one by the kernels)
    const rows = 2100, cols = 4101, head = 24;
    const bits = new Uint16Array(rows * cols);
    for (let i = 0; i < bits.length; i++) bits[i] = (Math.imul(i, 2654435761) >>> 16) & 0x7f7f; // finite in f16 and bf16
    const file = join(dir, "w.bin");
    writeFileSync(file, Buffer.concat([Buffer.alloc(head, 7), Buffer.from(bits.buffer)]));
    const ids = Int32Array.from({ length: rows }, (_, i) => i);
    for (const dtype of ["bf16", "f16"] as const) {
      const want = k.matrix(rows, cols, dtype);
      k.write(want, 0, new Uint8Array(bits.buffer));
      const whole = k.matrix(rows, cols, dtype);
      k.readFile!(whole, 0, file, head, bits.byteLength);
      const blocks = k.matrix(rows, cols, dtype); // row blocks in reverse order, as a head permutation reads them
      const rb = 700 * cols * 2;
      for (let b = 2; b >= 0; b--) k.readFile!(blocks, b * rb, file, head + b * rb, rb);
      const pieces = k.matrix(rows, cols, dtype); // pieces that split rows
      const half = (bits.byteLength / 2) & ~1;
      k.readFile!(pieces, 0, file, head, half);
      k.readFile!(pieces, half, file, head + half, bits.byteLength - half);
      const y = (m: typeof want) => {
        const out = new Float32Array(rows * cols);
        k.embed(out, ids, m);
        return out;
      };
      const ref = y(want);
      assert.ok(ref.some((v) => v !== 0));
      for (const [name, m] of [["whole", whole], ["row blocks", blocks], ["pieces", pieces]] as const) {
        const got = y(m);
        const bad = got.findIndex((v, i) => !Object.is(v, ref[i]));
        assert.equal(bad, -1, `${dtype} ${name}: element ${bad} is ${got[bad]}, write() gives ${ref[bad]}`);
      }
      // a read past the matrix's end is refused and writes nothing
      assert.throws(() => k.readFile!(pieces, 2, file, head, bits.byteLength), /overruns/);
    }
  } finally {
    k.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("backend auto, kernels auto: where the native library loads, the model math runs on it too, with the logits of an explicit native load", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", layers: 2, heads: 4, kvHeads: 2 });
  try {
    const auto = await LlamaModel.load(m.dir, { kvDtype: "f32" });
    const explicit = await LlamaModel.load(m.dir, { backend: "native", kvDtype: "f32" });
    const wasm = await LlamaModel.load(m.dir, { backend: "wasm", kvDtype: "f32", threads: 0 });
    try {
      assert.equal(auto.kernels.name, "native");
      assert.equal(wasm.kernels.name, "wasm", "an explicit non-native backend keeps the model math off native");
      assert.deepEqual(await auto.forward(IDS), await explicit.forward(IDS));
    } finally {
      await Promise.all([auto.dispose(), explicit.dispose(), wasm.dispose()]);
    }
  } finally {
    m.dispose();
  }
});

test("memory(): the KV of every live session in one budget with the weights", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", layers: 2, heads: 4, kvHeads: 2 });
  try {
    const model = await LlamaModel.load(m.dir, { backend: "native", kvDtype: "f32", memory: 1 << 30 });
    try {
      await model.forward(IDS);
      const one = model.memory();
      assert.equal(one.kv, model.kvBytes().allocated);
      const s = model.session();
      await s.forward(IDS.slice(0, 3));
      const two = model.memory();
      assert.equal(two.kv, one.kv + s.kvBytes().allocated);
      assert.ok(two.kv > one.kv);
      s.dispose();
      assert.equal(model.memory().kv, one.kv);
      assert.equal(two.weights, one.weights);
    } finally {
      await model.dispose();
    }
  } finally {
    m.dispose();
  }
});

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

test("native copied load (mmap false) of a file truncated after its header was read: IO naming the file and the tensor", { skip }, async () => {
  const m = writeTinyModel({ dtype: "bf16", layers: 1 });
  const k = await createModelKernels("native", { memoryBudget: 1 << 30 });
  try {
    const cfg = parseConfig(JSON.parse(readFileSync(join(m.dir, "config.json"), "utf8")));
    const tensors = await openWeights(m.dir); // validated against the full file
    const file = join(m.dir, "model.safetensors");
    const last = [...tensors.values()].reduce((a, t) => (t.offset > a.offset ? t : a));
    truncateSync(file, last.offset + 1);
    await assert.rejects(loadWeights(tensors, cfg, k, HeadSchedule.full(cfg.numLayers, cfg.numKvHeads), undefined, false), (e: unknown) => {
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
