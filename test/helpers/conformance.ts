// The conformance grid shared by the backends that run the C kernels (test/wasm-conformance.test.ts,
// test/native-conformance.test.ts): cases, their stores on a backend shard, the run against the reference backend
// (the specification in code) and the tolerance check.
//   attend: per element |a − b| ≤ 1e-5 + 1e-4·|b| and NMSE ≤ 1e-10 over the covered outputs, lse the same per element
//     rule. For f16/bf16 KV the reference reads the same rounded buffers, so the only difference left is f32 vs float64
//     arithmetic and the same tolerance applies to every dtype. For int8/int4 KV the reference quantizes with
//     src/quant.ts and the kernels write the very same record bytes, so again only the arithmetic differs.
//   CUDA (test/cuda-conformance.test.ts) runs the quantized grid too, at its head dims 64 and 128, with this tolerance
//     wherever its CUDA-core kernel runs (int8 always, int4 up to 16 packed query rows; int4 blocks beyond take the
//     f16 tensor-core kernel and are held to the f16 rule there) and checkDequantExact at head dims 128 and 64.
//   Outputs and lse are poisoned with NaN before every run: covered query heads must all be written, the query heads of
//     the uncovered KV head must still be NaN afterwards.
import assert from "node:assert/strict";
import { ReferenceBackend } from "../../src/backend/reference.ts";
import type { AttendOp, Backend, Op, Segment } from "../../src/backend/types.ts";
import type { KvDtype } from "../../src/dtype.ts";
import { kvBufferBytes, type KvLayout, TILE_ROWS } from "../../src/backend/layout.ts";
import { roundTrip } from "../../src/quant.ts";
import { randomArray, rng } from "./random.ts";

export const S = 4, R = 8, PAGE = 64, KVH = 3;
export const COVERED = Int32Array.of(2, 0); // the op covers KV heads 2 and 0 of the caller's 3; head 1 stays untouched
export const SLOTS = Int32Array.of(1, 0); // ... stored in row slots 1 and 0
export const SLOT_HEADS = Int32Array.of(0, 2); // append: slot 0 <- head 0, slot 1 <- head 2
export const ATOL = 1e-5, RTOL = 1e-4, MAX_NMSE = 1e-10;

export type Store = "pages" | "big" | "ring" | "future" | "mixed";
export interface Case {
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

export const caseName = (c: Case) => `${c.extreme ? "extreme " : ""}${c.dtype} G=${c.G} D=${c.D} ctx=${c.ctx} T=${c.T} ${c.store} ${c.layout ?? "NHD"} ${c.window ? `window ${c.window.sink}+${c.window.recent}` : "no window"}`;

export interface Data {
  K: Float32Array; // [ctx + T, KVH, D]
  V: Float32Array;
  q: Float32Array; // [T, KVH * G, D]
}

export function makeData(c: Case, seed: number): Data {
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
export function store(b: Backend, shard: number, c: Case, d: Data, capacityRows: number, rowOf: (p: number) => number, layout: KvLayout = c.layout ?? "NHD") {
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
export function build(b: Backend, shard: number, c: Case, d: Data, out: Float32Array, lse: Float32Array) {
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

export async function runCase(b: Backend, shard: number, c: Case, d: Data) {
  const Hq = KVH * c.G;
  const out = new Float32Array(c.T * Hq * c.D).fill(NaN), lse = new Float32Array(c.T * Hq).fill(NaN);
  const { ops, handles } = build(b, shard, c, d, out, lse);
  await b.run(shard, ops);
  for (const h of handles) b.free(shard, h);
  return { out, lse };
}

/** Compare one case's outputs; returns the measured errors for the message. */
export function check(who: string, c: Case, got: { out: Float32Array; lse: Float32Array }, want: { out: Float32Array; lse: Float32Array }) {
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

/** Run every case on the reference and on each backend; fail with the measured error of the first mismatch. */
export async function conform(cases: Case[], backends: { name: string; b: Backend; shard: number }[]) {
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

export const DTYPES: KvDtype[] = ["f32", "f16", "bf16"];
export const QDTYPES: KvDtype[] = ["int8", "int4"];

/** The quantized grid: the shapes of the float grids, token-major, plus rows that stress the codecs. */
export function quantCases(): Case[] {
  const cases: Case[] = [];
  for (const dtype of QDTYPES) {
    for (const G of [1, 4, 8]) for (const D of [64, 128, 36]) cases.push({ dtype, G, D, ctx: 200, T: 1, store: "pages", window: null });
    for (const G of [1, 4]) cases.push({ dtype, G, D: 96, ctx: 200, T: 1, store: "big", window: null }); // the fused kernels' last partial panel
    cases.push({ dtype, G: 1, D: 80, ctx: 201, T: 1, store: "pages", window: null }); // int4 m1 kernels: a last 16 codes, an odd last record
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

/** int8 / int4 dequantization must be exact: with window {sink 0, recent 0} query t sees only the key at position t
 *  (weight 1), so its output is value row t exactly as src/quant.ts decodes the record, in prefill (one call of N
 *  query rows) and in decode (N calls of one, G = 1 and 4). Rows: tiny ranges (the int4
 *  scalar tables), values near f16's top, constants, and 400 random rows of random scale (1e-3 .. 1e4) and offset
 *  (every f16 rounding of the int4 tables, ties included); head dims 128 and 44 (a 12-element tail) unless `dims`
 *  names the backend's (cuda: 128 and 64). */
export async function checkDequantExact(who: string, b: Backend, dims: readonly number[] = [128, 44]): Promise<void> {
  const rows: ((d: number) => number)[] = [
    (d) => Math.sin(d), (d) => 0.25, (d) => 1e-5 * Math.cos(d), (d) => 3e-4 + 1e-6 * d, // tiny ranges: scalar tables
    (d) => 65000 * Math.cos(d), (d) => 60000 + d, (d) => -65000 + 0.5 * d, (d) => 1000 * Math.sin(3 * d), // near f16's top
    (d) => (d % 2 ? 7 : -7), (d) => 0,
  ];
  const r = rng(4242);
  for (let i = 0; i < 400; i++) {
    const scale = 10 ** (r() * 7 - 3), offset = (r() * 2 - 1) * scale * 3, seed = r();
    rows.push((d) => offset + scale * ((Math.sin(d * 12.9898 + seed * 78.233) * 43758.5453) % 1));
  }
  for (const dtype of ["int8", "int4"] as const) for (const D of dims) {
    const N = rows.length, H = 1;
    const V = new Float32Array(N * D).map((_, i) => rows[Math.floor(i / D)]!(i % D)), K = new Float32Array(N * D).fill(0.5);
    const want = roundTrip(dtype, V, D);
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
      assert.ok(Object.is(out[i], want[i]) || out[i] === want[i], `${who} ${dtype} D=${D} row ${Math.floor(i / D)} d=${i % D}: ${out[i]} vs ${want[i]} decoded by src/quant.ts`);
    }
    // the same rows through decode (T = 1, query at position i: it sees row i alone), G = 1 and 4: the shapes the
    // fused decode kernels of the native AVX-512 / AVX2 sets serve (D % 32 == 0), reading the records directly
    const seg = [{ k, v, dtype, rowHeads: H, rowStart: 0, rowCount: N, positions: 0 }];
    for (const G of [1, 4]) {
      const outs = Array.from({ length: N }, () => new Float32Array(G * D));
      await b.run(0, outs.map((o, i) => ({ kind: "attend" as const, q: new Float32Array(G * D).fill(0.1), T: 1, numHeads: G, headDim: D,
        group: G, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), segments: seg, qPos0: i, window: { sink: 0, recent: 0 }, out: o })));
      for (let i = 0; i < N; i++) for (let e = 0; e < G * D; e++) {
        const got = outs[i]![e]!, w = want[i * D + (e % D)]!;
        assert.ok(Object.is(got, w) || got === w, `${who} ${dtype} D=${D} decode G=${G} row ${i} d=${e % D}: ${got} vs ${w} decoded by src/quant.ts`);
      }
    }
    b.free(0, k);
    b.free(0, v);
  }
}
