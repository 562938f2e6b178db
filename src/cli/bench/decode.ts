/**
 * Decode attention per token, full attention vs DuoAttention, at growing contexts. The cache of the measured
 * layers is filled with stored K/V (seq.fill), then one decode step (attend with T = 1 on every measured layer)
 * is timed; the context grows by one token per step, as in generation. With a subset of layers the time is scaled
 * to the whole model by KV bytes (per-layer work is proportional to the bytes a layer reads).
 */
import { SyntheticInputs } from "../../demo/stack.ts";
import { headBytes, type KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import type { Sequence } from "../../engine/sequence.ts";
import { DuoError } from "../../errors.ts";
import { HeadSchedule } from "../../schedule/schedule.ts";
import type { ShapeCase } from "./cases.ts";
import type { Harness } from "./harness.ts";
import { iterationsFor, measureInterleaved, probe } from "./measure.ts";
import { type BenchRecord, record } from "./record.ts";
import { type Ceilings, decodeBytes, decodeFlopPerByte, gbps, limitGbps, madWidth } from "./roofline.ts";

export type Mode = "full" | "duo";
export const MODES: readonly Mode[] = ["full", "duo"];

/** Tokens per fill call: among the fastest for the wasm backend's appends (2 workers, bf16: 256 / 1024 / 4096 /
 *  16384 tokens stored 0.46 / 1.0–1.2 / 1.1 / 0.64 GB/s), with small host buffers. */
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
    bytesPerElem: headBytes(dtype, c.shape.headDim) / c.shape.headDim, sinkSize: c.sinkSize, recentSize: c.recentSize,
  });
}

/**
 * KV bytes on the critical path of one decode token, all layers: a layer's shards run in parallel and its time is
 * its busiest shard's, so Σ over layers of the largest per-shard bytes. Full ÷ Duo of this is the speedup the head
 * sharding allows; below the plain byte ratio when layers have retrieval-head counts that do not split evenly.
 */
export function criticalBytes(placement: DuoAttention["placement"], c: ShapeCase, dtype: KvDtype, context: number): number {
  const perHeadToken = 2 * headBytes(dtype, c.shape.headDim), ring = Math.min(context, c.sinkSize + c.recentSize);
  // Retrieval pages are striped over the shards (each holds 1/pageStride of every retrieval head); rings are whole.
  return placement.reduce((sum, shards) => sum + Math.max(...shards.map((h) => ((h.retrieval.length * context) / h.pageStride + h.streaming.length * ring) * perHeadToken)), 0);
}

/** The KV read rate (GB/s) decode of this shape and dtype can reach: the read bandwidth, or the multiply-add rate of
 *  the kernels that run (the measured 4-lane rate × madWidth) over decode's FLOP per KV byte, whichever is lower. */
function decodeLimit(ceilings: Ceilings, c: ShapeCase, dtype: KvDtype): number {
  const G = c.shape.numHeads / c.shape.numKvHeads, D = c.shape.headDim;
  const gflops = ceilings.gflops * madWidth(ceilings.kernels, dtype, G, D);
  return limitGbps({ readGBps: ceilings.readGBps, gflops }, decodeFlopPerByte(G, headBytes(dtype, D) / D));
}

export interface DecodeRequest {
  c: ShapeCase;
  dtype: KvDtype;
  /** measured in alternation at each context where their caches fit in memory together, else one at a time */
  modes: readonly Mode[];
  contexts: readonly number[];
  layers: readonly number[];
  /** per mode, the largest context the whole model fits in the backend's memory (from the capacity step) */
  fitsUpTo?: Partial<Record<Mode, number>>;
}

interface Lane {
  mode: Mode;
  engine: DuoAttention;
  seq: Sequence;
  /** why this mode stopped fitting, once it has */
  gone: string | null;
}

/**
 * Decode at each context for each mode: one record per (mode, context), measured or "does not fit". Where the
 * caches of all modes fit in the backend together, their steps are timed in alternation (measureInterleaved), so
 * load from other processes falls on both alike; otherwise each is measured alone with the others' caches emptied.
 */
export async function decodeSeries(h: Harness, r: DecodeRequest): Promise<BenchRecord[]> {
  const { c, dtype, layers } = r;
  const contexts = [...r.contexts].sort((a, b) => a - b);
  const out: BenchRecord[] = [];
  const common = (mode: Mode) => ({
    shape: c.shape.name, heads: c.source, sparsity: mode === "full" ? 0 : c.schedule.sparsity,
    retrieval: mode === "full" ? 1 : 1 - c.schedule.sparsity, kvDtype: dtype, layers: layers.length, mode,
  });
  const emit = (rec: BenchRecord) => {
    out.push(rec);
    h.emit(rec);
  };
  const noFit = (lane: Lane, context: number, reason: string) =>
    emit(record("decode", h.base, { ...common(lane.mode), context, fits: false, reason, kvBytes: decodeBytesFor(c, lane.mode, dtype, context) }));
  const memory = Array.from({ length: h.backend.shards }, (_, s) => h.backend.memory(s).capacity).reduce((a, b) => a + b, 0);
  const inputs = new SyntheticInputs(c.shape, FILL_CHUNK);
  const lanes: Lane[] = [];
  try {
    for (const mode of r.modes) {
      const engine = await DuoAttention.create({
        shape: c.shape, heads: scheduleFor(c, mode), sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype,
        backend: h.backend, maxContext: contexts[contexts.length - 1]! + STEP_SLACK,
      });
      lanes.push({ mode, engine, seq: engine.sequence(), gone: null });
    }
    for (const context of contexts) {
      const live = lanes.filter((lane) => {
        const limit = r.fitsUpTo?.[lane.mode];
        if (!lane.gone && limit !== undefined && context > limit) {
          lane.gone = `the whole model fits ${limit} tokens in the ${h.backend.name} backend's memory`;
          lane.seq.reset();
        }
        if (lane.gone) noFit(lane, context, lane.gone);
        return !lane.gone;
      });
      // Together if the measured layers' caches (with room for the timed steps and a page each) fit with a margin.
      const need = live.reduce((a, lane) => a + decodeBytesFor(c, lane.mode, dtype, context + 2 * STEP_SLACK, layers), 0);
      let groups = live.length > 1 && need <= 0.9 * memory ? [live] : live.map((lane) => [lane]);
      for (let g = 0; g < groups.length; g++) {
        const group = groups[g]!;
        for (const lane of lanes) if (!group.includes(lane)) lane.seq.reset(); // others refill later
        try {
          await measureGroup(h, r, group, context, inputs, emit, common);
        } catch (e) {
          if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
          if (group.length > 1) {
            // They did not fit together after all: one at a time for this context.
            groups = [...groups.slice(0, g + 1), ...group.map((lane) => [lane]), ...groups.slice(g + 1)];
            continue;
          }
          group[0]!.gone = e.message;
          group[0]!.seq.reset();
          noFit(group[0]!, context, e.message);
        }
      }
    }
  } finally {
    for (const lane of lanes) {
      lane.seq.dispose();
      await lane.engine.dispose();
    }
  }
  return out;
}

/** Fill every lane of `group` to `context` on the measured layers, then time their decode steps in alternation. */
async function measureGroup(
  h: Harness, r: DecodeRequest, group: readonly Lane[], context: number, inputs: SyntheticInputs,
  emit: (rec: BenchRecord) => void, common: (mode: Mode) => Record<string, unknown>,
): Promise<void> {
  const { c, dtype, layers } = r;
  for (const lane of group) {
    h.note(`decode ${c.shape.name} ${dtype} ${lane.mode} @ ${context}: filling ${layers.length} layer(s)`);
    while (lane.seq.length(layers[0]!) < context) {
      const [, k, v] = inputs.chunkOf(Math.min(FILL_CHUNK, context - lane.seq.length(layers[0]!)));
      for (const l of layers) await lane.seq.fill(l, k, v);
    }
  }
  const steps = group.map((lane) => async () => {
    for (const l of layers) await lane.seq.attend(l, inputs.q1, inputs.k1, inputs.v1);
  });
  h.note(`decode ${c.shape.name} ${dtype} @ ${context}: timing ${group.map((lane) => lane.mode).join(" / ")}`);
  let probeMs = 0;
  for (const step of steps) probeMs += (await probe(step)) + (await probe(step)); // untimed warm-up calls
  // Step times vary by ±30% on a VM even when it is quiet: take the median of at least 10 rounds.
  const rounds = iterationsFor(probeMs / 2, { budgetMs: h.budgetMs * group.length, minIterations: 10, maxIterations: STEP_SLACK / 4 });
  const timings = await measureInterleaved(group.map((lane, i) => ({ name: `decode ${lane.mode} ${context}`, fn: steps[i]! })), rounds);
  group.forEach((lane, i) => {
    const t = timings[i]!;
    // The mean context over the timed steps (the cache grew by one token per step).
    const meanContext = lane.seq.length(layers[0]!) - t.samples / 2;
    const measuredBytes = decodeBytesFor(c, lane.mode, dtype, meanContext, layers);
    const modelBytes = decodeBytesFor(c, lane.mode, dtype, meanContext);
    emit(record("decode", h.base, {
      ...common(lane.mode), context, fits: true, together: group.length > 1,
      ms: t.ms * (modelBytes / measuredBytes),
      msMeasured: t.ms,
      kvBytes: modelBytes,
      criticalBytes: criticalBytes(lane.engine.placement, c, dtype, meanContext),
      gbps: gbps(measuredBytes, t.ms),
      limitGbps: h.ceilings ? decodeLimit(h.ceilings, c, dtype) : null,
      // What the backend reserved (whole pages, rings), scaled like the time when only some layers are filled.
      allocated: lane.seq.bytes().allocated * (modelBytes / measuredBytes),
      samples: t.samples,
    }));
  });
}
