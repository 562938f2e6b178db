/**
 * One measurement of `duo bench`, printed as one JSON line with --json and written to results.jsonl by the paper
 * suite. Fields every record has: kind, backend, runtime, threads, mode, context, chunk, ms, kvBytes, gbps,
 * limitGbps (null where they do not apply); the rest depend on the kind.
 */
export type RecordKind = "ceiling" | "decode" | "prefill" | "capacity";

export interface BenchRecord {
  kind: RecordKind;
  /** "wasm", "reference", ... for our engine; "plain-ts", "onnxruntime-web", "onnxruntime-node" for peers */
  backend: string;
  runtime: string;
  threads: number;
  /** "full" (every head a retrieval head) or "duo"; null for ceilings */
  mode: "full" | "duo" | null;
  /** tokens in the cache (decode), tokens prefilled (prefill), largest that fits (capacity) */
  context: number | null;
  /** prefill chunk */
  chunk: number | null;
  /** decode: ms per token for all layers of the model; prefill: ms per attend call (one chunk of one layer) */
  ms: number | null;
  /** decode: KV bytes read per token, all layers; prefill / capacity: KV bytes held */
  kvBytes: number | null;
  gbps: number | null;
  /** min(read bandwidth, FLOP rate ÷ this kernel's FLOP per KV byte) */
  limitGbps: number | null;
  [extra: string]: unknown;
}

/** A record with the common fields set to null, to be filled in. */
export function record(kind: RecordKind, base: { backend: string; runtime: string; threads: number }, fields: Partial<BenchRecord>): BenchRecord {
  return { kind, ...base, mode: null, context: null, chunk: null, ms: null, kvBytes: null, gbps: null, limitGbps: null, ...fields };
}

/** One JSON line; numbers rounded to 4 significant digits where they are measurements. */
export function jsonLine(r: BenchRecord): string {
  return JSON.stringify(r, (_k, v) => (typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v));
}
