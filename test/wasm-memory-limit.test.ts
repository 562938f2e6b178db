// memoryLimit caps what each wasm shard may hold: a CAPACITY error names it, memory() reports it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createWasmBackend } from "../src/backend/wasm.ts";
import { DuoError } from "../src/errors.ts";
import { DuoAttention } from "../src/engine/duo.ts";

test("wasm memoryLimit: allocations past it fail with CAPACITY naming the limit; the engine keeps its cache", async () => {
  const be = await createWasmBackend({ threads: 0, memoryLimit: 1 << 20 });
  try {
    assert.equal(be.memory(0).capacity, 1 << 20);
    const a = be.alloc(0, 600_000);
    assert.throws(() => be.alloc(0, 600_000), (e) => e instanceof DuoError && e.code === "CAPACITY" && /memoryLimit/.test(e.message));
    be.free(0, a);
    be.free(0, be.alloc(0, 600_000)); // the freed bytes count again
    // Through the engine: a context that does not fit is refused and the sequence stays usable.
    const duo = await DuoAttention.create({ shape: { numLayers: 1, numHeads: 2, numKvHeads: 2, headDim: 64 }, heads: [[true, false]], kvDtype: "f32", backend: be, pageSize: 256, sinkSize: 4, recentSize: 8 });
    const seq = duo.sequence();
    const kv = (T: number) => new Float32Array(T * 2 * 64).fill(0.25);
    await seq.fill(0, kv(1024), kv(1024)); // 4 pages of 64 KiB each for K and V: 512 KiB
    await assert.rejects(seq.fill(0, kv(2048), kv(2048)), (e) => e instanceof DuoError && e.code === "CAPACITY");
    assert.equal(seq.length(0), 1024);
    const out = await seq.attend(0, new Float32Array(2 * 64).fill(0.5), kv(1), kv(1));
    assert.ok(out.every((x) => Math.abs(x - 0.25) < 1e-6), "attention over equal values returns that value");
    await duo.dispose();
  } finally {
    await be.dispose();
  }
  await assert.rejects(createWasmBackend({ threads: 0, memoryLimit: 0 }), (e) => e instanceof DuoError && /memoryLimit must be an integer >= 1/.test(e.message));
});
