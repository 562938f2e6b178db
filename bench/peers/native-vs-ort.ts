/**
 * The native peer comparison of issue 16: one layer of decode attention on the native backend, full attention and
 * DuoAttention, against onnxruntime-node's GroupQueryAttention (its native CPU kernels, intraOpNumThreads = our
 * threads) on the same shape, the same cached K/V and the same query, timed in alternation (measureInterleaved) so
 * that load from other processes falls on all three alike. Targets: native full ≥ 1.5× ORT; Duo's speedup over
 * full ≥ 0.9 × the ratio of KV bytes they read.
 *
 * ORT's API is stateless: the past K/V go in (BNSH) and the present K/V come out, so ORT's copy of its cache is
 * part of its time (that is what using it for decode costs). Ours appends the token to a paged cache in place.
 * Before timing, the first step's outputs of native full and ORT are compared (same inputs, so they must agree to
 * the storage dtype's rounding): a peer computing something else would make the ratio meaningless.
 */
import { createNativeBackend } from "../../src/backend/native.ts";
import { randomData } from "../../src/demo/stack.ts";
import { headBytes } from "../../src/dtype.ts";
import { DuoAttention } from "../../src/engine/duo.ts";
import type { Sequence } from "../../src/engine/sequence.ts";
import { HeadSchedule } from "../../src/schedule/schedule.ts";
import { iterationsFor, measureInterleaved, probe } from "../../src/cli/bench/measure.ts";
import { decodeBytes } from "../../src/cli/bench/roofline.ts";
import type { ModelShape } from "../../src/shape.ts";
import { loadOrtPeer } from "./ort.ts";

/** The KV dtypes both sides store: ORT's CPU GQA has f32 and f16 (no bf16). */
export type PeerDtype = "f32" | "f16";

export interface NativeOrtRequest {
  /** the model shape; one layer of it is measured */
  shape: ModelShape;
  /** the measured layer's heads: true = retrieval (full cache), false = streaming (sinks + recent) */
  retrieval: readonly boolean[];
  sinkSize: number;
  recentSize: number;
  contexts: readonly number[];
  threads: readonly number[];
  dtype: PeerDtype;
  /** wall-time budget per context and thread count, ms (rounds are at least 20) */
  budgetMs: number;
  /** progress lines */
  note?: (text: string) => void;
  /** each row as soon as it is measured */
  onRow?: (row: NativeOrtRow) => void;
}

export interface NativeOrtRow {
  threads: number;
  context: number;
  dtype: PeerDtype;
  ortVersion: string;
  /** medians over the alternating rounds, one layer, ms */
  fullMs: number;
  duoMs: number;
  ortMs: number;
  /** fastest round of each, ms: what the hardware does when no other process interferes */
  fullMinMs: number;
  duoMinMs: number;
  ortMinMs: number;
  rounds: number;
  /** ortMs / fullMs (target ≥ 1.5) */
  fullVsOrt: number;
  /** fullMs / duoMs */
  duoSpeedup: number;
  /** KV bytes full reads ÷ KV bytes Duo reads, this layer at this context */
  byteRatio: number;
  /** duoSpeedup / byteRatio (target ≥ 0.9) */
  ofByteRatio: number;
  /** the same two ratios from the fastest rounds */
  fullVsOrtBest: number;
  ofByteRatioBest: number;
  /** max |native full − ORT| over the first step's output */
  maxAbsDiff: number;
}

/** Agreement required of the first step's outputs (values in [-1, 1]): f16 storage rounds at 2^-11 relative. */
const TOLERANCE: Record<PeerDtype, number> = { f32: 1e-4, f16: 5e-3 };
/** Tokens per fill call. */
const CHUNK = 1024;

/** Measure every (threads, context); one row each. Throws when native or onnxruntime-node cannot run here. */
export async function compareNativeOrt(r: NativeOrtRequest): Promise<NativeOrtRow[]> {
  const { shape, dtype } = r;
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
  if (r.retrieval.length !== Hkv) throw new Error(`retrieval has ${r.retrieval.length} entries, want one per KV head (${Hkv})`);
  const note = r.note ?? (() => {});
  const layer = 0;
  // Schedules for the whole model; only layer 0 is filled and timed (its heads as `retrieval` says).
  const fullHeads = HeadSchedule.full(shape.numLayers, Hkv);
  const mask = Array.from({ length: shape.numLayers }, () => [...r.retrieval]);
  const duoSchedule = HeadSchedule.fromMask(mask);
  const rows: NativeOrtRow[] = [];
  const elem = headBytes(dtype, D) / D;
  const bytes = (retrievalHeads: number, context: number) =>
    decodeBytes({ retrievalHeads, streamingHeads: Hkv - retrievalHeads, context, headDim: D, bytesPerElem: elem, sinkSize: r.sinkSize, recentSize: r.recentSize });
  const nRet = r.retrieval.filter(Boolean).length;
  const q = randomData(Hq * D, 7), k1 = randomData(Hkv * D, 8), v1 = randomData(Hkv * D, 9);

  for (const threads of r.threads) {
    const backend = await createNativeBackend({ threads });
    const peer = await loadOrtPeer("onnxruntime-node", shape, threads, dtype === "f16" ? "float16" : "float32");
    try {
      for (const context of r.contexts) {
        note(`native vs onnxruntime-node: ${threads} thread(s), ${dtype}, ${context} tokens: filling`);
        // The cached tokens, token-major [context, Hkv, D] for our fill, head-major [Hkv, context, D] (BNSH) for ORT.
        const k = randomData(context * Hkv * D, 1), v = randomData(context * Hkv * D, 2);
        const engines: DuoAttention[] = [], seqs: Sequence[] = [];
        for (const heads of [fullHeads, duoSchedule]) {
          const e = await DuoAttention.create({ shape, heads, sinkSize: r.sinkSize, recentSize: r.recentSize, kvDtype: dtype, backend, maxContext: context + 4096 });
          const s = e.sequence();
          for (let t = 0; t < context; t += CHUNK) {
            const end = Math.min(context, t + CHUNK);
            await s.fill(layer, k.subarray(t * Hkv * D, end * Hkv * D), v.subarray(t * Hkv * D, end * Hkv * D));
          }
          engines.push(e), seqs.push(s);
        }
        const headMajor = (a: Float32Array) => {
          const out = new Float32Array(a.length);
          for (let t = 0; t < context; t++) for (let h = 0; h < Hkv; h++) out.set(a.subarray((t * Hkv + h) * D, (t * Hkv + h + 1) * D), (h * context + t) * D);
          return out;
        };
        const past = new Map([[1, headMajor(k)], [2, headMajor(v)], [12, k1], [13, v1]]);
        const ort = peer.decodeStep(context, (a, seed) => a.set(past.get(seed)!), q);
        try {
          // Same cache + the same new token on both sides: the outputs must agree.
          const want = await seqs[0]!.attend(layer, q, k1, v1), got = await ort.run();
          let maxAbsDiff = 0;
          for (let i = 0; i < want.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(want[i]! - got[i]!));
          if (!(maxAbsDiff <= TOLERANCE[dtype])) throw new Error(`native full and onnxruntime-node disagree at ${context} tokens: max |diff| ${maxAbsDiff} > ${TOLERANCE[dtype]}`);
          await seqs[1]!.attend(layer, q, k1, v1);
          const tasks = [
            { name: "native full", fn: () => seqs[0]!.attend(layer, q, k1, v1) },
            { name: "native duo", fn: () => seqs[1]!.attend(layer, q, k1, v1) },
            { name: "onnxruntime-node", fn: () => ort.run() },
          ];
          let probeMs = 0;
          for (const t of tasks) probeMs += (await probe(t.fn)) + (await probe(t.fn));
          const rounds = iterationsFor(probeMs / 2, { budgetMs: r.budgetMs, minIterations: 20, maxIterations: 1000 });
          note(`native vs onnxruntime-node: ${threads} thread(s), ${dtype}, ${context} tokens: ${rounds} rounds`);
          const [full, duo, o] = await measureInterleaved(tasks, rounds);
          // Contexts moved by one token per step; the byte ratio at the start is within 1/context of the mean's.
          const byteRatio = bytes(Hkv, context) / bytes(nRet, context);
          const row: NativeOrtRow = {
            threads, context, dtype, ortVersion: peer.version, fullMs: full!.ms, duoMs: duo!.ms, ortMs: o!.ms,
            fullMinMs: full!.min, duoMinMs: duo!.min, ortMinMs: o!.min, rounds,
            fullVsOrt: o!.ms / full!.ms, duoSpeedup: full!.ms / duo!.ms, byteRatio, ofByteRatio: full!.ms / duo!.ms / byteRatio,
            fullVsOrtBest: o!.min / full!.min, ofByteRatioBest: full!.min / duo!.min / byteRatio, maxAbsDiff,
          };
          rows.push(row);
          r.onRow?.(row);
        } finally {
          for (const s of seqs) s.dispose();
          for (const e of engines) await e.dispose();
        }
      }
    } finally {
      await peer.release();
      await backend.dispose();
    }
  }
  return rows;
}

/** The row as the lines `bench/peers/native-ort.ts` prints. */
export function formatRow(row: NativeOrtRow): string[] {
  const f = (x: number) => x.toFixed(2);
  return [
    `${row.threads} thread(s), ${row.dtype} KV, ${row.context} tokens, one layer (median of ${row.rounds} alternating rounds): ` +
      `native full ${f(row.fullMs)} ms, native duo ${f(row.duoMs)} ms, onnxruntime-node ${row.ortVersion} GroupQueryAttention ${f(row.ortMs)} ms ` +
      `(outputs agree to ${row.maxAbsDiff.toExponential(1)})`,
    `  native full vs onnxruntime-node: ${f(row.fullVsOrt)}x (target >= 1.5x); fastest rounds ${f(row.fullVsOrtBest)}x`,
    `  duo vs full: ${f(row.duoSpeedup)}x, KV-byte ratio ${f(row.byteRatio)}x: ${f(row.ofByteRatio)} of it (target >= 0.9); fastest rounds ${f(row.ofByteRatioBest)}`,
  ];
}
