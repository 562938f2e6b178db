/**
 * Chunked prefill of one layer: `context` tokens in calls of `chunk` tokens, from an empty cache, full attention
 * vs DuoAttention in one streaming-prefill mode. Every layer does the same kind of work, in proportion to its
 * retrieval heads, so the layer measured is the one whose retrieval-head count is nearest the model's mean, and
 * the theoretical ratio is computed for that layer.
 */
import type { PrefillMode } from "../../cache/layer-shard.ts";
import { SyntheticInputs } from "../../demo/stack.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { DuoError } from "../../errors.ts";
import type { ShapeCase } from "./cases.ts";
import { type Mode, scheduleFor } from "./decode.ts";
import type { Harness } from "./harness.ts";
import { measure, probe } from "./measure.ts";
import { type BenchRecord, record } from "./record.ts";
import { prefillFlop } from "./roofline.ts";

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

export async function prefillRun(h: Harness, r: PrefillRequest): Promise<BenchRecord> {
  const { c, dtype, mode, context, chunk, layer } = r;
  const s = scheduleFor(c, mode);
  const common = {
    mode, shape: c.shape.name, heads: c.source, kvDtype: dtype, prefill: r.prefill, context, chunk, layer,
    layerRetrieval: s.counts()[layer]! / s.numKvHeads,
  };
  const duo = await DuoAttention.create({
    shape: c.shape, heads: s, sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype, backend: h.backend,
    prefill: r.prefill, maxContext: context,
  });
  const seq = duo.sequence();
  const inputs = new SyntheticInputs(c.shape, Math.min(chunk, context));
  const calls = Math.ceil(context / chunk);
  const run = async () => {
    for (let start = 0; start < context; start += chunk) {
      const [q, k, v] = inputs.chunkOf(Math.min(chunk, context - start));
      await seq.attend(layer, q, k, v);
    }
  };
  h.note(`prefill ${c.shape.name} ${dtype} ${mode} (${r.prefill}) layer ${layer}: ${context} tokens in chunks of ${chunk}`);
  try {
    const probeMs = await probe(run);
    const t = await measure(`prefill ${mode} ${context}/${chunk}`, run, probeMs, {
      budgetMs: h.budgetMs, minIterations: 3, maxIterations: 20, warmup: 0, beforeEach: () => seq.reset(),
    });
    const flop = prefillFlopFor(r);
    const rec = record("prefill", h.base, {
      ...common, fits: true, calls, ms: t.ms / calls, totalMs: t.ms, kvBytes: seq.bytes().total,
      flop, gflops: flop / (t.ms * 1e6), limitGflops: h.ceilings?.gflops ?? null,
      samples: t.samples, rme: t.rme,
    });
    h.emit(rec);
    return rec;
  } catch (e) {
    if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
    const rec = record("prefill", h.base, { ...common, fits: false, reason: e.message });
    h.emit(rec);
    return rec;
  } finally {
    seq.dispose();
    await duo.dispose();
  }
}
