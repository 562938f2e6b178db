// Quantized decode over many KV heads on the native backend (kernels.h k_scores_quant_heads / k_pv_quant_heads,
// AVX-512 and AVX2: each block's rows read front to back, each row across every head of the call), against the
// reference backend with the conformance grid's tolerance (helpers/conformance.ts: per element 1e-5 + 1e-4·|ref|,
// NMSE ≤ 1e-10). The grid's calls cover 2 KV heads; these cover 21 (one group of 16 sums, one of 4 and a single one
// on AVX-512; two of 8, one of 4 and one on AVX2) whose slots lie side by side (the AVX512-FP16 tables of a row's
// records) or scrambled, over one segment, two buffers, a window (partly visible blocks) and, with 2 threads, 2100 rows
// split over the threads. ctx 150: a last block of 23 rows (the 4-row steps and a tail of 3). G = 4 and 8 (GQA: four
// query vectors per pass over a record, twice per record at G = 8) over 7 KV heads, side by side and scrambled.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createNativeBackend, probeNative } from "../src/backend/native.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend, Op, Segment } from "../src/backend/types.ts";
import type { KvDtype } from "../src/dtype.ts";
import { kvBufferBytes } from "../src/backend/layout.ts";
import { ATOL, MAX_NMSE, QDTYPES, RTOL } from "./helpers/conformance.ts";
import { randomArray } from "./helpers/random.ts";
import { onEachNativeIsa } from "./helpers/native-isa.ts";

const probe = await probeNative({});
const skip = probe.usable ? false : `skipped: native backend not usable here (${probe.reason})`;

const H = 24, J = 21; // heads per row; KV heads of the call

interface HeadsCase { dtype: KvDtype; D: number; G: number; J: number; ctx: number; scrambled: boolean; split: boolean; window: { sink: number; recent: number } | null }

/** out [1, H, D] of one decode call (query at position ctx) over rows 0..ctx of every head; heads not covered stay 0. */
async function decode(b: Backend, c: HeadsCase, seed: number): Promise<{ out: Float32Array; lse: Float32Array }> {
  const N = c.ctx + 1, D = c.D, G = c.G;
  const K = randomArray(N * H * D, seed, 1), V = randomArray(N * H * D, seed + 1, 1), q = randomArray(H * G * D, seed + 2, 3);
  const qHeads = Int32Array.from({ length: c.J }, (_, i) => (c.scrambled ? (i * 7 + 2) % H : i));
  const cut = c.split ? 100 : N; // rows [0, cut) in one pair of buffers, [cut, N) in another
  const ops: Op[] = [], segments: Segment[] = [], handles: number[] = [];
  for (const [lo, hi] of [[0, cut], [cut, N]] as const) {
    if (hi <= lo) continue;
    const bytes = kvBufferBytes("NHD", hi - lo, H, D, c.dtype), k = b.alloc(0, bytes), v = b.alloc(0, bytes);
    handles.push(k, v);
    const rows = Int32Array.from({ length: N }, (_, p) => (p >= lo && p < hi ? p - lo : -1));
    for (const [dst, src] of [[k, K], [v, V]] as const)
      ops.push({ kind: "append", dst, dtype: c.dtype, rowHeads: H, headDim: D, src, srcHeads: H, heads: Int32Array.from({ length: H }, (_, h) => h), rows });
    segments.push({ k, v, dtype: c.dtype, rowHeads: H, rowStart: 0, rowCount: hi - lo, positions: lo });
  }
  const out = new Float32Array(H * G * D), lse = new Float32Array(H * G);
  ops.push({ kind: "attend", q, T: 1, numHeads: H * G, headDim: D, group: G, qHeads, kvSlots: qHeads, segments, qPos0: c.ctx, window: c.window, out, lse });
  await b.run(0, ops);
  for (const h of handles) b.free(0, h);
  return { out, lse };
}

function compare(who: string, got: { out: Float32Array; lse: Float32Array }, want: { out: Float32Array; lse: Float32Array }) {
  let err2 = 0, ref2 = 0;
  for (let i = 0; i < want.out.length; i++) {
    const e = Math.abs(got.out[i]! - want.out[i]!);
    assert.ok(e <= ATOL + RTOL * Math.abs(want.out[i]!), `${who}: out[${i}] = ${got.out[i]}, reference ${want.out[i]}`);
    err2 += e * e;
    ref2 += want.out[i]! ** 2;
  }
  for (let h = 0; h < want.lse.length; h++) {
    const e = Math.abs(got.lse[h]! - want.lse[h]!);
    assert.ok(e <= ATOL + RTOL * Math.abs(want.lse[h]!), `${who}: lse[${h}] = ${got.lse[h]}, reference ${want.lse[h]}`);
  }
  assert.ok(err2 / ref2 <= MAX_NMSE, `${who}: NMSE ${(err2 / ref2).toExponential(2)}`);
}

test("native: int8 / int4 decode at G = 1 over 21 KV heads and G = 4, 8 over 7 (row-wise fused kernels), side-by-side and scrambled slots, pages, window, 2 threads", { skip }, async (t) => {
  const ref = new ReferenceBackend();
  const cases: HeadsCase[] = [];
  for (const dtype of QDTYPES) {
    for (const D of [128, 96, 64]) for (const scrambled of [false, true]) cases.push({ dtype, D, G: 1, J, ctx: 150, scrambled, split: D === 96, window: null });
    cases.push({ dtype, D: 128, G: 1, J, ctx: 150, scrambled: true, split: true, window: { sink: 4, recent: 70 } });
    for (const G of [4, 8]) {
      for (const scrambled of [false, true]) cases.push({ dtype, D: G === 4 ? 128 : 64, G, J: 7, ctx: 150, scrambled, split: scrambled, window: null });
      cases.push({ dtype, D: 96, G, J: 7, ctx: 150, scrambled: false, split: false, window: { sink: 4, recent: 70 } });
    }
  }
  const long: HeadsCase[] = QDTYPES.flatMap((dtype) => [1, 4].map((G) => ({ dtype, D: 64, G, J: G === 1 ? J : 7, ctx: 2100, scrambled: false, split: false, window: null })));
  const ran = await onEachNativeIsa(["avx512", "avx2"], async (isa) => {
    for (const threads of [1, 2]) {
      const b = await createNativeBackend({ threads });
      for (const [i, c] of (threads === 1 ? cases : long).entries()) {
        const who = `native ${isa} ${threads}t ${c.dtype} G=${c.G} J=${c.J} D=${c.D} ctx=${c.ctx}${c.scrambled ? " scrambled" : ""}${c.split ? " two buffers" : ""}${c.window ? " window" : ""}`;
        compare(who, await decode(b, c, 500 + i), await decode(ref, c, 500 + i));
      }
      await b.dispose();
    }
  });
  if (ran.length === 0) t.skip("neither AVX-512 nor AVX2 runs here: the row-wise fused kernels are x86 only");
});
