/**
 * KV-cache memory of a head schedule (SPEC.md §4.4), for context length T, sink S and recent R:
 *   KV(T)   = 2 · elem · D · Σ_l [ nRet[l] · T + nStr[l] · min(T, S+R) ]     (2 = K and V)
 *   full(T) = 2 · elem · D · numLayers · numKvHeads · T
 * elem = bytes per stored element (2 for f16/bf16, 4 for f32). The ratio tends to the retrieval fraction as T grows.
 * With `dtype` given, elem · D is headBytes(dtype, D) (src/dtype.ts): for int8 / int4 a record per token and head,
 * its scale (and min) included — the formula extended for quantized caches.
 */
import { headBytes, type KvDtype } from "../dtype.ts";
import { checkInt, DuoError } from "../errors.ts";
import type { HeadSchedule } from "./schedule.ts";

export interface KvBytesOptions {
  headDim: number;
  /** tokens held, T */
  context: number;
  sinkSize: number;
  recentSize: number;
  /** default 2 (f16 / bf16) */
  bytesPerElem?: number;
  /** the storage dtype; overrides bytesPerElem (the only way to describe int8 / int4) */
  dtype?: KvDtype;
}

/** Bytes of one head's K (or V) of one token: elem · D, or the dtype's record. */
function headTokenBytes(D: number, o: { bytesPerElem?: number; dtype?: KvDtype }): number {
  return o.dtype !== undefined ? headBytes(o.dtype, D) : elem(o.bytesPerElem) * D;
}

function elem(bytesPerElem: number | undefined): number {
  const b = bytesPerElem ?? 2;
  if (typeof b !== "number" || !(b > 0) || !Number.isFinite(b)) {
    throw new DuoError("INVALID_ARGUMENT", `bytesPerElem must be a positive number (2 for f16/bf16, 4 for f32), got ${String(b)}`);
  }
  return b;
}

/** Bytes of K and V that `schedule` holds after `context` tokens. */
export function kvBytes(schedule: HeadSchedule, o: KvBytesOptions): number {
  const D = checkInt("headDim", o.headDim, 1), T = checkInt("context", o.context, 0);
  const window = checkInt("sinkSize", o.sinkSize, 0) + checkInt("recentSize", o.recentSize, 0);
  const nRet = schedule.retrievalHeads;
  const nStr = schedule.numLayers * schedule.numKvHeads - nRet;
  return 2 * headTokenBytes(D, o) * (nRet * T + nStr * Math.min(T, window));
}

/** Bytes of K and V that full attention holds after `context` tokens. */
export function fullKvBytes(
  dims: { numLayers: number; numKvHeads: number },
  o: { headDim: number; context: number; bytesPerElem?: number; dtype?: KvDtype },
): number {
  const heads = checkInt("numLayers", dims.numLayers, 1) * checkInt("numKvHeads", dims.numKvHeads, 1);
  return 2 * headTokenBytes(checkInt("headDim", o.headDim, 1), o) * heads * checkInt("context", o.context, 0);
}
