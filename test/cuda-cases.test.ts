// CUDA attention cases that the conformance grid (cuda-conformance.test.ts) does not reach, against the reference
// backend on the same ops, on a GPU or on the host emulation build (helpers/cuda-target.ts):
//   - non-finite values in key rows that are masked for some or all query rows (the reference skips masked keys);
//   - rows that see no key while the call has visible tiles (the split-KV merge of all-empty partials);
//   - f16, bf16 and f32 segments in one call (one launch per dtype into one set of partials, then one merge), and
//     int8 / int4 segments beside them;
//   - segments not aligned to 64-key tiles around the last token of a 64-row query tile (tok_lo / tok_hi);
//   - a seeded random fuzz over dtype, head dim, group, context, tokens, window, split-KV and segment cuts.
// Tolerance: f32 and int8 KV, and int4 KV on the CUDA-core kernel, |a - b| <= 1e-5 + 1e-4 |b| (the reference reads
// the same records: only f32 vs float64 arithmetic differs); with an f16 / bf16 segment in the call, or an int4 one
// on the tensor-core kernel (more than 16 packed rows: exact int4 values in f16 stages), |a - b| <= 2e-2 + 1e-3 |b|
// (inputs in [-1, 1], queries in [-3, 3]: the tensor-core kernel rounds q and the probabilities to f16 / bf16; the
// relative term covers the int4 rows of +-65504 values that the non-finite test plants); lse within
// 1e-4 / 1e-2; where the reference output is not finite the kernel's must not be finite either.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type CudaBackendOptions, createCudaBackend } from "../src/backend/cuda.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { AttendOp, Backend, Handle, Op, Segment } from "../src/backend/types.ts";
import { headBytes, isQuantized, type KvDtype } from "../src/dtype.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { rng } from "./helpers/random.ts";

const { library, label, skip } = cudaTarget;
const cudaBackend = (opts: CudaBackendOptions = {}) => createCudaBackend({ cudaLibrary: library, ...opts });

/** One segment's keys: positions [N] and K / V [N, KVH, D] f32 (rounded to `dtype`, or quantized, on append). */
interface Keys { dtype: KvDtype; positions: Int32Array; K: Float32Array; V: Float32Array }
interface Case {
  T: number; G: number; KVH: number; D: number; qPos0: number; window: AttendOp["window"]; splits: number;
  keys: Keys[]; q: Float32Array; // q [T, KVH * G, D]
}

const ROW_START = 3; // segments start a few rows into their buffers

async function attend(b: Backend, c: Case): Promise<{ out: Float32Array; lse: Float32Array }> {
  const handles: Handle[] = [];
  const heads = Int32Array.from({ length: c.KVH }, (_, i) => i);
  try {
    const ops: Op[] = [];
    const segments: Segment[] = c.keys.map((k) => {
      const N = k.positions.length;
      const rows = ROW_START + N;
      const [hk, hv] = [b.alloc(0, rows * c.KVH * headBytes(k.dtype, c.D)), b.alloc(0, rows * c.KVH * headBytes(k.dtype, c.D))];
      handles.push(hk, hv);
      const dstRows = Int32Array.from({ length: N }, (_, i) => ROW_START + i);
      for (const [dst, src] of [[hk, k.K], [hv, k.V]] as const) {
        ops.push({ kind: "append", dst, dtype: k.dtype, rowHeads: c.KVH, headDim: c.D, src, srcHeads: c.KVH, heads, rows: dstRows });
      }
      const consecutive = k.positions.every((p, i) => p === k.positions[0]! + i);
      return { k: hk, v: hv, dtype: k.dtype, rowHeads: c.KVH, rowStart: ROW_START, rowCount: N, positions: consecutive && N > 0 ? k.positions[0]! : k.positions };
    });
    const Hq = c.KVH * c.G;
    const out = new Float32Array(c.T * Hq * c.D).fill(NaN), lse = new Float32Array(c.T * Hq).fill(NaN);
    ops.push({ kind: "attend", q: c.q, T: c.T, numHeads: Hq, headDim: c.D, group: c.G, qHeads: heads, kvSlots: heads, segments, qPos0: c.qPos0, window: c.window, out, lse });
    await b.run(0, ops);
    return { out, lse };
  } finally {
    for (const h of handles) b.free(0, h);
  }
}

/** Runs `c` on CUDA (split-KV as the case says) and on the reference; "" when they agree, else the first difference. */
async function disagreement(c: Case): Promise<string> {
  const cuda = await cudaBackend({ splits: c.splits }), ref = new ReferenceBackend();
  try {
    const [a, b] = [await attend(cuda, c), await attend(ref, c)];
    const low = c.keys.some((k) => k.dtype === "f16" || k.dtype === "bf16" || (k.dtype === "int4" && c.T * c.G > 16));
    const close = (x: number, y: number) => Math.abs(x - y) <= (low ? 2e-2 + 1e-3 * Math.abs(y) : 1e-5 + 1e-4 * Math.abs(y));
    for (let i = 0; i < b.out.length; i++) {
      const [x, y] = [a.out[i]!, b.out[i]!];
      if (Number.isFinite(y) ? !close(x, y) : Number.isFinite(x)) {
        return `out[${i}] (token ${Math.floor(i / (c.KVH * c.G * c.D))}): ${x}, reference ${y}`;
      }
    }
    for (let i = 0; i < b.lse.length; i++) {
      const [x, y] = [a.lse[i]!, b.lse[i]!];
      if (Number.isFinite(y) ? !(Math.abs(x - y) <= (low ? 1e-2 : 1e-4)) : x !== y) return `lse[${i}]: ${x}, reference ${y}`;
    }
    return "";
  } finally {
    await cuda.dispose();
    await ref.dispose();
  }
}

function uniform(seed: number) {
  const r = rng(seed);
  return (n: number, scale = 1) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

function range(a: number, b: number): Int32Array {
  return Int32Array.from({ length: b - a }, (_, i) => a + i);
}

/** One segment of random keys at `positions` (KVH heads of D). */
function keys(u: ReturnType<typeof uniform>, dtype: KvDtype, positions: Int32Array, KVH: number, D: number): Keys {
  return { dtype, positions, K: u(positions.length * KVH * D), V: u(positions.length * KVH * D) };
}

test(`cuda (${label}): a non-finite value in a key row masked for some or all query rows does not reach their outputs`, { skip }, async () => {
  const bad: string[] = [];
  // [dtype, T, G, window, positions whose V row is huge]: T * G <= 16 runs the CUDA-core kernel, more the
  // tensor-core kernel (f16 / bf16); 1e6 is Inf once stored as f16, and Inf itself for f32 / bf16; an int4 record of
  // +-65504 (finite input, as the engine admits) decodes to Inf where q = 15: f16(15 * f16(131008 / 15)) overflows.
  // int8 caches take the CUDA-core kernel at every T, int4 ones the tensor-core kernel past 16 packed rows.
  const cases: [KvDtype, number, number, AttendOp["window"], (ctx: number) => number[]][] = [
    ["f32", 1, 4, null, (ctx) => [ctx + 5]], // a future key in the decode token's tile
    ["f32", 4, 1, null, (ctx) => [ctx + 1]], // the causal diagonal: visible to tokens 1.., masked for token 0
    ["f16", 1, 4, null, (ctx) => [ctx + 9]],
    ["f16", 40, 4, null, (ctx) => [ctx + 45]], // future key, tensor-core kernel
    ["bf16", 40, 4, null, (ctx) => [ctx + 20]], // diagonal of the tensor-core kernel: tokens 0..19 must stay finite
    ["f16", 40, 1, { sink: 4, recent: 8 }, () => [18]], // in the window's gap, in the tile of the visible sinks
    ["bf16", 3, 2, { sink: 4, recent: 8 }, () => [18]], // (18: in the CUDA-core kernel's step with sink 2)
    ["int4", 1, 4, null, (ctx) => [ctx + 5]],
    ["int4", 40, 4, null, (ctx) => [ctx + 20]], // the diagonal of the tensor-core kernel: Inf in its f16 stage
    ["int4", 40, 1, { sink: 4, recent: 8 }, () => [18]], // in the window's gap, in the tile of the visible sinks
    ["int4", 3, 2, { sink: 4, recent: 8 }, () => [18]],
  ];
  let seed = 1;
  for (const [dtype, T, G, window, hot] of cases) {
    const u = uniform(seed++), KVH = 2, D = 64, ctx = 100;
    const k = keys(u, dtype, range(0, ctx + T + 10), KVH, D);
    for (const p of hot(ctx)) {
      const row = k.V.subarray(p * KVH * D, (p + 1) * KVH * D);
      if (dtype === "int4") row.forEach((_, i) => (row[i] = i % 2 ? 65504 : -65504));
      else row.fill(dtype === "f16" ? 1e6 : Infinity);
    }
    for (const splits of [1, 0]) {
      const why = await disagreement({ T, G, KVH, D, qPos0: ctx, window, splits, keys: [k], q: u(T * KVH * G * D, 3) });
      if (why) bad.push(`${dtype} T=${T} G=${G} ${window ? "window" : "causal"} splits=${splits}: ${why}`);
    }
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): rows that see no key get zeros and lse = -Infinity while other rows of the call see many tiles`, { skip }, async () => {
  const bad: string[] = [];
  let seed = 100;
  for (const dtype of ["f32", "f16", "bf16", "int8", "int4"] as const) {
    for (const [T, G] of [[20, 1], [20, 4], [300, 1]] as const) {
      for (const splits of [1, 3, 0]) {
        if (T === 300 && splits === 1) continue;
        const u = uniform(seed++), KVH = 2, D = 64;
        // keys at positions 10..209, queries at 0..T-1: tokens 0..9 see nothing
        const why = await disagreement({ T, G, KVH, D, qPos0: 0, window: null, splits, keys: [keys(u, dtype, range(10, 210), KVH, D)], q: u(T * KVH * G * D, 3) });
        if (why) bad.push(`${dtype} T=${T} G=${G} splits=${splits}: ${why}`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): f16, bf16 and f32 segments in one call match the reference`, { skip }, async () => {
  const bad: string[] = [];
  let seed = 200;
  for (const T of [1, 40]) {
    for (const splits of [1, 3, 0]) {
      const u = uniform(seed++), KVH = 2, D = 128, G = 4;
      const segs = [keys(u, "f16", range(0, 300), KVH, D), keys(u, "bf16", range(300, 700), KVH, D), keys(u, "f32", range(700, 760), KVH, D)];
      const why = await disagreement({ T, G, KVH, D, qPos0: 760 - T + (T === 1 ? 1 : 0), window: null, splits, keys: segs, q: u(T * KVH * G * D, 3) });
      if (why) bad.push(`T=${T} splits=${splits}: ${why}`);
    }
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): int8 and int4 segments beside f16 and f32 ones in one call match the reference`, { skip }, async () => {
  const bad: string[] = [];
  let seed = 250;
  for (const T of [1, 24]) {
    for (const splits of [1, 0]) {
      const u = uniform(seed++), KVH = 1, D = 64, G = 4;
      const segs = [keys(u, "int8", range(0, 200), KVH, D), keys(u, "f16", range(200, 300), KVH, D), keys(u, "int4", range(300, 560), KVH, D), keys(u, "f32", range(560, 600), KVH, D)];
      const why = await disagreement({ T, G, KVH, D, qPos0: 600 - T + (T === 1 ? 1 : 0), window: null, splits, keys: segs, q: u(T * KVH * G * D, 3) });
      if (why) bad.push(`T=${T} splits=${splits}: ${why}`);
    }
  }
  // quantized segments only: the f32 tolerance
  for (const splits of [1, 3]) {
    const u = uniform(seed++), KVH = 1, D = 128, G = 2, T = 30;
    const segs = [keys(u, "int4", range(0, 150), KVH, D), keys(u, "int8", range(150, 330), KVH, D)];
    const why = await disagreement({ T, G, KVH, D, qPos0: 330 - T, window: { sink: 4, recent: 64 }, splits, keys: segs, q: u(T * KVH * G * D, 3) });
    if (why) bad.push(`int4 + int8 splits=${splits}: ${why}`);
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): segments cut around the last token of a 64-row query tile match the reference`, { skip }, async () => {
  const bad: string[] = [];
  let seed = 300;
  for (const dtype of ["f16", "bf16", "f32"] as const) {
    for (const G of [1, 4]) {
      // cut at 63 (a tile whose first key is the last token of query tile 0 when G = 1) and at 15 (G = 4: 16 tokens)
      for (const cut of [63, 64, 15]) {
        const u = uniform(seed++), KVH = 1, D = 64, T = 128;
        const segs = [keys(u, dtype, range(0, cut), KVH, D), keys(u, dtype, range(cut, T), KVH, D)];
        const why = await disagreement({ T, G, KVH, D, qPos0: 0, window: null, splits: 1, keys: segs, q: u(T * KVH * G * D, 3) });
        if (why) bad.push(`${dtype} G=${G} cut=${cut}: ${why}`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): 30 random configurations (dtype, head dim, group, window, split-KV, scrambled segment cuts) match the reference`, { skip }, async () => {
  const r = rng(2026);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo)); // [lo, hi)
  const bad: string[] = [];
  for (let i = 0; i < 30; i++) {
    const dtype = pick(["f32", "f16", "bf16"] as const), D = pick([64, 128]), G = pick([1, 2, 4, 8, 16]), KVH = int(1, 3);
    const ctx = int(0, 300), T = int(1, 70), P = ctx + T;
    const window = r() < 0.5 ? null : { sink: int(0, 40), recent: int(0, 120) };
    const splits = pick([0, 1, 2, 5]);
    const cuts = [...new Set(Array.from({ length: int(0, 5) }, () => int(1, P)))].sort((a, b) => a - b);
    const bounds = [0, ...cuts, P], u = uniform(1000 + i), segs: Keys[] = [];
    for (let s = 0; s + 1 < bounds.length; s++) {
      const pos = range(bounds[s]!, bounds[s + 1]!);
      if (r() < 0.33) for (let j = pos.length - 1; j > 0; j--) { const k = int(0, j + 1); [pos[j], pos[k]] = [pos[k]!, pos[j]!]; }
      segs.push(keys(u, dtype, pos, KVH, D));
    }
    const what = `${i}: ${dtype} D=${D} G=${G} KVH=${KVH} ctx=${ctx} T=${T} window=${JSON.stringify(window)} splits=${splits} cuts=${cuts}`;
    const why = await disagreement({ T, G, KVH, D, qPos0: ctx, window, splits, keys: segs, q: u(T * KVH * G * D, 3) });
    if (why) bad.push(`${what}: ${why}`);
  }
  assert.deepEqual(bad, []);
});

test(`cuda (${label}): 12 random int8 / int4 configurations (head dim, group, window, split-KV, scrambled segment cuts) match the reference`, { skip }, async () => {
  const r = rng(2027);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo)); // [lo, hi)
  const bad: string[] = [];
  for (let i = 0; i < 12; i++) {
    const dtype = pick(["int8", "int4"] as const), D = pick([64, 128]), G = pick([1, 2, 4, 8]), KVH = int(1, 3);
    const ctx = int(0, 300), T = int(1, 40), P = ctx + T;
    const window = r() < 0.5 ? null : { sink: int(0, 40), recent: int(0, 120) };
    const splits = pick([0, 1, 3]);
    const cuts = [...new Set(Array.from({ length: int(0, 4) }, () => int(1, P)))].sort((a, b) => a - b);
    const bounds = [0, ...cuts, P], u = uniform(3000 + i), segs: Keys[] = [];
    for (let s = 0; s + 1 < bounds.length; s++) {
      const pos = range(bounds[s]!, bounds[s + 1]!);
      if (r() < 0.33) for (let j = pos.length - 1; j > 0; j--) { const k = int(0, j + 1); [pos[j], pos[k]] = [pos[k]!, pos[j]!]; }
      segs.push(keys(u, dtype, pos, KVH, D));
    }
    assert.ok(segs.every((k) => isQuantized(k.dtype)));
    const what = `${i}: ${dtype} D=${D} G=${G} KVH=${KVH} ctx=${ctx} T=${T} window=${JSON.stringify(window)} splits=${splits} cuts=${cuts}`;
    const why = await disagreement({ T, G, KVH, D, qPos0: ctx, window, splits, keys: segs, q: u(T * KVH * G * D, 3) });
    if (why) bad.push(`${what}: ${why}`);
  }
  assert.deepEqual(bad, []);
});
