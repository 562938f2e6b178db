import assert from "node:assert/strict";
import { test } from "node:test";
import { criticalBytes, decodeBytesFor } from "../src/cli/bench/decode.ts";
import { decodeBytes, decodeFlopPerByte, gbps, limitGbps, madWidth, prefillFlop, prefillMadWidth, prefillPairs, streamingKeys } from "../src/cli/bench/roofline.ts";
import { resolveCase, spreadLayers, typicalLayer } from "../src/cli/bench/cases.ts";
import { kvBytes } from "../src/schedule/kv.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { shardHeads } from "../src/schedule/shard.ts";

test("bench roofline: decode intensity 2G/b FLOP per KV byte and the attainable GB/s", () => {
  assert.equal(decodeFlopPerByte(4, 2), 4, "Llama-3-8B (G = 4), bf16");
  assert.equal(decodeFlopPerByte(1, 2), 1, "Llama-2-7B (MHA), bf16");
  assert.equal(decodeFlopPerByte(4, 4), 2, "f32");
  // 40 GFLOP/s ÷ 4 FLOP/B = 10 GB/s < 27 GB/s: compute-bound.
  assert.equal(limitGbps({ readGBps: 27, gflops: 40 }, 4), 10);
  assert.equal(limitGbps({ readGBps: 27, gflops: 40 }, 1), 27);
  assert.equal(gbps(2e9, 100), 20);
});

test("bench roofline: the multiply-add width of the decode kernels that run, against the 4-lane ceiling kernel", () => {
  // wasm builds and the 4-lane native sets: the ceiling kernel's own width
  for (const k of ["relaxed", "simd", "native sse41", "native scalar", undefined]) assert.equal(madWidth(k, "int4", 4, 128), 1, String(k));
  // native AVX-512: fused int4 / int8 (G = 1 and 4), tiled bf16 at G = 4, wide m1 float kernels at G = 1: 16 lanes
  assert.equal(madWidth("native avx512", "int4", 4, 128), 4);
  assert.equal(madWidth("native avx512", "int8", 1, 128), 4);
  assert.equal(madWidth("native avx512", "bf16", 4, 128), 4);
  assert.equal(madWidth("native avx512", "f16", 1, 128), 4);
  assert.equal(madWidth("native avx512", "f16", 4, 128), 2, "tiled f16: 8 lanes");
  assert.equal(madWidth("native avx512", "f32", 4, 128), 1, "f32 at G = 4: the 4-lane kernels");
  assert.equal(madWidth("native avx512", "bf16", 8, 128), 1, "G = 8: the 4-lane kernels");
  assert.equal(madWidth("native avx2", "int4", 4, 128), 2);
  assert.equal(madWidth("native avx2", "bf16", 1, 128), 2);
  assert.equal(madWidth("native avx512", "int4", 4, 80), 1, "head dim not a multiple of 32");
  // prefill tiles: 16 lanes on AVX-512 (D % 16), 8 on AVX2 (D % 8), else and on wasm 4
  assert.equal(prefillMadWidth("native avx512", 128), 4);
  assert.equal(prefillMadWidth("native avx512", 40), 1);
  assert.equal(prefillMadWidth("native avx2", 40), 2);
  assert.equal(prefillMadWidth("native sse41", 128), 1);
  assert.equal(prefillMadWidth("relaxed", 128), 1);
});

test("bench roofline: decode bytes are the SPEC §4.4 KV formula (Llama-3-8B, 1M tokens, bf16: 137.4 GB full)", () => {
  const w = { sinkSize: 64, recentSize: 256 };
  assert.equal(decodeBytes({ retrievalHeads: 32 * 8, streamingHeads: 0, context: 1 << 20, headDim: 128, bytesPerElem: 2, ...w }), 137438953472);
  const mask = Array.from({ length: 4 }, (_, l) => Array.from({ length: 8 }, (_, h) => h <= l));
  const s = HeadSchedule.fromMask(mask);
  for (const T of [10, 320, 5000]) {
    assert.equal(
      decodeBytes({ retrievalHeads: s.retrievalHeads, streamingHeads: 32 - s.retrievalHeads, context: T, headDim: 128, bytesPerElem: 2, ...w }),
      kvBytes(s, { headDim: 128, context: T, ...w }),
    );
  }
});

/** Brute-force count of visible (query, key) pairs of a streaming head, from SPEC §3 directly. */
function bruteStreaming(N: number, C: number, mode: "upstream" | "window", S: number, R: number): number {
  let n = 0;
  for (let c = 0; c < N; c += C) {
    for (let t = c; t < Math.min(c + C, N); t++) {
      for (let p = 0; p <= t; p++) {
        const recent = mode === "window" ? p >= t - R : p >= c - R;
        if (p < S || recent) n++;
      }
    }
  }
  return n;
}

test("bench roofline: prefill pair counts match a brute-force count of SPEC §3 visibility", () => {
  for (const [N, C, S, R] of [[50, 7, 4, 8], [64, 64, 4, 8], [40, 16, 0, 5], [33, 5, 10, 0], [9, 3, 16, 16]] as const) {
    for (const mode of ["upstream", "window"] as const) {
      assert.equal(prefillPairs(N, C, "streaming", mode, { sinkSize: S, recentSize: R }), bruteStreaming(N, C, mode, S, R), `${mode} N=${N} C=${C} S=${S} R=${R}`);
    }
    assert.equal(prefillPairs(N, C, "retrieval", "window", { sinkSize: S, recentSize: R }), (N * (N + 1)) / 2);
  }
  // A single call on an empty cache is dense in upstream mode (SPEC §3.2).
  assert.equal(streamingKeys(100, 0, "upstream", { sinkSize: 4, recentSize: 8 }), 101);
  assert.equal(streamingKeys(100, 0, "window", { sinkSize: 4, recentSize: 8 }), 4 + 9);
});

test("bench roofline: prefill FLOP ratio Duo/full approaches the retrieval fraction in window mode at long contexts", () => {
  const o = { context: 8192, chunk: 1024, group: 4, headDim: 128, sinkSize: 128, recentSize: 256, mode: "window" as const };
  const full = prefillFlop({ ...o, retrieval: 8, streaming: 0 });
  assert.equal(full, 4 * 128 * 4 * 8 * (8192 * 8193) / 2);
  const duo = prefillFlop({ ...o, retrieval: 4, streaming: 4 });
  const ratio = duo / full;
  assert.ok(ratio > 0.5 && ratio < 0.6, `window ratio ${ratio} in (r, r + 0.1)`);
  const up = prefillFlop({ ...o, mode: "upstream", retrieval: 4, streaming: 4 }) / full;
  assert.ok(up > ratio, "upstream mode also attends within each chunk");
});

test("bench cases: layer subsets, the typical layer, and bytes for a subset vs the whole model", async () => {
  assert.deepEqual(spreadLayers(32, 4), [4, 12, 20, 28]);
  assert.deepEqual(spreadLayers(32, 40), Array.from({ length: 32 }, (_, l) => l));
  const s = HeadSchedule.fromMask([[true, false], [true, true], [false, false], [true, false], [false, false]]);
  assert.equal(typicalLayer(s), 3, "counts 1 are nearest the mean 0.8; of layers 0 and 3 the one nearer the middle");
  const c = await resolveCase("llama-3-8b", undefined, 0.5);
  const all = decodeBytesFor(c, "full", "bf16", 4096);
  assert.equal(decodeBytesFor(c, "full", "bf16", 4096, spreadLayers(32, 8)) * 4, all, "full attention: every layer reads the same");
  assert.ok(decodeBytesFor(c, "duo", "bf16", 4096) < all);
});

test("bench roofline: critical-path bytes take each layer's busiest shard", async () => {
  const s = HeadSchedule.fromMask([[true, false, false, false], [true, true, true, false]]);
  const plan = shardHeads(s, 2);
  // Retrieval pages are striped: each shard reads half of every retrieval head. Layer 0: 1 retrieval head, streaming
  // heads 1, 2, 3 dealt 2/1; layer 1: 3 retrieval heads, the one streaming head to the shard with fewer so far.
  const c = { ...(await resolveCase("llama-3-8b", undefined, 0.5)), sinkSize: 2, recentSize: 8 };
  const perHeadToken = 2 * 128 * 2;
  assert.equal(criticalBytes(plan, c, "bf16", 1000), (500 + 2 * 10 + 1500 + 10) * perHeadToken);
  assert.equal(criticalBytes(shardHeads(s, 1), c, "bf16", 1000), (1000 + 30 + 3000 + 10) * perHeadToken, "one shard: everything");
});
