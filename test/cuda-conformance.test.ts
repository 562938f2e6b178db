// The CUDA kernels against the reference backend (the specification in code), on the same ops and data, on a GPU or on
// the host emulation build (helpers/cuda-target.ts; the test names say which).
//   KV append: the buffers' bytes must be identical (f32 -> f16 / bf16 is round-to-nearest-even on both sides; int8 /
//     int4 records are src/quant.ts's codecs bit for bit).
//   attend, f32 and int8 KV, and int4 KV on the CUDA-core kernel (T x G <= 16 packed rows): per element
//     |a - b| <= 1e-5 + 1e-4 |b| and NMSE <= 1e-10 (the reference dequantizes the same records exactly as src/quant.ts
//     says, then float64 attention; the kernel dequantizes into f32 registers, so only f32 vs float64 arithmetic
//     differs).
//   attend, f16 / bf16 KV: FlashAttention's rule: max error <= 2 x the max error of a naive attention in the same
//     precision (q, k, v, scores, probabilities and output rounded to the dtype) + 2 x the dtype's rounding of 0.3.
//     int4 KV on the tensor-core kernel (more than 16 packed rows) is held to the f16 rule over the dequantized values
//     (every int4 value is an f16 value: the kernel dequantizes exactly into f16 and then is the f16 kernel).
// Outputs are poisoned with NaN before every run: covered heads must be written, the others left untouched.
// Grid: dtype f32/f16/bf16 x head dim 64/128 x G = 1/4/8, int8 / int4 x (64, G = 8), (128, G = 1 and 4); per test T < S, T = S + R, T = S + R + 1 from an empty
// cache, decode and short and long blocks after a cached context (tensor-core and CUDA-core kernels), both masks,
// split-KV off / forced / automatic; keys in consecutive pages (numeric positions, row_start > 0) and in a ring with
// scrambled explicit positions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type CudaBackendOptions, createCudaBackend } from "../src/backend/cuda.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { AttendOp, Backend, Handle, Op, Segment } from "../src/backend/types.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, headBytes, isQuantized, type KvDtype, roundToDtype } from "../src/dtype.ts";
import { checkDequantExact, conform, quantCases } from "./helpers/conformance.ts";
import { roundTrip } from "../src/quant.ts";
import { rng as uniform } from "./helpers/random.ts";

const { library, label, skip } = cudaTarget;
/** The backend on the library the tests run on (see helpers/cuda-target.ts). */
const cudaBackend = (opts: CudaBackendOptions = {}) => createCudaBackend({ cudaLibrary: library, ...opts });

const S = 4, R = 8, PAGE = 64;
const KVH = 3; // KV heads of the layer; the ops cover KV heads 2 and 0 (slots 0 and 1), head 1 stays untouched
const COVERED = new Int32Array([2, 0]);
const SLOTS = new Int32Array([0, 1]);

/** Uniform [-1, 1) from the shared seeded generator. */
function rng(seed: number): () => number {
  const u = uniform(seed);
  return () => u() * 2 - 1;
}

function rnd(x: number, dtype: KvDtype): number {
  if (dtype === "f16") return f16BitsToF32(f32ToF16Bits(x));
  if (dtype === "bf16") return bf16BitsToF32(f32ToBf16Bits(x));
  return Math.fround(x);
}

/** Keys and values of positions [0, P) for all KVH heads, and queries of the T tokens after `ctx`. */
interface Data {
  ctx: number;
  T: number;
  K: Float32Array; // [P, KVH, D]
  V: Float32Array;
  q: Float32Array; // [T, KVH * G, D]
}

function makeData(seed: number, ctx: number, T: number, D: number, G: number): Data {
  const r = rng(seed);
  const P = ctx + T;
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => r() * scale);
  // queries scaled up so that softmax is far from uniform
  return { ctx, T, K: fill(P * KVH * D, 1), V: fill(P * KVH * D, 1), q: fill(T * KVH * G * D, 3) };
}

/**
 * Builds the same cache on a backend: positions [0, ctx) in one buffer, one segment per page of PAGE rows
 * (row_start = page * PAGE, numeric positions); positions [ctx, ctx + T) in a second buffer at scrambled rows
 * (explicit positions). Returns the segments and the handles.
 */
async function build(b: Backend, d: Data, D: number, dtype: KvDtype, seed: number): Promise<{ segments: Segment[]; handles: Handle[] }> {
  const rowBytes = 2 * headBytes(dtype, D);
  const store = [b.alloc(0, Math.max(1, d.ctx) * rowBytes), b.alloc(0, Math.max(1, d.ctx) * rowBytes)];
  const ring = [b.alloc(0, d.T * rowBytes), b.alloc(0, d.T * rowBytes)];
  const r = rng(seed ^ 0x5eed);
  const perm = Array.from({ length: d.T }, (_, i) => i);
  for (let i = d.T - 1; i > 0; i--) {
    const j = Math.floor(((r() + 1) / 2) * (i + 1));
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const ringRows = new Int32Array(d.T); // token t -> ring row
  perm.forEach((t, row) => (ringRows[t] = row));
  const slice = (a: Float32Array, p0: number, n: number) => a.subarray(p0 * KVH * D, (p0 + n) * KVH * D);
  const ops: Op[] = [];
  for (const [buf, src] of [[store[0]!, d.K], [store[1]!, d.V]] as const) {
    ops.push({ kind: "append", dst: buf, dtype, rowHeads: 2, headDim: D, src: slice(src, 0, d.ctx), srcHeads: KVH, heads: COVERED, rows: Int32Array.from({ length: d.ctx }, (_, i) => i) });
  }
  for (const [buf, src] of [[ring[0]!, d.K], [ring[1]!, d.V]] as const) {
    ops.push({ kind: "append", dst: buf, dtype, rowHeads: 2, headDim: D, src: slice(src, d.ctx, d.T), srcHeads: KVH, heads: COVERED, rows: ringRows });
  }
  await b.run(0, ops);
  const segments: Segment[] = [];
  for (let p0 = 0; p0 < d.ctx; p0 += PAGE) {
    segments.push({ k: store[0]!, v: store[1]!, dtype, rowHeads: 2, rowStart: p0, rowCount: Math.min(PAGE, d.ctx - p0), positions: p0 });
  }
  segments.push({ k: ring[0]!, v: ring[1]!, dtype, rowHeads: 2, rowStart: 0, rowCount: d.T, positions: Int32Array.from(perm, (t) => d.ctx + t) });
  return { segments, handles: [...store, ...ring] };
}

/** Naive attention in the KV dtype (FlashAttention's "same precision" baseline): everything rounded to the dtype. */
/** An int4 cache in it: K and V as the records decode them, the arithmetic in f16. */
function naive(d: Data, D: number, G: number, kv: KvDtype, window: AttendOp["window"]): { out: Float32Array; lse: Float32Array } {
  const Hq = KVH * G, P = d.ctx + d.T, scale = 1 / Math.sqrt(D);
  const out = new Float32Array(d.T * Hq * D).fill(NaN), lse = new Float32Array(d.T * Hq).fill(NaN);
  const dtype: KvDtype = kv === "int4" ? "f16" : kv;
  const [q, K, V] = [d.q, d.K, d.V].map((a, i) => roundToDtype(i > 0 && kv === "int4" ? roundTrip("int4", a, D) : Float32Array.from(a), dtype)) as [Float32Array, Float32Array, Float32Array];
  for (const kvh of COVERED) {
    for (let g = 0; g < G; g++) {
      const h = kvh * G + g;
      for (let t = 0; t < d.T; t++) {
        const pos = d.ctx + t, s: number[] = [], keys: number[] = [];
        for (let p = 0; p < P; p++) {
          if (p > pos || (window && p >= window.sink && p < pos - window.recent)) continue;
          let dot = 0;
          for (let i = 0; i < D; i++) dot += q[(t * Hq + h) * D + i]! * K[(p * KVH + kvh) * D + i]!;
          s.push(rnd(dot * scale, dtype));
          keys.push(p);
        }
        const m = s.reduce((a, b) => Math.max(a, b), -Infinity);
        const w = s.map((x) => Math.exp(x - m));
        const sum = w.reduce((a, b) => a + b, 0);
        const pr = w.map((x) => rnd(x / sum, dtype));
        for (let i = 0; i < D; i++) {
          let o = 0;
          keys.forEach((p, k) => (o += pr[k]! * V[(p * KVH + kvh) * D + i]!));
          out[(t * Hq + h) * D + i] = rnd(o, dtype);
        }
        lse[t * Hq + h] = m + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

function coveredHeads(G: number): Set<number> {
  const s = new Set<number>();
  for (const kvh of COVERED) for (let g = 0; g < G; g++) s.add(kvh * G + g);
  return s;
}

/** Max |a - b| over the covered heads; NaN-poisoned uncovered heads must stay NaN in `a`. */
function compare(a: Float32Array, b: Float32Array, T: number, Hq: number, width: number, covered: Set<number>, label: string) {
  let maxAbs = 0, err2 = 0, ref2 = 0;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < width; i++) {
        const k = (t * Hq + h) * width + i;
        if (!covered.has(h)) {
          assert.ok(Number.isNaN(a[k]!), `${label}: uncovered head ${h} was written at token ${t}`);
          continue;
        }
        assert.ok(!Number.isNaN(a[k]!), `${label}: covered head ${h} not written at token ${t} (index ${k})`);
        const diff = Math.abs(a[k]! - b[k]!);
        if (Number.isFinite(b[k]!)) {
          maxAbs = Math.max(maxAbs, diff);
          err2 += diff * diff;
          ref2 += b[k]! * b[k]!;
        } else assert.equal(a[k], b[k], `${label}: index ${k}`);
      }
    }
  }
  return { maxAbs, nmse: ref2 > 0 ? err2 / ref2 : err2 };
}

function firstBad(a: Float32Array, b: Float32Array, ok: (x: number, y: number) => boolean): string {
  for (let k = 0; k < a.length; k++) {
    if (!Number.isNaN(b[k]!) && !ok(a[k]!, b[k]!)) return `first bad index ${k}: got ${a[k]}, reference ${b[k]}`;
  }
  return "";
}

async function sameBytes(cuda: Backend, ref: Backend, hc: Handle[], hr: Handle[], bytes: number[], label: string) {
  for (let i = 0; i < hc.length; i++) {
    const [x, y] = [await cuda.read(0, hc[i]!, 0, bytes[i]!), await ref.read(0, hr[i]!, 0, bytes[i]!)];
    const k = x.findIndex((v, j) => v !== y[j]);
    assert.equal(k, -1, `${label}: buffer ${i} differs from the reference at byte ${k}`);
  }
}

interface Case { ctx: number; T: number }
// T < S, T = S + R, T = S + R + 1 from an empty cache; decode, 2 tokens, S + R + 1 and a long block after a context;
// a decode step over 1000 cached keys (16 key tiles: automatic split-KV).
const CASES: Case[] = [{ ctx: 0, T: 3 }, { ctx: 0, T: 12 }, { ctx: 0, T: 13 }, { ctx: 70, T: 1 }, { ctx: 70, T: 2 }, { ctx: 70, T: 13 }, { ctx: 70, T: 24 }, { ctx: 1000, T: 1 }];
const SPLITS = [1, 3, 0]; // off, forced, automatic

async function conformance(dtype: KvDtype, D: number, G: number) {
  const Hq = KVH * G, covered = coveredHeads(G);
  let n = 0;
  for (const c of CASES) {
    for (const window of [null, { sink: S, recent: R }]) {
      const splits = SPLITS[n++ % SPLITS.length]!;
      const label = `${dtype} D=${D} G=${G} ctx=${c.ctx} T=${c.T} ${window ? "window" : "causal"} splits=${splits}`;
      const seed = n * 7919 + D * 31 + G;
      const d = makeData(seed, c.ctx, c.T, D, G);
      const cuda = await cudaBackend({ splits });
      const ref = new ReferenceBackend();
      try {
        const bc = await build(cuda, d, D, dtype, seed), br = await build(ref, d, D, dtype, seed);
        const rowBytes = 2 * headBytes(dtype, D);
        const sizes = [Math.max(1, c.ctx), Math.max(1, c.ctx), c.T, c.T].map((rows) => rows * rowBytes);
        await sameBytes(cuda, ref, bc.handles, br.handles, sizes, `${label} append`);
        const op = (segments: Segment[]): AttendOp => ({
          kind: "attend", q: d.q, T: c.T, numHeads: Hq, headDim: D, group: G, qHeads: COVERED, kvSlots: SLOTS, segments,
          qPos0: c.ctx, window, out: new Float32Array(c.T * Hq * D).fill(NaN), lse: new Float32Array(c.T * Hq).fill(NaN),
        });
        const [oc, or] = [op(bc.segments), op(br.segments)];
        await cuda.run(0, [oc]);
        await ref.run(0, [or]);
        const o = compare(oc.out, or.out, c.T, Hq, D, covered, `${label} out`);
        const l = compare(oc.lse!, or.lse!, c.T, Hq, 1, covered, `${label} lse`);
        const tensorCores = dtype !== "f32" && dtype !== "int8" && c.T * G > 16; // attend.cu's choice of kernel
        if (!tensorCores && (dtype === "f32" || isQuantized(dtype))) {
          const ok = (x: number, y: number) => Math.abs(x - y) <= 1e-5 + 1e-4 * Math.abs(y);
          assert.ok(o.nmse <= 1e-10, `${label}: NMSE ${o.nmse} > 1e-10 (max abs ${o.maxAbs})`);
          const bad = firstBad(oc.out, or.out, ok);
          assert.equal(bad, "", `${label}: max abs ${o.maxAbs}, NMSE ${o.nmse}; ${bad}`);
          assert.ok(l.maxAbs <= 1e-4, `${label}: lse max abs error ${l.maxAbs} > 1e-4`);
        } else {
          const nv = naive(d, D, G, dtype, window);
          const no = compare(nv.out, or.out, c.T, Hq, D, covered, `${label} naive`);
          const nl = compare(nv.lse, or.lse!, c.T, Hq, 1, covered, `${label} naive lse`);
          let atol = 0;
          const low: KvDtype = dtype === "int4" ? "f16" : dtype;
          for (const y of or.out) if (!Number.isNaN(y)) atol = Math.max(atol, 2 * Math.abs(rnd(rnd(rnd(y, low) + 0.3, low) - 0.3, low) - rnd(y, low)));
          assert.ok(o.maxAbs <= 2 * no.maxAbs + atol,
            `${label}: max abs ${o.maxAbs} > 2 x naive ${no.maxAbs} + ${atol} (NMSE ${o.nmse}); ${firstBad(oc.out, or.out, (x, y) => Math.abs(x - y) <= 2 * no.maxAbs + atol)}`);
          assert.ok(l.maxAbs <= 2 * nl.maxAbs + 1e-3, `${label}: lse max abs ${l.maxAbs} > 2 x naive ${nl.maxAbs} + 1e-3`);
        }
      } finally {
        await cuda.dispose();
        await ref.dispose();
      }
    }
  }
}

for (const dtype of ["f32", "f16", "bf16", "int8", "int4"] as const) {
  for (const D of [64, 128]) {
    for (const G of isQuantized(dtype) ? (D === 64 ? [8] : [1, 4]) : [1, 4, 8]) { // quantized: fewer (the shared grid has G 1/4/8)
      test(`cuda conformance (${label}): ${dtype} KV, head dim ${D}, G = ${G}`, { skip }, () => conformance(dtype, D, G));
    }
  }
}

test(`cuda conformance (${label}): the shared quantized grid (helpers/conformance.ts quantCases: head dims 64 and 128, int4 on the CUDA-core kernel) and exact int8 / int4 dequantization`, { skip }, async () => {
  const cuda = await cudaBackend();
  try {
    // the grid's f32 tolerance: int4 query blocks of more than 16 packed rows take the tensor-core kernel (f16 rule,
    // the int4 tests above)
    const cases = quantCases().filter((c) => (c.D === 64 || c.D === 128) && (c.dtype === "int8" || c.T * c.G <= 16));
    assert.ok(cases.length >= 25, `${cases.length} cases`);
    await conform(cases, [{ name: `cuda ${label}`, b: cuda, shard: 0 }]);
    await checkDequantExact(`cuda ${label}`, cuda, [128, 64]);
  } finally {
    await cuda.dispose();
  }
});

test(`cuda (${label}): a query with no visible key gets zeros and lse = -Infinity`, { skip }, async () => {
  const cuda = await cudaBackend();
  try {
    const D = 64, k = cuda.alloc(0, 8 * D * 4), v = cuda.alloc(0, 8 * D * 4);
    const out = new Float32Array(2 * D).fill(NaN), lse = new Float32Array(2).fill(NaN);
    // keys at positions 10..17, the query at position 5: every key is in its future
    await cuda.run(0, [{
      kind: "attend", q: new Float32Array(2 * D).fill(1), T: 1, numHeads: 2, headDim: D, group: 2, qHeads: new Int32Array([0]),
      kvSlots: new Int32Array([0]), segments: [{ k, v, dtype: "f32", rowHeads: 1, rowStart: 0, rowCount: 8, positions: 10 }],
      qPos0: 5, window: null, out, lse,
    }]);
    assert.deepEqual([...out], new Array(2 * D).fill(0));
    assert.deepEqual([...lse], [-Infinity, -Infinity]);
  } finally {
    await cuda.dispose();
  }
});

test(`cuda (${label}): 60 single-token steps over a ring of S + R rows (sinks kept, recent rows overwritten) match the reference`, { skip }, async () => {
  // The streaming-head store as the engine keeps it: a ring of S + R rows with explicit positions. Each step attends
  // over the ring plus the token's own row (window mask), then writes the token into the ring.
  const D = 64, G = 4, Hq = KVH * G, dtype: KvDtype = "f32", steps = 60;
  const d = makeData(99, 0, steps, D, G);
  const backends = [await cudaBackend(), new ReferenceBackend()];
  try {
    const rowBytes = 2 * headBytes(dtype, D);
    const rings = backends.map((b) => [b.alloc(0, (S + R) * rowBytes), b.alloc(0, (S + R) * rowBytes)]);
    const own = backends.map((b) => [b.alloc(0, rowBytes), b.alloc(0, rowBytes)]);
    const ringPos = new Int32Array(S + R);
    const slot = (p: number) => (p < S ? p : S + ((p - S) % R));
    const covered = coveredHeads(G);
    for (let p = 0; p < steps; p++) {
      const filled = Math.min(p, S + R);
      const src = (a: Float32Array) => a.subarray(p * KVH * D, (p + 1) * KVH * D);
      const outs: Float32Array[] = [];
      for (const [i, b] of backends.entries()) {
        const [ring, mine] = [rings[i]!, own[i]!];
        const append = (dst: Handle, a: Float32Array, row: number): Op => ({
          kind: "append", dst, dtype, rowHeads: 2, headDim: D, src: src(a), srcHeads: KVH, heads: COVERED, rows: new Int32Array([row]),
        });
        const out = new Float32Array(Hq * D).fill(NaN);
        await b.run(0, [
          append(mine[0]!, d.K, 0),
          append(mine[1]!, d.V, 0),
          {
            kind: "attend", q: d.q.subarray(p * Hq * D, (p + 1) * Hq * D), T: 1, numHeads: Hq, headDim: D, group: G,
            qHeads: COVERED, kvSlots: SLOTS, qPos0: p, window: { sink: S, recent: R }, out,
            segments: [
              { k: ring[0]!, v: ring[1]!, dtype, rowHeads: 2, rowStart: 0, rowCount: filled, positions: ringPos.slice(0, filled) },
              { k: mine[0]!, v: mine[1]!, dtype, rowHeads: 2, rowStart: 0, rowCount: 1, positions: p },
            ],
          },
          append(ring[0]!, d.K, slot(p)),
          append(ring[1]!, d.V, slot(p)),
        ]);
        outs.push(out);
      }
      ringPos[slot(p)] = p;
      const c = compare(outs[0]!, outs[1]!, 1, Hq, D, covered, `step ${p}`);
      const bad = firstBad(outs[0]!, outs[1]!, (x, y) => Math.abs(x - y) <= 1e-5 + 1e-4 * Math.abs(y));
      assert.equal(bad, "", `step ${p}: max abs ${c.maxAbs}; ${bad}`);
    }
  } finally {
    for (const b of backends) await b.dispose();
  }
});
