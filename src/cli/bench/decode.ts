/**
 * Decode attention per token, full attention vs DuoAttention, at growing contexts. The cache of the measured
 * layers is filled with stored K/V (seq.fill), then one decode step (attend with T = 1 on every measured layer)
 * is timed; the context grows by one token per step, as in generation. With a subset of layers the time is scaled
 * to the whole model by KV bytes (per-layer work is proportional to the bytes a layer reads).
 */
import { SyntheticInputs } from "../../demo/stack.ts";
import { bytesPerElement, type KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { DuoError } from "../../errors.ts";
import { HeadSchedule } from "../../schedule/schedule.ts";
import type { ShapeCase } from "./cases.ts";
import type { Harness } from "./harness.ts";
import { measure, probe } from "./measure.ts";
import { type BenchRecord, record } from "./record.ts";
import { decodeBytes, decodeFlopPerByte, gbps, limitGbps } from "./roofline.ts";

export type Mode = "full" | "duo";
export const MODES: readonly Mode[] = ["full", "duo"];

/** Tokens per fill call: the fastest size for the wasm backend's appends (measured: 256 → 1024 → 4096 tokens
 *  gave 0.14 / 0.29 / 0.20 GB/s stored), and small host buffers. */
export const FILL_CHUNK = 1024;
/** Room past the largest context for the timed steps (iterations are capped well below this). */
const STEP_SLACK = 1024;

export function scheduleFor(c: ShapeCase, mode: Mode): HeadSchedule {
  return mode === "full" ? HeadSchedule.full(c.shape.numLayers, c.shape.numKvHeads) : c.schedule;
}

/** KV bytes one decode token reads over `layers` (all layers when omitted) at `context`. */
export function decodeBytesFor(c: ShapeCase, mode: Mode, dtype: KvDtype, context: number, layers?: readonly number[]): number {
  const s = scheduleFor(c, mode), counts = s.counts();
  const ls = layers ?? counts.map((_, l) => l);
  const ret = ls.reduce((a, l) => a + counts[l]!, 0);
  return decodeBytes({
    retrievalHeads: ret, streamingHeads: ls.length * s.numKvHeads - ret, context, headDim: c.shape.headDim,
    bytesPerElem: bytesPerElement(dtype), sinkSize: c.sinkSize, recentSize: c.recentSize,
  });
}

/**
 * KV bytes on the critical path of one decode token, all layers: a layer's shards run in parallel and its time is
 * its busiest shard's, so Σ over layers of the largest per-shard bytes. Full ÷ Duo of this is the speedup the head
 * sharding allows; below the plain byte ratio when layers have retrieval-head counts that do not split evenly.
 */
export function criticalBytes(plan: DuoAttention["plan"], c: ShapeCase, dtype: KvDtype, context: number): number {
  const perHeadToken = 2 * c.shape.headDim * bytesPerElement(dtype), ring = Math.min(context, c.sinkSize + c.recentSize);
  return plan.reduce((sum, shards) => sum + Math.max(...shards.map((h) => (h.retrieval.length * context + h.streaming.length * ring) * perHeadToken)), 0);
}

export interface DecodeRequest {
  c: ShapeCase;
  dtype: KvDtype;
  mode: Mode;
  contexts: readonly number[];
  layers: readonly number[];
  /** the largest context the whole model fits in the backend's memory (from the capacity step), if known */
  fitsUpTo?: number;
}

/** One record per context: measured, or "does not fit". */
export async function decodeSeries(h: Harness, r: DecodeRequest): Promise<BenchRecord[]> {
  const { c, dtype, mode, layers } = r;
  const contexts = [...r.contexts].sort((a, b) => a - b);
  const out: BenchRecord[] = [];
  const common = {
    shape: c.shape.name, heads: c.source, sparsity: mode === "full" ? 0 : c.schedule.sparsity,
    retrieval: mode === "full" ? 1 : 1 - c.schedule.sparsity, kvDtype: dtype, layers: layers.length, mode,
  };
  const noFit = (context: number, reason: string) => {
    const rec = record("decode", h.base, { ...common, context, fits: false, reason, kvBytes: decodeBytesFor(c, mode, dtype, context) });
    out.push(rec);
    h.emit(rec);
  };
  const duo = await DuoAttention.create({
    shape: c.shape, heads: scheduleFor(c, mode), sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype,
    backend: h.backend, maxContext: contexts[contexts.length - 1]! + STEP_SLACK,
  });
  const seq = duo.sequence();
  const inputs = new SyntheticInputs(c.shape, FILL_CHUNK);
  let full = false;
  try {
    for (const context of contexts) {
      if (full) {
        noFit(context, "out of memory at a smaller context");
        continue;
      }
      if (r.fitsUpTo !== undefined && context > r.fitsUpTo) {
        noFit(context, `the whole model fits ${r.fitsUpTo} tokens in the ${h.backend.name} backend's memory`);
        continue;
      }
      h.note(`decode ${c.shape.name} ${dtype} ${mode} @ ${context}: filling ${layers.length} layer(s)`);
      const step = async () => {
        for (const l of layers) await seq.attend(l, inputs.q1, inputs.k1, inputs.v1);
      };
      let timing;
      try {
        while (seq.length(layers[0]!) < context) {
          const [, k, v] = inputs.chunkOf(Math.min(FILL_CHUNK, context - seq.length(layers[0]!)));
          for (const l of layers) await seq.fill(l, k, v);
        }
        const probeMs = await probe(step);
        timing = await measure(`decode ${mode} ${context}`, step, probeMs, { budgetMs: h.budgetMs, maxIterations: STEP_SLACK / 4 });
      } catch (e) {
        if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
        full = true;
        noFit(context, e.message);
        seq.reset(); // give the memory back for the other engines
        continue;
      }
      // The mean context over the timed steps (the cache grew by one token per step).
      const meanContext = seq.length(layers[0]!) - timing.samples / 2;
      const measuredBytes = decodeBytesFor(c, mode, dtype, meanContext, layers);
      const modelBytes = decodeBytesFor(c, mode, dtype, meanContext);
      const rec = record("decode", h.base, {
        ...common, context, fits: true,
        ms: timing.ms * (modelBytes / measuredBytes),
        msMeasured: timing.ms,
        kvBytes: modelBytes,
        criticalBytes: criticalBytes(duo.plan, c, dtype, meanContext),
        gbps: gbps(measuredBytes, timing.ms),
        limitGbps: h.ceilings ? limitGbps(h.ceilings, decodeFlopPerByte(c.shape.numHeads / c.shape.numKvHeads, bytesPerElement(dtype))) : null,
        // What the backend reserved (whole pages, rings), scaled like the time when only some layers are filled.
        allocated: seq.bytes().allocated * (modelBytes / measuredBytes),
        samples: timing.samples, rme: timing.rme,
      });
      out.push(rec);
      h.emit(rec);
    }
  } finally {
    seq.dispose();
    await duo.dispose();
  }
  return out;
}
