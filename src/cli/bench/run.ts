/** `duo bench decode | prefill | all`: the measurements, in order, for every requested shape and KV dtype. */
import { PREFILL_MODES } from "../../engine/options.ts";
import type { ShapeCase } from "./cases.ts";
import { spreadLayers, typicalLayer } from "./cases.ts";
import { capacity, capacityRecord, type CapacityResult, fitsUpTo } from "./capacity.ts";
import { decodeSeries, MODES } from "./decode.ts";
import { type Harness, warmUp } from "./harness.ts";
import type { BenchOptions } from "./options.ts";
import { peerSeries } from "./peers.ts";
import { prefillGroup } from "./prefill.ts";

export const DEFAULT_DECODE_CONTEXTS = [8192, 16384, 32768, 65536];
export const DEFAULT_PREFILL_CONTEXTS = [8192];
export const DEFAULT_CHUNKS = [1024];
/** Peers hold the whole f32/f16 cache of a layer in host memory and copy it per call; keep them to moderate sizes. */
export const PEER_MAX_CONTEXT = 16384;

/** Run the measurements; records go to h.emit. Returns "peer: reason" lines for peers that could not run. */
export async function runBench(h: Harness, cases: readonly ShapeCase[], o: BenchOptions): Promise<string[]> {
  const skipped: string[] = [];
  const decode = o.what === "decode" || o.what === "all", prefill = o.what === "prefill" || o.what === "all";
  const decodeContexts = (o.what === "prefill" ? undefined : o.contexts) ?? DEFAULT_DECODE_CONTEXTS;
  const prefillContexts = (o.what === "prefill" ? o.contexts : o.prefillContexts) ?? DEFAULT_PREFILL_CONTEXTS;
  const bounded = Array.from({ length: h.backend.shards }, (_, s) => h.backend.memory(s).capacity).every(Number.isFinite);
  for (const c of cases) {
    for (const [di, dtype] of o.dtypes.entries()) {
      await warmUp(h.backend, c, dtype, prefill ? PREFILL_MODES : ["upstream"]);
      if (decode) {
        const fits: Partial<Record<string, CapacityResult>> = {};
        for (const mode of MODES) {
          fits[mode] = await capacity(h, c, dtype, mode, bounded && o.capacity === "fill");
          h.emit(capacityRecord(h, c, dtype, fits[mode]!));
        }
        const layers = spreadLayers(c.shape.numLayers, o.layers ?? c.shape.numLayers);
        await decodeSeries(h, { c, dtype, modes: MODES, contexts: decodeContexts, layers, fitsUpTo: fitsUpTo(fits) });
        if (o.peers && di === 0) {
          await peerSeries(h, c, dtype, decodeContexts.filter((t) => t <= PEER_MAX_CONTEXT), skipped);
        }
      }
      if (prefill) {
        const layer = typicalLayer(c.schedule);
        for (const context of prefillContexts) {
          for (const chunk of o.chunks ?? DEFAULT_CHUNKS) await prefillGroup(h, { c, dtype, context, chunk, layer });
        }
      }
    }
  }
  return skipped;
}
