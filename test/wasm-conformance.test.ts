// The wasm backend against the reference backend (the specification in code): the same ops on the same data.
//   Tolerances, and the NaN poisoning of outputs before every run: test/helpers/conformance.ts (shared with native).
// Grid: f32/f16/bf16 × G = 1/4/8 × head dim 64/128/36; decode over many pages (split-KV, rowStart > 0) and over one
// big segment; prefill chunks against a sink+recent ring (scrambled Int32Array positions, rows written with skips) plus
// a staging segment, window null ("upstream") and {sink, recent}, with T < S, T = S + R, T = S + R + 1 and T across
// query-tile boundaries; causal prefill over pages; rows with no visible key; ops with no heads; the SIMD build
// in this thread and in two workers (both shards at once), and the scalar twins. Tiled (T64) buffers: the same grid,
// plus blocks off the tile boundary and tiled + token-major segments in one call, Inf/NaN in masked rows.
// Quantized KV (int8, int4; token-major records): the reference quantizes with src/quant.ts and reads the records back
// through it, the kernels quantize on append and dequantize block by block inside attention (wasm/src/quant.h); the
// append writes the very same bytes, so the same f32-vs-float64 tolerance applies. Grid: decode over pages / one
// segment / past a chunk, the ring in both modes, causal prefill, rows with no visible key, rows that stress the int4
// table; each on the default (relaxed) build, duo.wasm, the scalar twins and two workers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend } from "../src/backend/types.ts";
import { createWasmBackend, probeWasm } from "../src/backend/wasm.ts";
import { kvBufferBytes } from "../src/backend/layout.ts";
import { randomArray } from "./helpers/random.ts";
import { type Case, check, checkDequantExact, conform, COVERED, DTYPES, KVH, makeData, MAX_NMSE, QDTYPES, quantCases, R, runCase, S, store } from "./helpers/conformance.ts";

const probe = await probeWasm({});
const skip = probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})`;

test("decode over many pages (split-KV, rowStart > 0) and over one big segment, also past one 1024-row chunk: every dtype, G = 1/4/8, head dim 64/128/36", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const cases: Case[] = [];
  for (const dtype of DTYPES) for (const G of [1, 4, 8]) for (const D of [64, 128, 36]) {
    for (const store of ["pages", "big"] as const) cases.push({ dtype, G, D, ctx: 200, T: 1, store, window: null });
  }
  // one segment longer than a split-KV chunk (1024 rows): partial states merged inside the segment
  for (const dtype of DTYPES) cases.push({ dtype, G: 4, D: 64, ctx: 2100, T: 1, store: "big", window: null });
  const worst = await conform(cases, [{ name: "wasm", b, shard: 0 }]);
  await b.dispose();
  assert.ok(worst.nmse <= MAX_NMSE, `worst NMSE ${worst.nmse.toExponential(2)}, max abs err ${worst.maxAbs.toExponential(2)}, lse ${worst.lseMax.toExponential(2)}`);
});

test("prefill chunks against a sink+recent ring plus staging, upstream and window mode: T < S, T = S+R, T = S+R+1, across query tiles", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const cases: Case[] = [];
  for (const dtype of DTYPES) for (const G of [1, 4]) for (const T of [3, 12, 13, 33]) {
    for (const window of [null, { sink: S, recent: R }]) cases.push({ dtype, G, D: 64, ctx: 50, T, store: "ring", window });
  }
  // the first call of a sequence: an empty ring, window mode from the first token
  for (const dtype of DTYPES) cases.push({ dtype, G: 4, D: 128, ctx: 0, T: 40, store: "ring", window: { sink: S, recent: R } });
  // decode steps against the ring (S + R + 1 keys), G = 8 and an odd head dim
  for (const dtype of DTYPES) cases.push({ dtype, G: 8, D: 36, ctx: 70, T: 1, store: "ring", window: { sink: S, recent: R } });
  await conform(cases, [{ name: "wasm", b, shard: 0 }]);
  await b.dispose();
});

test("causal prefill over pages and over one segment, T across query-tile and block boundaries", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const cases: Case[] = [];
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 90, T: 37, store: "pages", window: null });
    cases.push({ dtype, G: 1, D: 64, ctx: 5, T: 70, store: "big", window: null });
    cases.push({ dtype, G: 8, D: 36, ctx: 60, T: 9, store: "pages", window: { sink: 3, recent: 20 } });
  }
  await conform(cases, [{ name: "wasm", b, shard: 0 }]);
  await b.dispose();
});

test("rows with no visible key get zeros and lse = -Infinity; ops with no heads or no rows do nothing", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const cases: Case[] = DTYPES.flatMap((dtype) => [
    { dtype, G: 4, D: 64, ctx: 20, T: 8, store: "future" as const, window: null },
    { dtype, G: 1, D: 36, ctx: 20, T: 5, store: "future" as const, window: { sink: 2, recent: 1 } },
  ]);
  await conform(cases, [{ name: "wasm", b, shard: 0 }]);
  // explicitly: the first three rows of a "future" case are exact zeros with lse -Infinity
  const c = cases[0]!, d = makeData(c, 7);
  const r = await runCase(b, 0, c, d);
  const Hq = KVH * c.G;
  for (let t = 0; t < 3; t++) {
    const qh = COVERED[0]! * c.G;
    assert.equal(r.lse[t * Hq + qh], -Infinity);
    assert.deepEqual([...r.out.subarray((t * Hq + qh) * c.D, (t * Hq + qh + 1) * c.D)], new Array(c.D).fill(0));
  }
  // no heads / no rows: nothing is written
  const k = b.alloc(0, 64 * 2 * 64 * 4), v = b.alloc(0, 64 * 2 * 64 * 4);
  const out = new Float32Array(2 * KVH * 64).fill(NaN);
  const base = { kind: "attend" as const, q: randomArray(2 * KVH * 64, 3), T: 2, numHeads: KVH, headDim: 64, group: 1, qPos0: 10, window: null, out };
  await b.run(0, [
    { ...base, qHeads: new Int32Array(0), kvSlots: new Int32Array(0), segments: [{ k, v, dtype: "f32", rowHeads: 2, rowStart: 0, rowCount: 64, positions: 0 }] },
    { kind: "append", dst: k, dtype: "f32", rowHeads: 0, headDim: 64, src: new Float32Array(0), srcHeads: 0, heads: new Int32Array(0), rows: new Int32Array(0) },
  ]);
  assert.ok(out.every(Number.isNaN), "an attend with no heads wrote output");
  await b.dispose();
});

test("two workers: both shards at once agree with the reference (decode over pages, prefill against the ring)", { skip }, async () => {
  const b = await createWasmBackend({ threads: 2 });
  assert.equal(b.shards, 2);
  const ref = new ReferenceBackend();
  const cases: Case[] = [
    { dtype: "bf16", G: 4, D: 128, ctx: 300, T: 1, store: "pages", window: null },
    { dtype: "f16", G: 4, D: 128, ctx: 60, T: 13, store: "ring", window: { sink: S, recent: R } },
    { dtype: "f32", G: 1, D: 64, ctx: 40, T: 12, store: "ring", window: null },
    { dtype: "bf16", G: 8, D: 36, ctx: 100, T: 5, store: "pages", window: { sink: S, recent: R } },
  ];
  const data = cases.map((c, i) => makeData(c, 500 + i));
  const want = await Promise.all(cases.map((c, i) => runCase(ref, 0, c, data[i]!)));
  // case i on shard i % 2, all at once
  const got = await Promise.all(cases.map((c, i) => runCase(b, i % 2, c, data[i]!)));
  cases.forEach((c, i) => check(`wasm shard ${i % 2}`, c, got[i]!, want[i]!));
  await b.dispose();
});

test("tiled (T64) buffers: the G = 4 bf16 and f16 decode fast path over pages and long segments, blocks off the tile boundary, tiled and token-major segments in one call; every other shape through the fallback", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const cases: Case[] = [];
  const T64 = "T64" as const;
  for (const dtype of DTYPES) for (const G of [1, 4, 8]) for (const D of [64, 128, 40]) {
    for (const store of ["pages", "big", "mixed"] as const) cases.push({ dtype, G, D, ctx: 200, T: 1, store, window: null, layout: T64 });
  }
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 2100, T: 1, store: "big", window: null, layout: T64 }); // past a 1024-row chunk
    cases.push({ dtype, G: 4, D: 64, ctx: 70, T: 1, store: "ring", window: { sink: S, recent: R }, layout: T64 });
    cases.push({ dtype, G: 4, D: 128, ctx: 90, T: 37, store: "pages", window: null, layout: T64 }); // prefill
    cases.push({ dtype, G: 1, D: 64, ctx: 5, T: 70, store: "big", window: null, layout: T64 });
    cases.push({ dtype, G: 4, D: 64, ctx: 20, T: 8, store: "future", window: null, layout: T64 });
  }
  await conform(cases, [{ name: "wasm", b, shard: 0 }]);
  await b.dispose();
});

test("duo.wasm (SIMD128 without relaxed SIMD: mul + add, where the default build fuses them) passes the decode, tiled and prefill grids", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0, kernels: "simd" });
  const cases: Case[] = [];
  for (const dtype of DTYPES) for (const layout of ["NHD", "T64"] as const) {
    for (const G of [1, 4]) cases.push({ dtype, G, D: 128, ctx: 300, T: 1, store: "pages", window: null, layout });
    cases.push({ dtype, G: 4, D: 64, ctx: 150, T: 1, store: "mixed", window: null, layout });
    cases.push({ dtype, G: 4, D: 64, ctx: 90, T: 37, store: "pages", window: null, layout });
    cases.push({ dtype, G: 4, D: 64, ctx: 50, T: 13, store: "ring", window: { sink: S, recent: R }, layout });
  }
  await conform(cases, [{ name: "wasm simd", b, shard: 0 }]);
  await b.dispose();
});

test("the scalar twins (duo-scalar.wasm) agree with the reference on the same kinds of ops", async () => {
  const b = await createWasmBackend({ threads: 0, kernels: "scalar" });
  const cases: Case[] = [];
  for (const dtype of DTYPES) {
    cases.push({ dtype, G: 4, D: 128, ctx: 150, T: 1, store: "pages", window: null });
    cases.push({ dtype, G: 1, D: 36, ctx: 50, T: 13, store: "ring", window: { sink: S, recent: R } });
    cases.push({ dtype, G: 8, D: 64, ctx: 20, T: 8, store: "future", window: null });
    cases.push({ dtype, G: 4, D: 64, ctx: 150, T: 1, store: "mixed", window: null, layout: "T64" });
    cases.push({ dtype, G: 4, D: 64, ctx: 150, T: 1, store: "pages", window: null, layout: "T64" });
    cases.push({ dtype, G: 1, D: 40, ctx: 50, T: 13, store: "big", window: null, layout: "T64" });
  }
  await conform(cases, [{ name: "wasm-scalar", b, shard: 0 }]);
  await b.dispose();
});

test("int8 and int4 caches: append writes the reference's record bytes, and attention matches it, on the default (relaxed), duo.wasm and scalar builds", { skip }, async () => {
  const builds = [
    { name: "wasm", b: await createWasmBackend({ threads: 0 }), shard: 0 },
    { name: "wasm simd", b: await createWasmBackend({ threads: 0, kernels: "simd" }), shard: 0 },
    { name: "wasm-scalar", b: await createWasmBackend({ threads: 0, kernels: "scalar" }), shard: 0 },
  ];
  const cases = quantCases();
  const worst = await conform(cases, builds);
  // the bytes themselves: one store of random and extreme rows, read back from every build
  const ref = new ReferenceBackend();
  for (const dtype of QDTYPES) {
    for (const extreme of [false, true]) {
      const c: Case = { dtype, G: 1, D: 44, ctx: 30, T: 1, store: "big", window: null, extreme }, d = makeData(c, 77);
      const bytes = kvBufferBytes("NHD", 31, 2, c.D, dtype);
      const read = async (b: Backend) => {
        const s = store(b, 0, c, d, 31, (p) => p);
        await b.run(0, s.ops);
        const got = [await b.read(0, s.k, 0, bytes), await b.read(0, s.v, 0, bytes)];
        b.free(0, s.k);
        b.free(0, s.v);
        return got;
      };
      const want = await read(ref);
      for (const { name, b } of builds) assert.deepEqual(await read(b), want, `${name} ${dtype}${extreme ? " extreme" : ""}: record bytes differ from src/quant.ts`);
    }
  }
  for (const { b } of builds) await b.dispose();
  assert.ok(worst.nmse <= MAX_NMSE, `worst NMSE ${worst.nmse.toExponential(2)}, max abs err ${worst.maxAbs.toExponential(2)}`);
});

test("int8 and int4 dequantization is exact in every build: a query that sees only key t returns value row t as src/quant.ts decodes it", { skip }, async () => {
  for (const kernels of ["auto", "simd", "scalar"] as const) {
    const b = await createWasmBackend({ threads: 0, kernels });
    await checkDequantExact(`wasm ${kernels}`, b);
    await b.dispose();
  }
});

test("int8 and int4 caches on two workers: both shards at once agree with the reference", { skip }, async () => {
  const b = await createWasmBackend({ threads: 2 });
  const ref = new ReferenceBackend();
  const cases: Case[] = [
    { dtype: "int4", G: 4, D: 128, ctx: 300, T: 1, store: "pages", window: null },
    { dtype: "int8", G: 4, D: 128, ctx: 60, T: 13, store: "ring", window: { sink: S, recent: R } },
    { dtype: "int8", G: 8, D: 36, ctx: 100, T: 5, store: "pages", window: null },
    { dtype: "int4", G: 1, D: 64, ctx: 40, T: 12, store: "ring", window: null },
  ];
  const data = cases.map((c, i) => makeData(c, 900 + i));
  const want = await Promise.all(cases.map((c, i) => runCase(ref, 0, c, data[i]!)));
  const got = await Promise.all(cases.map((c, i) => runCase(b, i % 2, c, data[i]!)));
  cases.forEach((c, i) => check(`wasm shard ${i % 2}`, c, got[i]!, want[i]!));
  await b.dispose();
});
