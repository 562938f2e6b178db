// The native backend (libduo.so: the wasm/src kernels compiled for this CPU, through ffi/) against the reference
// backend, on the conformance grid of test/helpers/conformance.ts (tolerances and NaN-poisoned outputs there):
// decode over pages and long segments, prefill against a ring with scrambled positions, causal prefill, rows with no
// visible key, tiled (T64) buffers, every dtype, G = 1/4/8, head dim 64/128/36/40; with 1 and 2 threads (heads split
// over the threads) and 3 threads (2 KV heads: each head's rows also split, partial states merged by log-sum-exp);
// then a smaller grid on every instruction set this CPU runs (avx512, avx2, sse41, scalar; neon on aarch64), G = 1 decode
// at several head dims included (the wide m1 kernels of AVX-512 and AVX2), and prefill tiles of 16+ query vectors (their
// 16- and 8-lane score and P.V kernels).
// int8 / int4 caches: the quantized grid of the wasm build (helpers/conformance.ts quantCases) with 1, 2 and 3 threads,
// and on every instruction set a small grid plus exact dequantization (each set has its own byte-lane mapping of the
// int4 table lookups: simd_x86.h, simd_neon.h).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createNativeBackend, probeNative } from "../src/backend/native.ts";
import { type Case, checkDequantExact, conform, DTYPES, MAX_NMSE, QDTYPES, quantCases, R, S } from "./helpers/conformance.ts";
import { onEachNativeIsa } from "./helpers/native-isa.ts";

const probe = await probeNative({});
const skip = probe.usable ? false : `skipped: native backend not usable here (${probe.reason})`;

const decodeCases = (): Case[] => {
  const cases: Case[] = [];
  for (const dtype of DTYPES) for (const G of [1, 4, 8]) for (const D of [64, 128, 36]) {
    for (const store of ["pages", "big"] as const) cases.push({ dtype, G, D, ctx: 200, T: 1, store, window: null });
  }
  for (const dtype of DTYPES) cases.push({ dtype, G: 4, D: 64, ctx: 2100, T: 1, store: "big", window: null });
  return cases;
};

const prefillCases = (): Case[] => {
  const cases: Case[] = [];
  for (const dtype of DTYPES) for (const G of [1, 4]) for (const T of [3, 12, 13, 33]) {
    for (const window of [null, { sink: S, recent: R }]) cases.push({ dtype, G, D: 64, ctx: 50, T, store: "ring", window });
  }
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 0, T: 40, store: "ring", window: { sink: S, recent: R } });
    cases.push({ dtype, G: 8, D: 36, ctx: 70, T: 1, store: "ring", window: { sink: S, recent: R } });
    cases.push({ dtype, G: 4, D: 128, ctx: 90, T: 37, store: "pages", window: null });
    cases.push({ dtype, G: 1, D: 64, ctx: 5, T: 70, store: "big", window: null });
    cases.push({ dtype, G: 8, D: 36, ctx: 60, T: 9, store: "pages", window: { sink: 3, recent: 20 } });
    cases.push({ dtype, G: 4, D: 64, ctx: 20, T: 8, store: "future", window: null });
    cases.push({ dtype, G: 1, D: 36, ctx: 20, T: 5, store: "future", window: { sink: 2, recent: 1 } });
  }
  return cases;
};

const tiledCases = (): Case[] => {
  const cases: Case[] = [];
  const T64 = "T64" as const;
  for (const dtype of DTYPES) for (const G of [1, 4, 8]) for (const D of [64, 128, 40]) {
    for (const store of ["pages", "big", "mixed"] as const) cases.push({ dtype, G, D, ctx: 200, T: 1, store, window: null, layout: T64 });
  }
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 2100, T: 1, store: "big", window: null, layout: T64 });
    cases.push({ dtype, G: 4, D: 128, ctx: 203, T: 1, store: "big", window: null, layout: T64 }); // a last tile of 11 rows
    cases.push({ dtype, G: 4, D: 64, ctx: 70, T: 1, store: "ring", window: { sink: S, recent: R }, layout: T64 });
    cases.push({ dtype, G: 4, D: 128, ctx: 90, T: 37, store: "pages", window: null, layout: T64 });
    cases.push({ dtype, G: 4, D: 64, ctx: 20, T: 8, store: "future", window: null, layout: T64 });
  }
  return cases;
};

/** The 1- and 2-thread backends side by side: the reference runs once per case for both. */
async function bothThreadCounts(cases: Case[]) {
  const bs = [await createNativeBackend({ threads: 1 }), await createNativeBackend({ threads: 2 })];
  const worst = await conform(cases, bs.map((b) => ({ name: `native ${b.threads}t`, b, shard: 0 })));
  for (const b of bs) await b.dispose();
  assert.ok(worst.nmse <= MAX_NMSE, `worst NMSE ${worst.nmse.toExponential(2)}`);
}

test("native, 1 and 2 threads: decode over pages and one big segment (past a 1024-row chunk), every dtype, G = 1/4/8, head dim 64/128/36", { skip }, async () => {
  await bothThreadCounts(decodeCases());
});

test("native, 1 and 2 threads: prefill against a ring plus staging (upstream and window), causal prefill, rows with no visible key", { skip }, async () => {
  await bothThreadCounts(prefillCases());
});

test("native, 1 and 2 threads: tiled (T64) buffers, the G = 4 fast path and every fallback", { skip }, async () => {
  await bothThreadCounts(tiledCases());
});

test("native, 1 and 2 threads: int8 and int4 caches (decode, ring prefill, causal prefill, no visible key, rows that stress the codecs)", { skip }, async () => {
  await bothThreadCounts(quantCases());
});

test("native, 3 threads over 2 KV heads: each head's rows split over threads (pages, one long segment, tiled, window ring), merged by log-sum-exp", { skip }, async () => {
  const b = await createNativeBackend({ threads: 3 });
  const cases: Case[] = [];
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 64, ctx: 2100, T: 1, store: "big", window: null });
    cases.push({ dtype, G: 1, D: 36, ctx: 2300, T: 1, store: "pages", window: null });
    cases.push({ dtype, G: 1, D: 64, ctx: 2300, T: 1, store: "pages", window: null }); // the wide m1 kernels, rows split
    cases.push({ dtype, G: 4, D: 128, ctx: 2100, T: 1, store: "big", window: null, layout: "T64" });
    cases.push({ dtype, G: 4, D: 64, ctx: 2200, T: 5, store: "pages", window: { sink: 3, recent: 1500 } });
  }
  for (const dtype of QDTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 2100, T: 1, store: "big", window: null });
    cases.push({ dtype, G: 4, D: 64, ctx: 2200, T: 5, store: "pages", window: { sink: 3, recent: 1500 } });
  }
  const worst = await conform(cases, [{ name: "native 3t", b, shard: 0 }]);
  await b.dispose();
  assert.ok(worst.nmse <= MAX_NMSE);
});

test("native: every instruction set this CPU runs passes a decode, tiled and prefill grid, int8 / int4 included, and dequantizes exactly", { skip }, async () => {
  const ran = await onEachNativeIsa(["avx512", "avx2", "sse41", "neon", "scalar"], async (isa) => {
    const b = await createNativeBackend({ threads: 2 });
    assert.equal(b.isa, isa);
    const cases: Case[] = [];
    for (const dtype of DTYPES) for (const layout of ["NHD", "T64"] as const) {
      cases.push({ dtype, G: 4, D: 128, ctx: 300, T: 1, store: "pages", window: null, layout });
      cases.push({ dtype, G: 1, D: 64, ctx: 150, T: 1, store: "mixed", window: null, layout });
      cases.push({ dtype, G: 4, D: 64, ctx: 50, T: 13, store: "ring", window: { sink: S, recent: R }, layout });
    }
    for (const dtype of DTYPES) {
      // m1 decode (G = 1, and G = 3 / 17: 3 and 17 query vectors per thread, one at a time): the wide kernels of
      // AVX-512 (D % 16) and AVX2 (D % 8), every vector of a block at once: head dims of whole chunks and of a last
      // half chunk (80, 48; 40: AVX2 only), a last block of 9 rows (ctx 200), pages, a window (partly visible blocks
      // off the block grid), a ring of scrambled positions
      for (const D of [64, 128, 80, 40]) cases.push({ dtype, G: 1, D, ctx: 200, T: 1, store: "pages", window: null });
      cases.push({ dtype, G: 1, D: 128, ctx: 150, T: 1, store: "big", window: { sink: S, recent: 70 } });
      cases.push({ dtype, G: 1, D: 64, ctx: 70, T: 1, store: "ring", window: { sink: S, recent: R } });
      for (const G of [3, 17]) cases.push({ dtype, G, D: 48, ctx: 100, T: 1, store: "pages", window: null });
      // prefill tiles of 16+ query vectors (G = 4: 8 rows, G = 1: 32 rows): the 16- and 8-lane score and P.V kernels
      // of AVX-512 and AVX2 over f32 rows, P.V ending on a 16-element chunk (D = 96: 64 + 2 x 16 on AVX-512) or an
      // 8-element one (D = 40: 2 x 16 + 8 on AVX2, where AVX-512's P.V keeps its 4-lane kernel)
      for (const D of [96, 40]) cases.push({ dtype, G: 4, D, ctx: 70, T: 16, store: "pages", window: null });
      cases.push({ dtype, G: 1, D: 96, ctx: 40, T: 33, store: "pages", window: null });
    }
    for (const dtype of QDTYPES) {
      cases.push({ dtype, G: 4, D: 128, ctx: 300, T: 1, store: "pages", window: null });
      for (const G of [1, 8]) cases.push({ dtype, G, D: 96, ctx: 150, T: 1, store: "big", window: null }); // fused decode, nq = 1 and two quads
      cases.push({ dtype, G: 4, D: 44, ctx: 150, T: 1, store: "big", window: null, extreme: true });
      cases.push({ dtype, G: 4, D: 64, ctx: 50, T: 13, store: "ring", window: { sink: S, recent: R } });
    }
    await conform(cases, [{ name: `native ${isa}`, b, shard: 0 }]);
    await checkDequantExact(`native ${isa}`, b);
    await b.dispose();
  });
  assert.ok(ran.includes("scalar"), `the scalar set always runs (ran: ${ran.join(", ")})`);
  assert.ok(ran.length >= 2, `at least one SIMD set ran (ran: ${ran.join(", ")})`);
});
