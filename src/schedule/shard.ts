/**
 * How a layer's KV heads are spread over the backend's shards (wasm workers; CUDA and the reference backend have
 * one shard). Layers run one after another and the shards of a layer in parallel, so each layer must be balanced
 * on its own, and memory must be balanced over the whole model:
 *  - retrieval heads: every shard holds every retrieval head of the layer, but only some of its pages — page j lives
 *    on shard j mod shards (split-KV across workers). Each shard attends over its pages; the engine merges the
 *    partial results by log-sum-exp. Work and memory split evenly whatever the layer's retrieval count (1 of 8, or
 *    8 of 8), and one long head is spread over every core.
 *  - streaming heads (a fixed S + R ring each) are dealt out whole, to the shard with the fewest streaming heads so
 *    far in this layer, ties to the one with the fewest over all layers so far, then the lower index.
 */
import type { HeadSchedule } from "./schedule.ts";

export interface ShardHeads {
  /** the layer's retrieval KV heads (original indices, ascending); this shard holds pages j ≡ pageOffset mod pageStride */
  retrieval: Int32Array;
  /** streaming KV heads (original indices, ascending) whose whole ring lives on this shard */
  streaming: Int32Array;
  /** how many shards share the retrieval pages (1 = this shard holds them all) */
  pageStride: number;
  /** which pages are this shard's */
  pageOffset: number;
}

/** [layer][shard] -> the heads and pages that shard holds. */
export function shardHeads(schedule: HeadSchedule, shards: number): ShardHeads[][] {
  const total = new Int32Array(shards);
  return schedule.mask.map((row, l) => {
    const inLayer = new Int32Array(shards);
    const owner = new Int32Array(row.length).fill(-1);
    for (const h of schedule.streaming[l]!) {
      let best = 0;
      for (let s = 1; s < shards; s++) {
        if (inLayer[s]! < inLayer[best]! || (inLayer[s] === inLayer[best] && total[s]! < total[best]!)) best = s;
      }
      owner[h] = best;
      inLayer[best]!++;
      total[best]!++;
    }
    return Array.from({ length: shards }, (_, s) => ({
      retrieval: schedule.retrieval[l]!,
      streaming: Int32Array.from(row.flatMap((_, h) => (owner[h] === s ? [h] : []))),
      pageStride: shards,
      pageOffset: s,
    }));
  });
}
