/**
 * The public engine: DuoAttention.create(...) → duo.sequence() → seq.attend(layer, q, k, v).
 *
 *   const duo = await DuoAttention.create({ shape, heads, sinkSize: 64, recentSize: 256, kvDtype: "bf16" });
 *   using seq = duo.sequence();
 *   const out = await seq.attend(layer, q, k, v); // q [T, Hq, D], k/v [T, Hkv, D] post-RoPE → out [T, Hq, D]
 */
import { createBackend } from "../backend/registry.ts";
import type { Backend, BackendName } from "../backend/types.ts";
import type { CacheGeometry, PrefillMode, Staging } from "../cache/layer-shard.ts";
import { type KvBytes, SplitKVCache } from "../cache/split-cache.ts";
import type { KvDtype } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import type { HeadSchedule } from "../schedule/schedule.ts";
import { type ShardHeads, shardHeads } from "../schedule/shard.ts";
import type { ModelShape } from "../shape.ts";
import { type DuoAttentionOptions, resolveOptions } from "./options.ts";
import { Sequence } from "./sequence.ts";

export class DuoAttention {
  readonly shape: ModelShape;
  readonly schedule: HeadSchedule;
  readonly sinkSize: number;
  readonly recentSize: number;
  readonly kvDtype: KvDtype;
  readonly prefill: PrefillMode;
  readonly maxContext: number;
  /** [layer][shard]: the heads (and, for retrieval heads, which pages) each backend shard holds */
  readonly placement: readonly (readonly ShardHeads[])[];
  readonly backend: Backend;
  private readonly ownsBackend: boolean;
  private readonly geo: CacheGeometry;
  private readonly staging: ({ kv: Staging; bytes: number } | null)[];
  private readonly sequences = new Set<Sequence>();
  private disposed = false;

  private constructor(o: ReturnType<typeof resolveOptions>, backend: Backend, ownsBackend: boolean) {
    this.shape = o.shape;
    this.schedule = o.schedule;
    this.sinkSize = o.sinkSize;
    this.recentSize = o.recentSize;
    this.kvDtype = o.kvDtype;
    this.prefill = o.prefill;
    this.maxContext = o.maxContext;
    this.backend = backend;
    this.ownsBackend = ownsBackend;
    this.geo = {
      numHeads: o.shape.numHeads, numKvHeads: o.shape.numKvHeads, headDim: o.shape.headDim, group: o.group,
      sinkSize: o.sinkSize, recentSize: o.recentSize, dtype: o.kvDtype, pageRows: o.pageSize, mode: o.prefill,
    };
    this.placement = shardHeads(o.schedule, backend.shards);
    this.staging = new Array(backend.shards).fill(null);
  }

  static async create(options: DuoAttentionOptions): Promise<DuoAttention> {
    const o = resolveOptions(options);
    // The backend's own declaration of what it runs decides: an engine it cannot run is refused here, before
    // anything is allocated, not at the first attend.
    const backend = await createBackend(o.backend, options, { dtype: o.kvDtype, headDim: o.shape.headDim });
    return new DuoAttention(o, backend, typeof o.backend === "string");
  }

  get backendName(): BackendName {
    return this.backend.name;
  }

  /** A new sequence with its own, empty split KV cache. */
  sequence(): Sequence {
    this.checkAlive();
    const seq = new Sequence(this, new SplitKVCache(this.backend, this.placement, this.geo), (s) => this.sequences.delete(s));
    this.sequences.add(seq);
    return seq;
  }

  /** @internal Staging rows for the streaming heads of a call, per shard, grown on demand. */
  stagingFor(bytesPerShard: readonly number[]): (Staging | null)[] {
    return bytesPerShard.map((bytes, s) => {
      if (bytes === 0) return null;
      const cur = this.staging[s];
      if (cur && cur.bytes >= bytes) return cur.kv;
      const grown = Math.max(bytes, (cur?.bytes ?? 0) * 2);
      const k = this.backend.alloc(s, grown);
      let v: number;
      try {
        v = this.backend.alloc(s, grown);
      } catch (e) {
        this.backend.free(s, k);
        throw e;
      }
      if (cur) {
        this.backend.free(s, cur.kv.k);
        this.backend.free(s, cur.kv.v);
      }
      this.staging[s] = { kv: { k, v }, bytes: grown };
      return this.staging[s]!.kv;
    });
  }

  /** @internal */
  checkAlive(): void {
    if (this.disposed) throw new DuoError("DISPOSED", "this DuoAttention engine has been disposed; create a new one");
  }

  /** Free every sequence's cache and, if this engine created it, the backend. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    for (const s of [...this.sequences]) s.dispose();
    this.staging.forEach((st, s) => {
      if (st) {
        this.backend.free(s, st.kv.k);
        this.backend.free(s, st.kv.v);
      }
    });
    this.disposed = true;
    if (this.ownsBackend) await this.backend.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

export type { KvBytes };
