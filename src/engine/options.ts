/** The options of DuoAttention.create, validated and with defaults filled in. */
import { type BackendChoice, BACKEND_CHOICES, type BackendOptions } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";
import { KV_DTYPES, type KvDtype } from "../dtype.ts";
import { checkInt, checkOneOf, DuoError } from "../errors.ts";
import { checkPatternShape, type HeadPattern } from "../pattern/pattern.ts";
import { sparsify } from "../pattern/sparsify.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import { checkShape, type ModelShape } from "../shape.ts";
import type { PrefillMode } from "../cache/layer-shard.ts";

export interface DuoAttentionOptions extends BackendOptions {
  shape: ModelShape;
  /** which KV heads are retrieval heads: a HeadSchedule (from `sparsify`) or a mask [layer][kvHead], true = retrieval;
   *  may be left out when `pattern` is given (then `sparsify(pattern, { sparsity })`) */
  heads?: HeadSchedule | readonly (readonly boolean[])[];
  /** the head pattern the heads come from (loadPattern): checked against `shape`; its config.json's sink_size and
   *  recent_size are the defaults of sinkSize and recentSize */
  pattern?: HeadPattern;
  /** with `pattern` and no `heads`: the fraction of KV heads that stream (default 0.5; upstream's rule) */
  sparsity?: number;
  /** attention-sink tokens every streaming head keeps (default: the pattern's sink_size, else 64, the paper's
   *  accuracy runs) */
  sinkSize?: number;
  /** recent tokens every streaming head keeps (default: the pattern's recent_size, else 256) */
  recentSize?: number;
  /** KV storage dtype (default "bf16", as the upstream models) */
  kvDtype?: KvDtype;
  /** "auto" (default): cuda, then wasm, then reference; or a Backend instance to share one between engines */
  backend?: BackendChoice | Backend;
  /** streaming-head prefill semantics (default "upstream", SPEC.md §3.2); "window" is the token-exact Λ mask */
  prefill?: PrefillMode;
  /** the most tokens one sequence may hold per layer (default 1 Mi) */
  maxContext?: number;
  /** retrieval-store page size in tokens (default 256; pages are also the unit split across wasm workers) */
  pageSize?: number;
}

export const PREFILL_MODES: readonly PrefillMode[] = ["upstream", "window"];

/** The window without a pattern: upstream's deployment values (SPEC.md §1.2: its NIAH and LongBench runs). */
export const DEFAULT_SINK = 64;
export const DEFAULT_RECENT = 256;

export interface ResolvedOptions {
  shape: ModelShape;
  group: number;
  schedule: HeadSchedule;
  sinkSize: number;
  recentSize: number;
  kvDtype: KvDtype;
  backend: BackendChoice | Backend;
  prefill: PrefillMode;
  maxContext: number;
  pageSize: number;
}

export function resolveOptions(o: DuoAttentionOptions): ResolvedOptions {
  if (o === null || typeof o !== "object") throw new DuoError("INVALID_ARGUMENT", "DuoAttention.create needs an options object { shape, heads, ... }");
  const group = checkShape(o.shape);
  const pattern = o.pattern;
  if (pattern !== undefined) checkPatternShape(pattern, o.shape);
  if (o.sparsity !== undefined && (pattern === undefined || o.heads !== undefined)) {
    throw new DuoError("INVALID_ARGUMENT", "sparsity selects the heads of a pattern: pass pattern and sparsity without heads, or heads alone");
  }
  let schedule: HeadSchedule;
  if (o.heads !== undefined) schedule = o.heads instanceof HeadSchedule ? o.heads : HeadSchedule.fromMask(o.heads);
  else if (pattern !== undefined) schedule = sparsify(pattern, { sparsity: o.sparsity ?? 0.5 });
  else {
    throw new DuoError("INVALID_ARGUMENT", "heads is required: a HeadSchedule (sparsify(pattern, ...)) or a boolean mask [layer][kvHead], true = retrieval; or give a pattern (loadPattern) and a sparsity");
  }
  schedule.checkShape(o.shape.numLayers, o.shape.numKvHeads);
  const backend = o.backend ?? "auto";
  if (typeof backend === "string") checkOneOf("backend", backend, BACKEND_CHOICES);
  return {
    shape: { numLayers: o.shape.numLayers, numHeads: o.shape.numHeads, numKvHeads: o.shape.numKvHeads, headDim: o.shape.headDim },
    group,
    schedule,
    sinkSize: checkInt("sinkSize", o.sinkSize ?? pattern?.sinkSize ?? DEFAULT_SINK, 0),
    recentSize: checkInt("recentSize", o.recentSize ?? pattern?.recentSize ?? DEFAULT_RECENT, 0),
    kvDtype: checkOneOf("kvDtype", o.kvDtype ?? "bf16", KV_DTYPES),
    backend,
    prefill: checkOneOf("prefill", o.prefill ?? "upstream", PREFILL_MODES),
    maxContext: checkInt("maxContext", o.maxContext ?? 1 << 20, 1),
    pageSize: checkInt("pageSize", o.pageSize ?? 256, 1),
  };
}
