import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadNativeLibrary } from "../ffi/load.ts";
import { STATUS } from "../src/backend/abi.ts";
import { probeNative } from "../src/backend/native.ts";
import { f32ToBf16Bits } from "../src/dtype.ts";
import { DuoError } from "../src/errors.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModelKernels } from "../src/model/kernels.ts";
import type { NativeKernels } from "../src/model/kernels-native.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { openWeights } from "../src/model/safetensors.ts";
import { loadWeights } from "../src/model/weights.ts";
import { writeRandomModel } from "../src/model/write.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

// Mapped weights (native/src/map.c): the native kernels use every tensor whose rows are in file order (f32, f16 and
// bf16 in file order too, llama.cpp's blocks) as a read-only view of the mapped checkpoint instead of a copy. The
// kernels run on the same bytes either way, so the logits must be identical.

const native = await probeNative({});
const skip = native.usable ? false : `skipped: native backend not usable here (${native.reason})`;
const procMaps = existsSync("/proc/self/maps");
/** Whether this process has `file` mapped (Linux: /proc/self/maps names every mapped file). */
const isMapped = (file: string) => readFileSync("/proc/self/maps", "utf8").includes(file);

const IDS = [1, 7, 42, 9, 3, 77, 5];
const HEADS = [[false, true], [true, false]]; // layer 1 permuted: its q/k/v/o are copies (reordered), the rest mapped

const QWEN = {
  architectures: ["Qwen2ForCausalLM"], hidden_size: 512, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 300, rope_theta: 1000000, max_position_embeddings: 4096, tie_word_embeddings: true,
};
const MODELS = [
  ["f32", "safetensors", "tiny"], ["bf16", "safetensors", "tiny"], ["f16", "safetensors", QWEN], ["bf16", "gguf", "tiny"], ["f16", "gguf", "tiny"],
  ["q8_0", "gguf", "tiny"], ["q4_0", "gguf", "tiny"], ["q4_k", "gguf", QWEN],
] as const;

for (const [dtype, format, shape] of MODELS) {
  test(`mapped = copied: ${format} ${dtype}, identical logits, same weight bytes, unmapped on dispose`, { skip }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "duo-mmap-"));
    try {
      const w = await writeRandomModel(dir, { shape, dtype, format, seed: 3 });
      const path = format === "gguf" ? w.gguf! : dir;
      const file = format === "gguf" ? w.gguf! : join(dir, "model.safetensors");
      const opts = { backend: "native" as const, kernels: "native" as const, heads: HEADS, kvDtype: "f32" as const, sinkSize: 2, recentSize: 4 };
      await assert.rejects(LlamaModel.load(path, { ...opts, mmap: "no" as unknown as boolean }), /option mmap must be true or false, got "no"/);
      const mapped = await LlamaModel.load(path, opts);
      const copied = await LlamaModel.load(path, { ...opts, mmap: false });
      try {
        if (procMaps) assert.ok(isMapped(file), "the checkpoint is mapped while the model lives");
        const km = (mapped.kernels as NativeKernels).memory(), kc = (copied.kernels as NativeKernels).memory();
        assert.ok(km.mapped > 0 && km.mapped < km.weights, JSON.stringify(km));
        assert.equal(kc.mapped, 0);
        assert.equal(km.weights, kc.weights);
        const a = await mapped.forward(IDS), b = await copied.forward(IDS);
        assert.ok(a.some((x) => x !== 0));
        assert.deepEqual(a, b);
      } finally {
        await copied.dispose();
        await mapped.dispose();
      }
      if (procMaps) assert.ok(!isMapped(file), "dispose unmaps the checkpoint");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const dtype of ["f32", "bf16", "f16"] as const) test(`mapped = copied over 3 ${dtype} safetensors shards: each file mapped once while the model lives, all unmapped on dispose`, { skip }, async () => {
  const m = writeTinyModel({ dtype, shards: 3, layers: 2, heads: 4, kvHeads: 2 });
  try {
    const files = readdirSync(m.dir).filter((f) => f.endsWith(".safetensors")).map((f) => join(m.dir, f));
    assert.equal(files.length, 3);
    const opts = { backend: "native" as const, kernels: "native" as const, heads: HEADS, kvDtype: "f32" as const };
    const mapped = await LlamaModel.load(m.dir, opts), copied = await LlamaModel.load(m.dir, { ...opts, mmap: false });
    try {
      if (procMaps) for (const f of files) assert.ok(isMapped(f), f);
      assert.ok((mapped.kernels as NativeKernels).memory().mapped > 0);
      assert.deepEqual(await mapped.forward(IDS), await copied.forward(IDS));
    } finally {
      await copied.dispose();
      await mapped.dispose();
    }
    if (procMaps) for (const f of files) assert.ok(!isMapped(f), f);
  } finally {
    m.dispose();
  }
});

for (const dtype of ["f32", "bf16"] as const) test(`a ${dtype} file truncated after its header was read is refused at load: IO naming the file and the tensor, no mapping left`, { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-mmap-trunc-"));
  const k = await createModelKernels("native", { memoryBudget: 1 << 30 });
  try {
    await writeRandomModel(dir, { shape: "tiny", dtype, format: "safetensors" });
    const cfg = parseConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")));
    const tensors = await openWeights(dir); // validated against the whole file
    const file = join(dir, "model.safetensors");
    const last = [...tensors.values()].filter((t) => t.shape.length === 2).reduce((a, t) => (t.offset > a.offset ? t : a));
    truncateSync(file, last.offset + 1);
    await assert.rejects(loadWeights(tensors, cfg, k, HeadSchedule.full(cfg.numLayers, cfg.numKvHeads)), (e: unknown) => {
      assert.ok(e instanceof DuoError && e.code === "IO", String(e));
      assert.ok(e.message.startsWith(`${file}: mapping tensor "${last.name}"`), e.message);
      assert.match(e.message, /truncated/);
      return true;
    });
  } finally {
    k.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  if (procMaps) assert.ok(!isMapped(join(dir, "model.safetensors")));
});

test("C ABI: a view of a mapped file is a live read-only block at any alignment; out-of-file, truncated and written views are refused", { skip }, async () => {
  const { lib } = await loadNativeLibrary();
  const dir = mkdtempSync(join(tmpdir(), "duo-mmap-abi-"));
  const file = join(dir, "w.bin"), path = new TextEncoder().encode(`${file}\0`);
  const data = Uint8Array.from({ length: 3 * 4096 + 100 }, (_, i) => (i * 7 + 3) & 255);
  writeFileSync(file, data);
  const out = new Uint32Array(4), addr = new Uint32Array(2);
  const u64 = (a: Uint32Array, i = 0) => a[i]! + a[i + 1]! * 2 ** 32;
  try {
    assert.equal(lib.duo_map_file(new TextEncoder().encode(`${join(dir, "none")}\0`), out), STATUS.E_ARG);
    assert.match(lib.duo_last_error(), /cannot open .*none/);
    assert.equal(lib.duo_map_file(path, out), STATUS.OK);
    const map = u64(out), size = u64(out, 2);
    assert.equal(size, data.length);
    const memBefore = new Float64Array(2);
    lib.duo_memory(memBefore);

    // A view at an odd offset reads back the file's bytes; it is not counted in duo_memory; writes are refused.
    assert.equal(lib.duo_map_view(map, 4093, 4099, addr), STATUS.OK);
    const view = u64(addr);
    assert.equal(view, map + 4093);
    const got = new Uint8Array(4099);
    assert.equal(lib.duo_read(view, 0, got.length, got), STATUS.OK);
    assert.deepEqual(got, data.subarray(4093, 4093 + 4099));
    const mem = new Float64Array(2);
    lib.duo_memory(mem);
    assert.deepEqual(mem, memBefore);
    assert.equal(lib.duo_write(view, 0, 4, new Uint8Array(4)), STATUS.E_HANDLE);
    assert.match(lib.duo_last_error(), /read-only view of a mapped file/);
    assert.equal(lib.duo_read_file(path, 0, 4, view, 0), STATUS.E_HANDLE);
    assert.equal(lib.duo_map_view(map, 4093, 8, addr), STATUS.E_ARG, "a second block at the same address");

    // Outside the file: refused naming the path.
    assert.equal(lib.duo_map_view(map, data.length - 10, 11, addr), STATUS.E_ARG);
    assert.ok(lib.duo_last_error().includes(file), lib.duo_last_error());
    assert.equal(lib.duo_map_view(map, 0, 0, addr), STATUS.E_ARG);

    // The handle dropped while a view lives: the view still reads; no new views; a second unmap is refused.
    assert.equal(lib.duo_unmap(map), STATUS.OK);
    assert.equal(lib.duo_read(view, 0, got.length, got), STATUS.OK);
    assert.deepEqual(got, data.subarray(4093, 4093 + 4099));
    assert.equal(lib.duo_map_view(map, 0, 8, addr), STATUS.E_HANDLE);
    assert.equal(lib.duo_unmap(map), STATUS.E_HANDLE);
    if (procMaps) assert.ok(isMapped(file));
    assert.equal(lib.duo_free(view), STATUS.OK);
    if (procMaps) assert.ok(!isMapped(file), "the last view freed unmaps the file");
    assert.equal(lib.duo_free(view), STATUS.E_HANDLE);

    // Many views (the block table grows past its first 1024 slots with views in it), each its own live block.
    assert.equal(lib.duo_map_file(path, out), STATUS.OK);
    const views: number[] = [];
    for (let i = 0; i < 1500; i++) {
      assert.equal(lib.duo_map_view(u64(out), i, 1, addr), STATUS.OK);
      views.push(u64(addr));
    }
    const one = new Uint8Array(1);
    for (const i of [0, 777, 1499]) {
      assert.equal(lib.duo_read(views[i]!, 0, 1, one), STATUS.OK);
      assert.equal(one[0], data[i]);
    }
    assert.equal(lib.duo_unmap(u64(out)), STATUS.OK);
    for (const v of views) assert.equal(lib.duo_free(v), STATUS.OK);
    if (procMaps) assert.ok(!isMapped(file));

    // Truncated after mapping, before the view's pages were read: the populate fails (no SIGBUS), naming the path.
    assert.equal(lib.duo_map_file(path, out), STATUS.OK);
    truncateSync(file, 4096);
    assert.equal(lib.duo_map_view(u64(out), 4096, 8192, addr), STATUS.E_ARG);
    assert.match(lib.duo_last_error(), /ends inside bytes \[4096, 12288\) \(the file was truncated after it was mapped\)/);
    assert.ok(lib.duo_last_error().includes(file));
    assert.equal(lib.duo_unmap(u64(out)), STATUS.OK);
    if (procMaps) assert.ok(!isMapped(file));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("C ABI: the model kernels and the backward kernels take a view at the file's alignment as they take a copy", { skip }, async () => {
  const { lib } = await loadNativeLibrary();
  const dir = mkdtempSync(join(tmpdir(), "duo-mmap-kernels-"));
  const file = join(dir, "w.bin");
  // An f32 [nout, nin] matrix at byte 12 (4-byte aligned only, as safetensors may place it), a Q8_0 one at byte 7
  // after it (no alignment at all): random bytes for Q8_0 with its f16 scales kept small and finite; then a bf16 one
  // (2-byte aligned only) in file order.
  const nout = 6, nin = 64, T = 3, f32Bytes = nout * nin * 4, q8Bytes = nout * (nin / 32) * 34, bf16Bytes = nout * nin * 2;
  const w = Float32Array.from({ length: nout * nin }, (_, i) => Math.sin(i * 0.37));
  const q8 = Uint8Array.from({ length: q8Bytes }, (_, i) => (i * 31 + 5) & 255);
  for (let b = 0; b < q8Bytes; b += 34) q8.set([0x00, 0x2c], b); // f16 0.0625
  const f32At = 12, q8At = f32At + f32Bytes + 7, bf16At = q8At + q8Bytes + 3;
  assert.equal(bf16At % 4, 2);
  const bytes = new Uint8Array(bf16At + bf16Bytes);
  bytes.set(new Uint8Array(w.buffer), f32At);
  bytes.set(q8, q8At);
  bytes.set(new Uint8Array(Uint16Array.from(w, f32ToBf16Bits).buffer), bf16At);
  writeFileSync(file, bytes);
  const out = new Uint32Array(4), addr = new Uint32Array(2);
  const u64 = (a: Uint32Array, i = 0) => a[i]! + a[i + 1]! * 2 ** 32;
  const copyOf = (src: Uint8Array) => {
    assert.equal(lib.duo_alloc(src.length, addr), STATUS.OK);
    const block = u64(addr);
    assert.equal(lib.duo_write(block, 0, src.length, src), STATUS.OK);
    return block;
  };
  const x = Float32Array.from({ length: T * nin }, (_, i) => Math.cos(i * 0.11)), dy = Float32Array.from({ length: T * nout }, (_, i) => 1 - i * 0.1);
  try {
    assert.equal(lib.duo_map_file(new TextEncoder().encode(`${file}\0`), out), STATUS.OK);
    const map = u64(out);
    for (const [dtype, at, n] of [[0, f32At, f32Bytes], [3, q8At, q8Bytes], [2, bf16At, bf16Bytes]] as const) {
      assert.equal(lib.duo_map_view(map, at, n, addr), STATUS.OK);
      const view = u64(addr), copy = copyOf(bytes.subarray(at, at + n));
      const ya = new Float32Array(T * nout), yb = new Float32Array(T * nout);
      assert.equal(lib.duo_model_matmul(ya, x, view, null, T, nin, nout, dtype), STATUS.OK, lib.duo_last_error());
      assert.equal(lib.duo_model_matmul(yb, x, copy, null, T, nin, nout, dtype), STATUS.OK);
      assert.ok(ya.some((v) => v !== 0));
      assert.deepEqual(ya, yb);
      const ea = new Float32Array(2 * nin), eb = new Float32Array(2 * nin), ids = Int32Array.of(5, 1);
      assert.equal(lib.duo_model_embed(ea, ids, view, 2, nout, nin, dtype), STATUS.OK, lib.duo_last_error());
      assert.equal(lib.duo_model_embed(eb, ids, copy, 2, nout, nin, dtype), STATUS.OK);
      assert.deepEqual(ea, eb);
      if (dtype !== 3) { // the backward kernels take f32 / 16-bit weights
        const da = new Float32Array(T * nin), db = new Float32Array(T * nin);
        assert.equal(lib.duo_bwd_linear(da, dy, view, T, nin, nout, dtype, 0), STATUS.OK, lib.duo_last_error());
        assert.equal(lib.duo_bwd_linear(db, dy, copy, T, nin, nout, dtype, 0), STATUS.OK);
        assert.ok(da.some((v) => v !== 0));
        assert.deepEqual(da, db);
      }
      assert.equal(lib.duo_free(view), STATUS.OK);
      assert.equal(lib.duo_free(copy), STATUS.OK);
    }
    assert.equal(lib.duo_unmap(map), STATUS.OK);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
