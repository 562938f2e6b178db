/**
 * Chunked prefill of one layer: `context` tokens in calls of `chunk` tokens, from an empty cache, full attention
 * vs DuoAttention in both streaming-prefill modes, timed in alternation. Every layer does the same kind of work,
 * in proportion to its retrieval heads, so the layer measured is the one whose retrieval-head count is nearest the
 * model's mean, and the theoretical ratio is computed for that layer.
 */
import type { PrefillMode } from "../../cache/layer-shard.ts";
import { SyntheticInputs } from "../../demo/stack.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { DuoError } from "../../errors.ts";
import type { ShapeCase } from "./cases.ts";
import { type Mode, scheduleFor } from "./decode.ts";
import type { Harness } from "./harness.ts";
import { measureLockstep, probe } from "./measure.ts";
import { type BenchRecord, record } from "./record.ts";
import { prefillFlop, prefillMadWidth } from "./roofline.ts";

export interface PrefillRequest {
  c: ShapeCase;
  dtype: KvDtype;
  mode: Mode;
  prefill: PrefillMode;
  context: number;
  chunk: number;
  layer: number;
}

/** FLOP of the request's prefill on its layer. */
export function prefillFlopFor(r: Omit<PrefillRequest, "dtype">): number {
  const s = scheduleFor(r.c, r.mode), ret = s.counts()[r.layer]!;
  return prefillFlop({
    context: r.context, chunk: r.chunk, retrieval: ret, streaming: s.numKvHeads - ret, group: r.c.shape.numHeads / r.c.shape.numKvHeads,
    headDim: r.c.shape.headDim, mode: r.prefill, sinkSize: r.c.sinkSize, recentSize: r.c.recentSize,
  });
}

export interface PrefillVariant {
  mode: Mode;
  prefill: PrefillMode;
}

/** Full attention and both DuoAttention prefill modes: what `duo bench prefill` compares at each size. */
export const PREFILL_VARIANTS: readonly PrefillVariant[] = [
  { mode: "full", prefill: "upstream" }, { mode: "duo", prefill: "upstream" }, { mode: "duo", prefill: "window" },
];

/**
 * Prefill `context` tokens in chunks of `chunk` on `layer` with each variant, timed call by call in lockstep
 * (measureLockstep): one record per variant.
 */
export async function prefillGroup(
  h: Harness, r: Omit<PrefillRequest, "mode" | "prefill">, variants: readonly PrefillVariant[] = PREFILL_VARIANTS,
): Promise<BenchRecord[]> {
  const { c, dtype, context, chunk, layer } = r;
  const calls = Math.ceil(context / chunk);
  const inputs = new SyntheticInputs(c.shape, Math.min(chunk, context));
  const engines = await Promise.all(variants.map((v) => DuoAttention.create({
    shape: c.shape, heads: scheduleFor(c, v.mode), sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype,
    backend: h.backend, prefill: v.prefill, maxContext: context,
  })));
  const seqs = engines.map((e) => e.sequence());
  const call = async (i: number, c: number) => {
    const [q, k, v] = inputs.chunkOf(Math.min(chunk, context - c * chunk));
    await seqs[i]!.attend(layer, q, k, v);
  };
  const run = (i: number) => async () => {
    for (let c = 0; c < calls; c++) await call(i, c);
  };
  const records = variants.map((v) => {
    const s = scheduleFor(c, v.mode);
    return record("prefill", h.base, {
      mode: v.mode, shape: c.shape.name, heads: c.source, kvDtype: dtype, prefill: v.prefill, context, chunk, layer,
      layerRetrieval: s.counts()[layer]! / s.numKvHeads, calls,
    });
  });
  try {
    h.note(`prefill ${c.shape.name} ${dtype} layer ${layer}: ${context} tokens in chunks of ${chunk}, ${variants.map((v) => v.mode === "full" ? "full" : `duo ${v.prefill}`).join(" / ")}`);
    let probeMs = 0;
    for (const [i] of variants.entries()) probeMs += await probe(run(i));
    // Short prefills are noisy: at least 3 rounds; 2 for those past 30 s a round (the probe was a warm-up).
    const rounds = probeMs > 30_000 ? 2 : Math.max(3, Math.min(10, Math.floor((h.budgetMs * variants.length) / probeMs)));
    const timings = await measureLockstep(variants.map((_, i) => ({
      name: `prefill ${i}`, steps: calls, step: (c: number) => call(i, c), reset: () => seqs[i]!.reset(),
    })), rounds);
    timings.forEach((t, i) => {
      const flop = prefillFlopFor({ ...r, ...variants[i]! });
      Object.assign(records[i]!, {
        fits: true, ms: t.ms / calls, totalMs: t.ms, kvBytes: seqs[i]!.bytes().total,
        flop, gflops: flop / (t.ms * 1e6), limitGflops: h.ceilings ? h.ceilings.gflops * prefillMadWidth(h.ceilings.kernels, c.shape.headDim) : null, samples: t.samples,
      });
    });
  } catch (e) {
    if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
    for (const rec of records) Object.assign(rec, { fits: false, reason: e.message });
  } finally {
    for (const s of seqs) s.dispose();
    for (const e of engines) await e.dispose();
  }
  for (const rec of records) h.emit(rec);
  return records;
}
