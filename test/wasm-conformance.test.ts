// The wasm backend against the reference backend (the specification in code): the same ops on the same data.
//   attend: per element |a − b| ≤ 1e-5 + 1e-4·|b| and NMSE ≤ 1e-10 over the covered outputs, lse the same per element
//     rule. For f16/bf16 KV the reference reads the same rounded buffers, so the only difference left is f32 vs float64
//     arithmetic and the same tolerance applies to every dtype.
//   Outputs and lse are poisoned with NaN before every run: covered query heads must all be written, the query heads of
//     the uncovered KV head must still be NaN afterwards.
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
import type { AttendOp, Backend, Op, Segment } from "../src/backend/types.ts";
import { createWasmBackend, probeWasm } from "../src/backend/wasm.ts";
import { type KvDtype } from "../src/dtype.ts";
import { kvBufferBytes, type KvLayout, TILE_ROWS } from "../src/backend/layout.ts";
import { roundTrip } from "../src/quant.ts";
import { randomArray, rng } from "./helpers/random.ts";

const probe = await probeWasm({});
const skip = probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})`;

const S = 4, R = 8, PAGE = 64, KVH = 3;
const COVERED = Int32Array.of(2, 0); // the op covers KV heads 2 and 0 of the caller's 3; head 1 stays untouched
const SLOTS = Int32Array.of(1, 0); // ... stored in row slots 1 and 0
const SLOT_HEADS = Int32Array.of(0, 2); // append: slot 0 <- head 0, slot 1 <- head 2
const ATOL = 1e-5, RTOL = 1e-4, MAX_NMSE = 1e-10;

type Store = "pages" | "big" | "ring" | "future" | "mixed";
interface Case {
  dtype: KvDtype;
  G: number;
  D: number;
  /** tokens before the call (the call's queries are at positions ctx .. ctx + T − 1) */
  ctx: number;
  T: number;
  store: Store;
  window: { sink: number; recent: number } | null;
  /** the stores' layout (default NHD); "mixed" always puts its second half in an NHD buffer */
  layout?: KvLayout;
  /** rows that stress the codecs: tiny key ranges (f16-subnormal int4 scales: the scalar table), constant keys,
   *  value rows up to ±1000 */
  extreme?: boolean;
}

const caseName = (c: Case) => `${c.extreme ? "extreme " : ""}${c.dtype} G=${c.G} D=${c.D} ctx=${c.ctx} T=${c.T} ${c.store} ${c.layout ?? "NHD"} ${c.window ? `window ${c.window.sink}+${c.window.recent}` : "no window"}`;

interface Data {
  K: Float32Array; // [ctx + T, KVH, D]
  V: Float32Array;
  q: Float32Array; // [T, KVH * G, D]
}

function makeData(c: Case, seed: number): Data {
  const N = c.ctx + c.T;
  const d = {
    K: randomArray(N * KVH * c.D, seed, 1),
    V: randomArray(N * KVH * c.D, seed + 1, 1),
    q: randomArray(c.T * KVH * c.G * c.D, seed + 2, 3), // scaled up: softmax far from uniform
  };
  if (c.extreme) {
    for (let r = 0; r < N * KVH; r++) {
      const k = d.K.subarray(r * c.D, (r + 1) * c.D), v = d.V.subarray(r * c.D, (r + 1) * c.D);
      if (r % 3 === 0) k.forEach((x, i) => (k[i] = x * 1e-4));
      if (r % 5 === 0) k.fill(0.375);
      if (r % 4 === 1) v.forEach((x, i) => (v[i] = x * (r % 8 === 1 ? 1000 : 100)));
    }
  }
  return d;
}

/** Append the K/V of `positions` (host token indices) into rows `rows` of a fresh pair of buffers, or of one tiled
 *  buffer holding both (whole 64-row tiles). */
function store(b: Backend, shard: number, c: Case, d: Data, capacityRows: number, rowOf: (p: number) => number, layout: KvLayout = c.layout ?? "NHD") {
  const rowsHeld = layout === "T64" ? Math.ceil(capacityRows / TILE_ROWS) * TILE_ROWS : capacityRows;
  const bytes = kvBufferBytes(layout, rowsHeld, 2, c.D, c.dtype);
  const k = b.alloc(shard, bytes), v = layout === "T64" ? k : b.alloc(shard, bytes);
  const N = c.ctx + c.T;
  const rows = Int32Array.from({ length: N }, (_, p) => rowOf(p));
  const ops: Op[] = [k, v].map((dst, i) => ({
    kind: "append", dst, dtype: c.dtype, rowHeads: 2, headDim: c.D, src: i === 0 ? d.K : d.V, srcHeads: KVH,
    heads: SLOT_HEADS, rows, layout: layout === "NHD" ? "NHD" : i === 0 ? "K64" : "V64",
  }));
  return { k, v, ops, layout };
}

/** Build the stores of a case on one backend shard; returns the ops (appends, then one attend) and the handles. */
function build(b: Backend, shard: number, c: Case, d: Data, out: Float32Array, lse: Float32Array) {
  const N = c.ctx + c.T;
  const ops: Op[] = [], handles: number[] = [], segments: Segment[] = [];
  const add = (s: ReturnType<typeof store>) => (ops.push(...s.ops), handles.push(...new Set([s.k, s.v])), s);
  const seg = (s: ReturnType<typeof store>, rowStart: number, rowCount: number, positions: Int32Array | number): Segment =>
    ({ k: s.k, v: s.v, dtype: c.dtype, rowHeads: 2, rowStart, rowCount, positions, layout: s.layout });
  if (c.store === "pages") {
    // two pages per buffer, so every other segment starts at rowStart = PAGE
    for (let p0 = 0; p0 < N; p0 += 2 * PAGE) {
      const s = add(store(b, shard, c, d, 2 * PAGE, (p) => (p >= p0 && p < p0 + 2 * PAGE ? p - p0 : -1)));
      for (let half = 0; half < 2 && p0 + half * PAGE < N; half++) {
        segments.push(seg(s, half * PAGE, Math.min(PAGE, N - p0 - half * PAGE), p0 + half * PAGE));
      }
    }
  } else if (c.store === "big") {
    const s = add(store(b, shard, c, d, N, (p) => p));
    segments.push(seg(s, 0, N, 0));
  } else if (c.store === "mixed") {
    // first half in rows 5.. of a buffer of the case's layout (blocks off the tile boundary), second half token-major
    const h = Math.floor(N / 2);
    const a = add(store(b, shard, c, d, h + 5, (p) => (p < h ? p + 5 : -1)));
    const z = add(store(b, shard, c, d, N - h, (p) => (p >= h ? p - h : -1), "NHD"));
    segments.push(seg(a, 5, h, 0), seg(z, 0, N - h, h));
  } else if (c.store === "ring") {
    // sinks and the R tokens before the call, in scrambled rows of an S + R ring; then the call's own tokens
    const kept = Array.from({ length: c.ctx }, (_, p) => p).filter((p) => p < S || p >= c.ctx - R);
    const perm = kept.map((_, i) => (i * 5 + 3) % kept.length);
    const ring = add(store(b, shard, c, d, S + R, (p) => (kept.includes(p) ? perm[kept.indexOf(p)]! : -1)));
    const positions = new Int32Array(kept.length);
    kept.forEach((p, i) => (positions[perm[i]!] = p));
    if (kept.length) segments.push(seg(ring, 0, kept.length, positions));
    const staging = add(store(b, shard, c, d, c.T, (p) => (p >= c.ctx ? p - c.ctx : -1)));
    segments.push(seg(staging, 0, c.T, c.ctx));
  } else {
    // only keys at positions ≥ ctx + 3: the first three query rows see nothing
    const s = add(store(b, shard, c, d, N, (p) => p));
    segments.push(seg(s, c.ctx + 3, N - c.ctx - 3, c.ctx + 3));
  }
  const attend: AttendOp = {
    kind: "attend", q: d.q, T: c.T, numHeads: KVH * c.G, headDim: c.D, group: c.G, qHeads: COVERED, kvSlots: SLOTS,
    segments, qPos0: c.ctx, window: c.window, out, lse,
  };
  ops.push(attend);
  return { ops, handles };
}

async function runCase(b: Backend, shard: number, c: Case, d: Data) {
  const Hq = KVH * c.G;
  const out = new Float32Array(c.T * Hq * c.D).fill(NaN), lse = new Float32Array(c.T * Hq).fill(NaN);
  const { ops, handles } = build(b, shard, c, d, out, lse);
  await b.run(shard, ops);
  for (const h of handles) b.free(shard, h);
  return { out, lse };
}

/** Compare one case's outputs; returns the measured errors for the message. */
function check(who: string, c: Case, got: { out: Float32Array; lse: Float32Array }, want: { out: Float32Array; lse: Float32Array }) {
  const Hq = KVH * c.G, D = c.D;
  const label = (c: Case) => `${who} ${caseName(c)}`;
  let maxAbs = 0, err2 = 0, ref2 = 0, lseMax = 0;
  for (let t = 0; t < c.T; t++) {
    for (let qh = 0; qh < Hq; qh++) {
      const covered = COVERED.includes(Math.floor(qh / c.G));
      const li = t * Hq + qh;
      if (!covered) {
        assert.ok(Number.isNaN(got.lse[li]!), `${label(c)}: lse of uncovered query head ${qh} row ${t} was written`);
        for (let d = 0; d < D; d++) assert.ok(Number.isNaN(got.out[li * D + d]!), `${label(c)}: uncovered query head ${qh} row ${t} was written`);
        continue;
      }
      const a = got.lse[li]!, b = want.lse[li]!;
      if (b === -Infinity) assert.equal(a, -Infinity, `${label(c)}: row ${t} head ${qh} has no visible key: lse ${a}, expected -Infinity`);
      else {
        const e = Math.abs(a - b);
        lseMax = Math.max(lseMax, e);
        assert.ok(e <= ATOL + RTOL * Math.abs(b), `${label(c)}: lse row ${t} head ${qh}: ${a} vs ${b} (|err| ${e.toExponential(2)} > 1e-5 + 1e-4·|b|)`);
      }
      for (let d = 0; d < D; d++) {
        const i = li * D + d, x = got.out[i]!, y = want.out[i]!;
        const e = Math.abs(x - y);
        assert.ok(e <= ATOL + RTOL * Math.abs(y), `${label(c)}: out[t=${t}, head ${qh}, d=${d}] = ${x}, reference ${y}: |err| ${e} > 1e-5 + 1e-4·|ref|`);
        maxAbs = Math.max(maxAbs, e);
        err2 += e * e;
        ref2 += y * y;
      }
    }
  }
  const nmse = ref2 > 0 ? err2 / ref2 : err2;
  assert.ok(nmse <= MAX_NMSE, `${label(c)}: NMSE ${nmse.toExponential(2)} > 1e-10 (max abs err ${maxAbs.toExponential(2)})`);
  return { maxAbs, nmse, lseMax };
}

/** Run every case on the reference and on each wasm backend; fail with the measured error of the first mismatch. */
async function conform(cases: Case[], backends: { name: string; b: Backend; shard: number }[]) {
  const ref = new ReferenceBackend();
  let worst = { maxAbs: 0, nmse: 0, lseMax: 0 };
  for (const [i, c] of cases.entries()) {
    const d = makeData(c, 1000 + i);
    const want = await runCase(ref, 0, c, d);
    for (const { name, b, shard } of backends) {
      const got = await runCase(b, shard, c, d);
      const e = check(name, c, got, want);
      worst = { maxAbs: Math.max(worst.maxAbs, e.maxAbs), nmse: Math.max(worst.nmse, e.nmse), lseMax: Math.max(worst.lseMax, e.lseMax) };
    }
  }
  return worst;
}

const DTYPES: KvDtype[] = ["f32", "f16", "bf16"];

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

const QDTYPES: KvDtype[] = ["int8", "int4"];

/** The quantized grid: the shapes of the float grids above, token-major, plus rows that stress the codecs. */
function quantCases(): Case[] {
  const cases: Case[] = [];
  for (const dtype of QDTYPES) {
    for (const G of [1, 4, 8]) for (const D of [64, 128, 36]) cases.push({ dtype, G, D, ctx: 200, T: 1, store: "pages", window: null });
    cases.push({ dtype, G: 4, D: 128, ctx: 2100, T: 1, store: "big", window: null });
    for (const T of [3, 13, 33]) for (const window of [null, { sink: S, recent: R }]) cases.push({ dtype, G: 4, D: 64, ctx: 50, T, store: "ring", window });
    cases.push({ dtype, G: 4, D: 128, ctx: 90, T: 37, store: "pages", window: null });
    cases.push({ dtype, G: 8, D: 36, ctx: 60, T: 9, store: "pages", window: { sink: 3, recent: 20 } });
    cases.push({ dtype, G: 4, D: 64, ctx: 20, T: 8, store: "future", window: null });
    for (const D of [128, 44]) cases.push({ dtype, G: 4, D, ctx: 150, T: 1, store: "big", window: null, extreme: true });
    cases.push({ dtype, G: 1, D: 64, ctx: 40, T: 12, store: "ring", window: null, extreme: true });
  }
  return cases;
}

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
  // window {sink 0, recent 0}: query t (position t) sees exactly the key at position t, with weight 1.
  const rows: ((d: number) => number)[] = [
    (d) => Math.sin(d), (d) => 0.25, (d) => 1e-5 * Math.cos(d), (d) => 3e-4 + 1e-6 * d, // tiny ranges: scalar tables
    (d) => 65000 * Math.cos(d), (d) => 60000 + d, (d) => -65000 + 0.5 * d, (d) => 1000 * Math.sin(3 * d), // near f16's top
    (d) => (d % 2 ? 7 : -7), (d) => 0,
  ];
  // and 400 random rows of random scale (1e-3 .. 1e4) and offset: every f16 rounding of the int4 tables, ties included
  const r = rng(4242);
  for (let i = 0; i < 400; i++) {
    const scale = 10 ** (r() * 7 - 3), offset = (r() * 2 - 1) * scale * 3, seed = r();
    rows.push((d) => offset + scale * ((Math.sin(d * 12.9898 + seed * 78.233) * 43758.5453) % 1));
  }
  for (const dtype of QDTYPES) for (const D of [128, 44]) {
    const N = rows.length, H = 1;
    const V = new Float32Array(N * D).map((_, i) => rows[Math.floor(i / D)]!(i % D)), K = new Float32Array(N * D).fill(0.5);
    const want = roundTrip(dtype as "int8" | "int4", V, D);
    for (const kernels of ["auto", "simd", "scalar"] as const) {
      const b = await createWasmBackend({ threads: 0, kernels });
      const bytes = kvBufferBytes("NHD", N, H, D, dtype), k = b.alloc(0, bytes), v = b.alloc(0, bytes);
      const all = Int32Array.from({ length: N }, (_, i) => i), out = new Float32Array(N * D);
      await b.run(0, [
        { kind: "append", dst: k, dtype, rowHeads: H, headDim: D, src: K, srcHeads: H, heads: Int32Array.of(0), rows: all },
        { kind: "append", dst: v, dtype, rowHeads: H, headDim: D, src: V, srcHeads: H, heads: Int32Array.of(0), rows: all },
        { kind: "attend", q: new Float32Array(N * D).fill(0.1), T: N, numHeads: H, headDim: D, group: 1, qHeads: Int32Array.of(0),
          kvSlots: Int32Array.of(0), segments: [{ k, v, dtype, rowHeads: H, rowStart: 0, rowCount: N, positions: 0 }], qPos0: 0,
          window: { sink: 0, recent: 0 }, out },
      ]);
      for (let i = 0; i < N * D; i++) {
        assert.ok(Object.is(out[i], want[i]) || out[i] === want[i], `${kernels} ${dtype} D=${D} row ${Math.floor(i / D)} d=${i % D}: ${out[i]} vs ${want[i]} decoded by src/quant.ts`);
      }
      await b.dispose();
    }
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
