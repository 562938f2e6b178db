/**
 * The split KV cache of one layer on one backend shard, and the ops of one attention call on it.
 *
 * Retrieval store: pages of `pageRows` rows, K and V each `[pageRows, nRet, D]` in the layout the backend asks for
 * (`pageLayout`: token-major in two buffers, or tiled for the wasm kernels, K and V in one buffer: backend/layout.ts);
 * global page j holds positions [j·pageRows, (j+1)·pageRows) and lives on shard j mod pageStride
 * (src/schedule/shard.ts). Growth allocates one page at a time: history is never copied.
 * Streaming store: a ring of S + R rows, K and V each `[S + R, nStr, D]`. Rows 0..S−1 hold the sinks (positions
 * 0..S−1, written once); a position p ≥ S lives in row S + (p − S) mod R. Rows fill in order, so the filled rows
 * are always the prefix [0, min(n, S + R)). Keys are stored post-RoPE at their absolute positions and never
 * re-rotated, so attention over the ring is order-free (SPEC.md §4.1); `ringPos` records each row's position.
 *
 * A call of T tokens at positions c..c+T−1 (c = tokens already cached) becomes, in order:
 *   retrieval: append K/V into this shard's pages, attend causally over them (into the call's output when this
 *              shard holds every page, else into a partial output + lse that the engine merges across shards);
 *   streaming: append K/V into the shard's staging rows, attend over ring prefix ∪ staging with the mode's mask
 *              ("upstream": causal — the ring holds exactly the sinks + the R tokens before the chunk, SPEC.md §3.2;
 *               "window": causal and p < S or p ≥ t − R), then write the tokens that survive into the ring.
 * Attending before the ring write matters: a chunk longer than R would otherwise evict keys its own early queries see.
 */
import { headBytes, type KvDtype } from "../dtype.ts";
import { type BufferLayout, kvBufferBytes, type KvLayout, segmentLayouts } from "../backend/layout.ts";
import type { Backend, Handle, Op, OpTensor, Segment } from "../backend/types.ts";
import type { ShardHeads } from "../schedule/shard.ts";

export type PrefillMode = "upstream" | "window";

export interface CacheGeometry {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  group: number;
  sinkSize: number;
  recentSize: number;
  dtype: KvDtype;
  pageRows: number;
  mode: PrefillMode;
}

/** Staging rows for the streaming heads of the current call: engine-owned, one per shard, reused by every layer. */
export interface Staging {
  k: Handle;
  v: Handle;
}

interface KV {
  k: Handle;
  v: Handle;
}

/** A retrieval page and, once it is full, its segment (immutable from then on: built once, not per call). */
interface Page extends KV {
  full: Segment | null;
}

/** The tensors of one call: host arrays, or device tensors on a backend that takes them (passed into the ops whole). */
export interface CallTensors {
  q: OpTensor; // [T, Hq, D]
  k: OpTensor; // [T, Hkv, D]
  v: OpTensor; // [T, Hkv, D]
  out: OpTensor | null; // [T, Hq, D], or null to store K/V without attending
  T: number;
}

/** Where a shard that holds only some retrieval pages writes its partial result. */
export interface Partial {
  o: Float32Array; // [T, Hq, D]
  lse: Float32Array; // [T, Hq]
}

export class LayerShard {
  /** indexed by global page number; only this shard's pages are set */
  private pages: Page[] = [];
  private ring: KV | null = null;
  /** absolute position held by each ring row (valid for the filled prefix) */
  private ringPos: Int32Array;
  private readonly retSlots: Int32Array;
  private readonly strSlots: Int32Array;
  private readonly pageLayout: KvLayout;
  /** bytes this layer-shard holds allocated on the backend */
  allocated = 0;

  constructor(
    private readonly backend: Backend,
    readonly shard: number,
    readonly heads: ShardHeads,
    private readonly geo: CacheGeometry,
  ) {
    this.ringPos = new Int32Array(geo.sinkSize + geo.recentSize);
    this.retSlots = Int32Array.from(heads.retrieval, (_, j) => j);
    this.strSlots = Int32Array.from(heads.streaming, (_, j) => j);
    this.pageLayout = backend.pageLayout(geo.dtype, geo.headDim, geo.pageRows, geo.group);
  }

  /** The segment of rows [0, rowCount) of a page. */
  private pageSegment(page: KV, j: number, rowCount: number): Segment {
    const { dtype, pageRows } = this.geo;
    return { k: page.k, v: page.v, dtype, rowHeads: this.heads.retrieval.length, rowStart: 0, rowCount, positions: j * pageRows, layout: this.pageLayout };
  }

  /** Whether this shard holds global retrieval page j. */
  private owns(j: number): boolean {
    return j % this.heads.pageStride === this.heads.pageOffset;
  }

  /** Bytes of one page buffer: an NHD page has a K and a V buffer of this size, a T64 page one holding both. */
  private get pageBytes(): number {
    return kvBufferBytes(this.pageLayout, this.geo.pageRows, this.heads.retrieval.length, this.geo.headDim, this.geo.dtype);
  }
  private get ringBytes(): number {
    return (this.geo.sinkSize + this.geo.recentSize) * this.stagingBytes(1);
  }

  /** Bytes of staging this shard needs for a call of T tokens. */
  stagingBytes(T: number): number {
    return T * this.heads.streaming.length * headBytes(this.geo.dtype, this.geo.headDim);
  }

  /**
   * Allocate what a call of T tokens after `cached` tokens needs (pages, the ring). All or nothing: on a CAPACITY
   * error everything allocated here is freed again. Returns an undo that frees exactly this call's allocations.
   */
  reserve(cached: number, T: number): () => void {
    const made: Handle[] = [];
    const newPages: number[] = [];
    const ringBefore = this.ring;
    const allocatedBefore = this.allocated;
    const alloc = (bytes: number): Handle => {
      const h = this.backend.alloc(this.shard, bytes);
      made.push(h);
      this.allocated += bytes;
      return h;
    };
    const undo = () => {
      for (const h of made) this.backend.free(this.shard, h);
      for (const j of newPages) delete this.pages[j];
      this.ring = ringBefore;
      this.allocated = allocatedBefore;
    };
    try {
      if (this.heads.retrieval.length > 0) {
        const need = Math.ceil((cached + T) / this.geo.pageRows);
        for (let j = Math.floor(cached / this.geo.pageRows); j < need; j++) {
          if (!this.owns(j) || this.pages[j]) continue;
          newPages.push(j);
          const k = alloc(this.pageBytes);
          this.pages[j] = { k, v: this.pageLayout === "T64" ? k : alloc(this.pageBytes), full: null };
        }
      }
      if (this.heads.streaming.length > 0 && !this.ring && this.ringBytes > 0) {
        this.ring = { k: alloc(this.ringBytes), v: alloc(this.ringBytes) };
      }
    } catch (e) {
      undo();
      throw e;
    }
    return undo;
  }

  /**
   * The ops of one call (after `reserve`); `commit` must be called once they have run. With `x.out` null the call
   * only stores K/V (no attention, no staging): what `Sequence.fill` does. `partial` is where the retrieval heads'
   * result goes when this shard holds only some of their pages (null: straight into x.out).
   */
  ops(cached: number, x: CallTensors, staging: Staging | null, partial: Partial | null): Op<OpTensor>[] {
    const { headDim: D, numHeads, numKvHeads, group, dtype } = this.geo;
    const T = x.T;
    const ops: Op<OpTensor>[] = [];
    const append = (dst: Handle, src: OpTensor, heads: Int32Array, rows: Int32Array, layout: BufferLayout = "NHD"): void => {
      ops.push({ kind: "append", dst, dtype, rowHeads: heads.length, headDim: D, src, srcHeads: numKvHeads, heads, rows, layout });
    };

    const ret = this.heads.retrieval;
    if (ret.length > 0) {
      const P = this.geo.pageRows;
      const first = Math.floor(cached / P), last = Math.floor((cached + T - 1) / P);
      for (let j = first; j <= last; j++) {
        if (!this.owns(j)) continue;
        const rows = new Int32Array(T);
        for (let i = 0; i < T; i++) {
          const p = cached + i;
          rows[i] = Math.floor(p / P) === j ? p - j * P : -1;
        }
        const { k, v } = segmentLayouts(this.pageLayout);
        append(this.pages[j]!.k, x.k, ret, rows, k);
        append(this.pages[j]!.v, x.v, ret, rows, v);
      }
      const total = cached + T;
      const segments: Segment[] = [];
      for (let j = this.heads.pageOffset; j * P < total; j += this.heads.pageStride) {
        const page = this.pages[j]!;
        segments.push(page.full ?? this.pageSegment(page, j, Math.min(P, total - j * P)));
      }
      // A shard with no page yet has nothing to add: its partial stays (0, lse −∞), which the merge ignores.
      if (x.out && segments.length > 0) {
        ops.push({
          kind: "attend", q: x.q, T, numHeads, headDim: D, group, qHeads: ret, kvSlots: this.retSlots, segments,
          qPos0: cached, window: null, out: partial ? partial.o : x.out, ...(partial ? { lse: partial.lse } : {}),
        });
      }
    }

    const str = this.heads.streaming;
    if (str.length > 0) {
      const { sinkSize: S, recentSize: R } = this.geo;
      if (x.out && staging) {
        const stagingRows = new Int32Array(T);
        for (let i = 0; i < T; i++) stagingRows[i] = i;
        append(staging.k, x.k, str, stagingRows);
        append(staging.v, x.v, str, stagingRows);
        const segments: Segment[] = [];
        const filled = Math.min(cached, S + R);
        if (filled > 0 && this.ring) {
          segments.push({ k: this.ring.k, v: this.ring.v, dtype, rowHeads: str.length, rowStart: 0, rowCount: filled, positions: this.ringPos.slice(0, filled) });
        }
        segments.push({ k: staging.k, v: staging.v, dtype, rowHeads: str.length, rowStart: 0, rowCount: T, positions: cached });
        ops.push({
          kind: "attend", q: x.q, T, numHeads, headDim: D, group, qHeads: str, kvSlots: this.strSlots, segments,
          qPos0: cached, window: this.geo.mode === "window" ? { sink: S, recent: R } : null, out: x.out,
        });
      }
      if (this.ring) {
        const rows = this.ringRows(cached, T);
        append(this.ring.k, x.k, str, rows);
        append(this.ring.v, x.v, str, rows);
      }
    }
    return ops;
  }

  /** Ring row for each token of a call (−1 = not kept): sinks keep their row; of the rest only the last R survive. */
  private ringRows(cached: number, T: number): Int32Array {
    const { sinkSize: S, recentSize: R } = this.geo;
    const keepFrom = Math.max(S, cached + T - R);
    const rows = new Int32Array(T);
    for (let i = 0; i < T; i++) {
      const p = cached + i;
      rows[i] = p < S ? p : R > 0 && p >= keepFrom ? S + ((p - S) % R) : -1;
    }
    return rows;
  }

  /** Record what a call that has run wrote: ring rows, and the segments of this shard's pages it filled. */
  commit(cached: number, T: number): void {
    const P = this.geo.pageRows;
    for (let j = Math.floor(cached / P); this.heads.retrieval.length > 0 && j < Math.floor((cached + T) / P); j++) {
      const page = this.pages[j];
      if (page) page.full = this.pageSegment(page, j, P);
    }
    if (!this.ring) return;
    const rows = this.ringRows(cached, T);
    for (let i = 0; i < T; i++) if (rows[i]! >= 0) this.ringPos[rows[i]!] = cached + i;
  }

  /** Free everything; the layer-shard is empty again. */
  clear(): void {
    for (const p of this.pages) {
      if (!p) continue;
      this.backend.free(this.shard, p.k);
      if (p.v !== p.k) this.backend.free(this.shard, p.v);
    }
    if (this.ring) {
      this.backend.free(this.shard, this.ring.k);
      this.backend.free(this.shard, this.ring.v);
    }
    this.pages = [];
    this.ring = null;
    this.ringPos.fill(0);
    this.allocated = 0;
  }
}
