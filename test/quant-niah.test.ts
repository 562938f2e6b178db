// Needle retrieval through the inference engine with quantized KV: the planted-circuit model
// (test/helpers/planted-model.ts: four hand-set retrieval heads copy a key's value from anywhere in the context),
// deployed with DuoAttention (its four retrieval heads keep the full cache, the other 12 stream through 4 sinks + 16
// recent tokens), answers every query exactly with an f32 cache — and must keep that score with int8 and int4 caches.
import { test } from "node:test";
import assert from "node:assert/strict";
import { probeWasm } from "../src/backend/wasm.ts";
import type { KvDtype } from "../src/dtype.ts";
import { engineExactMatch, recallSample, TRUE_RETRIEVAL, writePlantedModel } from "./helpers/planted-model.ts";

const wasmUsable = (await probeWasm({})).usable;
const samples = [0, 1, 2, 3].map((i) => recallSample(700 + i, 128));

/** Fraction of queries answered exactly: prompt prefilled in chunks of 16, each query then decoded. */
async function exactMatch(dir: string, kvDtype: KvDtype, backend: "reference" | "wasm"): Promise<number> {
  const heads = [0, 1].map((l) => Array.from({ length: 8 }, (_, h) => TRUE_RETRIEVAL.includes(l * 8 + h)));
  return await engineExactMatch(dir, samples, { backend, heads, sinkSize: 4, recentSize: 16, prefillChunk: 16, kvDtype, threads: 0 });
}

test("planted retrieval model with DuoAttention: exact match 1 with f32, int8 and int4 KV, on reference and wasm", async () => {
  const planted = writePlantedModel();
  try {
    for (const backend of ["reference", ...(wasmUsable ? ["wasm" as const] : [])] as const) {
      for (const kvDtype of ["f32", "int8", "int4"] as const) {
        assert.equal(await exactMatch(planted.dir, kvDtype, backend), 1, `${backend} ${kvDtype}`);
      }
    }
  } finally {
    planted.dispose();
  }
});
