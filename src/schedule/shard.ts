/**
 * Head sharding: which KV heads of each layer live on which backend shard (a wasm worker; CUDA and the reference
 * backend have one shard). Layers run one after another and the shards of a layer run in parallel, so each layer is
 * balanced on its own: longest-processing-time greedy over the layer's heads, a retrieval head costing ∝ the
 * context it will hold and a streaming head ∝ S + R (its ring). Deterministic: ties go to the lower shard.
 */
import type { HeadSchedule } from "./schedule.ts";

export interface ShardHeads {
  /** retrieval KV heads (original indices, ascending) on this shard */
  retrieval: Int32Array;
  /** streaming KV heads (original indices, ascending) on this shard */
  streaming: Int32Array;
}

/** [layer][shard] -> heads. `retrievalCost` and `streamingCost` are per-head work estimates (e.g. T and S+R). */
export function shardHeads(
  schedule: HeadSchedule,
  shards: number,
  retrievalCost: number,
  streamingCost: number,
): ShardHeads[][] {
  return schedule.mask.map((row) => {
    const load = new Float64Array(shards);
    const owner = new Int32Array(row.length);
    // Most expensive first; within a class the original order, so results are stable.
    const order = row.map((_, h) => h).sort((a, b) => Number(row[b]) - Number(row[a]) || a - b);
    for (const h of order) {
      let best = 0;
      for (let s = 1; s < shards; s++) if (load[s]! < load[best]!) best = s;
      owner[h] = best;
      load[best]! += row[h] ? retrievalCost : streamingCost;
    }
    return Array.from({ length: shards }, (_, s) => ({
      retrieval: Int32Array.from(row.flatMap((r, h) => (r && owner[h] === s ? [h] : []))),
      streaming: Int32Array.from(row.flatMap((r, h) => (!r && owner[h] === s ? [h] : []))),
    }));
  });
}
