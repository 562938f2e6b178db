/**
 * Capacity: the largest context each engine holds in the backend's memory. Computed from how the backend's
 * allocated bytes grow per token on every shard (pages are allocated whole, so two fills a few pages apart give
 * the growth; the most loaded shard decides), and, where the memory is bounded and `demonstrate` is set, shown by
 * filling every layer until the backend answers CAPACITY.
 */
import { SyntheticInputs } from "../../demo/stack.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { resolveOptions } from "../../engine/options.ts";
import { DuoError } from "../../errors.ts";
import type { ShapeCase } from "./cases.ts";
import { FILL_CHUNK, type Mode, scheduleFor } from "./decode.ts";
import type { Harness } from "./harness.ts";
import { type BenchRecord, record } from "./record.ts";

export interface CapacityResult {
  mode: Mode;
  /** bytes per context token, summed over shards */
  bytesPerToken: number;
  /** the backend's total memory (Infinity when it reports no limit) */
  capacityBytes: number;
  /** computed largest context (Infinity when unbounded, NaN when the memory is too small to measure the growth) */
  tokens: number;
  /** filled until CAPACITY: the largest context every layer reached (null when not demonstrated) */
  filled: number | null;
}

const MAX_CONTEXT = 1 << 24;

export async function capacity(h: Harness, c: ShapeCase, dtype: KvDtype, mode: Mode, demonstrate: boolean): Promise<CapacityResult> {
  const b = h.backend, shards = Array.from({ length: b.shards }, (_, s) => s);
  const caps = shards.map((s) => b.memory(s).capacity);
  const duo = await DuoAttention.create({
    shape: c.shape, heads: scheduleFor(c, mode), sinkSize: c.sinkSize, recentSize: c.recentSize, kvDtype: dtype,
    backend: b, maxContext: MAX_CONTEXT,
  });
  // The engines' default retrieval page: two fills a whole number of pages per shard apart give the exact growth.
  const page = resolveOptions({ shape: c.shape, heads: duo.schedule }).pageSize;
  const probeA = 2 * page * b.shards, probeB = 4 * page * b.shards;
  const seq = duo.sequence();
  const L = c.shape.numLayers;
  const inputs = new SyntheticInputs(c.shape, FILL_CHUNK);
  const shortest = () => Math.min(...Array.from({ length: L }, (_, l) => seq.length(l)));
  // Every layer up to `to` tokens, `chunk` at a time (layers may start uneven after a refused call).
  const fillAll = async (to: number, chunk: number) => {
    while (shortest() < to) {
      for (let l = 0; l < L; l++) {
        const n = Math.min(chunk, to - seq.length(l));
        if (n <= 0) continue;
        const [, k, v] = inputs.chunkOf(n);
        await seq.fill(l, k, v);
      }
    }
  };
  try {
    // A budget smaller than the probes (filled anyway when demonstrating) leaves the growth unknown: NaN.
    let growth = shards.map(() => NaN), tokens = NaN;
    try {
      await fillAll(probeA, FILL_CHUNK);
      const a = shards.map((s) => b.memory(s).allocated);
      await fillAll(probeB, FILL_CHUNK);
      const grown = shards.map((s) => b.memory(s).allocated);
      growth = shards.map((s) => (grown[s]! - a[s]!) / (probeB - probeA));
      const perShard = shards.map((s) => (growth[s]! > 0 ? probeB + (caps[s]! - grown[s]!) / growth[s]! : Infinity));
      // Retrieval pages are allocated whole: only complete pages of tokens fit.
      tokens = Math.floor(Math.min(...perShard) / page) * page;
    } catch (e) {
      if (!(demonstrate && e instanceof DuoError && e.code === "CAPACITY")) throw e;
    }
    let filled: number | null = null;
    if (demonstrate && !(tokens === Infinity)) {
      h.note(`capacity ${c.shape.name} ${dtype} ${mode}: filling all ${L} layers until the backend is full (computed: ${Math.floor(tokens)} tokens)`);
      // Steps of one page, round robin over the layers, then halve the step after each refusal (a refused call changes
      // nothing) down to 64: a layer runs at most one page ahead of the others when the memory runs out (steps of
      // FILL_CHUNK let the first layers take 4 pages each that the last ones then lack).
      for (let chunk = Math.min(page, FILL_CHUNK); chunk >= 64; chunk /= 2) {
        try {
          for (;;) await fillAll(shortest() + chunk, chunk);
        } catch (e) {
          if (!(e instanceof DuoError && e.code === "CAPACITY")) throw e;
        }
      }
      filled = shortest();
    }
    return {
      mode,
      bytesPerToken: growth.reduce((x, y) => x + y, 0),
      capacityBytes: caps.reduce((x, y) => x + y, 0),
      tokens: Number.isNaN(tokens) ? NaN : Number.isFinite(tokens) ? Math.floor(tokens) : Infinity,
      filled,
    };
  } finally {
    seq.dispose();
    await duo.dispose();
  }
}

export function capacityRecord(h: Harness, c: ShapeCase, dtype: KvDtype, r: CapacityResult): BenchRecord {
  return record("capacity", h.base, {
    mode: r.mode, shape: c.shape.name, heads: c.source, kvDtype: dtype,
    context: Number.isFinite(r.tokens) ? r.tokens : null,
    filled: r.filled,
    bytesPerToken: r.bytesPerToken,
    capacityBytes: Number.isFinite(r.capacityBytes) ? r.capacityBytes : null,
  });
}

/** Per mode, the largest context that fits (filled where demonstrated, else computed); absent when unbounded. */
export function fitsUpTo(results: Partial<Record<Mode, CapacityResult>>): Partial<Record<Mode, number>> {
  const out: Partial<Record<Mode, number>> = {};
  for (const [mode, r] of Object.entries(results) as [Mode, CapacityResult][]) if (Number.isFinite(r.tokens)) out[mode] = r.filled ?? r.tokens;
  return out;
}
