/**
 * The split KV cache of one sequence: for every layer, its heads and pages spread over the backend's shards
 * (src/schedule/shard.ts), each part a LayerShard. Layers advance independently: positions of a call continue
 * from that layer's own length. When the retrieval pages of a layer are striped over several shards, each shard
 * attends into a partial (out, lse) and `finish` merges them (src/cache/merge.ts).
 */
import { headBytes } from "../dtype.ts";
import type { Backend, Op, OpTensor } from "../backend/types.ts";
import type { ShardHeads } from "../schedule/shard.ts";
import { type CacheGeometry, type CallTensors, LayerShard, type Partial, type Staging } from "./layer-shard.ts";
import { mergePartials } from "./merge.ts";

/** Byte accounting of a sequence's KV (SPEC.md §4.4). */
export interface KvBytes {
  /** K and V held for retrieval heads: 2·b·D·Σ_l nRet[l]·T_l, where b·D = headBytes (dtype.ts): D elements, or a
   *  quantized record with its scale (and min) for int8 / int4 */
  retrieval: number;
  /** K and V held for streaming heads: 2·b·D·Σ_l nStr[l]·min(T_l, S + R) */
  streaming: number;
  /** retrieval + streaming */
  total: number;
  /** what full attention would hold for the same lengths and dtype: 2·b·D·Hkv·Σ_l T_l */
  fullAttention: number;
  /** what the backend has reserved for this sequence (pages are allocated whole, the ring at once): ≥ total */
  allocated: number;
}

export class SplitKVCache {
  private readonly layers: LayerShard[][];
  private readonly lengths: Int32Array;
  /** [layer]: the query heads of the layer's retrieval heads (what `finish` merges when pages are striped) */
  private readonly retrievalQueryHeads: Int32Array[];

  constructor(
    backend: Backend,
    placement: readonly (readonly ShardHeads[])[],
    private readonly geo: CacheGeometry,
  ) {
    this.layers = placement.map((shards) => shards.map((heads, s) => new LayerShard(backend, s, heads, geo)));
    this.lengths = new Int32Array(placement.length);
    this.retrievalQueryHeads = placement.map((shards) => {
      const ret = shards[0]?.retrieval ?? new Int32Array(0), G = geo.group;
      return Int32Array.from({ length: ret.length * G }, (_, i) => ret[Math.floor(i / G)]! * G + (i % G));
    });
  }

  length(layer: number): number {
    return this.lengths[layer]!;
  }

  /** Staging bytes each shard needs for a call of T tokens on `layer`. */
  stagingBytes(layer: number, T: number): number[] {
    return this.layers[layer]!.map((ls) => ls.stagingBytes(T));
  }

  /** Allocate for a call of T tokens on `layer`, all shards or none. Returns the undo. */
  reserve(layer: number, T: number): () => void {
    const undos: (() => void)[] = [];
    try {
      for (const ls of this.layers[layer]!) undos.push(ls.reserve(this.lengths[layer]!, T));
    } catch (e) {
      for (const u of undos.reverse()) u();
      throw e;
    }
    return () => undos.reverse().forEach((u) => u());
  }

  /**
   * The ops of a call, per shard (after `reserve`), and `finish`, to call once they have run: it merges the shards'
   * partial results for the retrieval heads into x.out.
   */
  callOps(layer: number, x: CallTensors, staging: readonly (Staging | null)[]): { ops: Op<OpTensor>[][]; finish: () => void } {
    const shards = this.layers[layer]!;
    const ret = shards[0]!.heads.retrieval;
    const striped = x.out !== null && ret.length > 0 && shards.length > 1;
    const { numHeads: Hq, headDim: D } = this.geo;
    const partials: Partial[] | null = striped
      ? shards.map(() => ({ o: new Float32Array(x.T * Hq * D), lse: new Float32Array(x.T * Hq).fill(-Infinity) }))
      : null;
    const ops = shards.map((ls, s) => ls.ops(this.lengths[layer]!, x, staging[s] ?? null, partials?.[s] ?? null));
    const finish = () => {
      // Striped shards merge on the host: Sequence refuses device tensors on a backend of more than one shard.
      if (partials) mergePartials(x.out as Float32Array, partials, this.retrievalQueryHeads[layer]!, x.T, Hq, D);
    };
    return { ops, finish };
  }

  /** The call's ops have run: advance the layer. */
  commit(layer: number, T: number): void {
    for (const ls of this.layers[layer]!) ls.commit(this.lengths[layer]!, T);
    this.lengths[layer]! += T;
  }

  bytes(): KvBytes {
    const { headDim: D, numKvHeads, sinkSize: S, recentSize: R } = this.geo;
    const perHeadToken = 2 * headBytes(this.geo.dtype, D);
    let retrieval = 0, streaming = 0, fullAttention = 0, allocated = 0;
    this.layers.forEach((shards, l) => {
      const T = this.lengths[l]!;
      // Every shard lists the layer's retrieval heads (their pages are striped); count them once.
      retrieval += perHeadToken * shards[0]!.heads.retrieval.length * T;
      for (const ls of shards) {
        streaming += perHeadToken * ls.heads.streaming.length * Math.min(T, S + R);
        allocated += ls.allocated;
      }
      fullAttention += perHeadToken * numKvHeads * T;
    });
    return { retrieval, streaming, total: retrieval + streaming, fullAttention, allocated };
  }

  /** Free every buffer; all layers are empty again. */
  clear(): void {
    for (const shards of this.layers) for (const ls of shards) ls.clear();
    this.lengths.fill(0);
  }
}
