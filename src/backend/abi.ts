/**
 * The op wire format of the CPU kernels' C ABI (wasm/src/duo.h), one module for every build that speaks it: the wasm
 * executor (wasm-exec.ts) and the native backend (native.ts) pack segments, dtype and layout codes here.
 * test/native-abi.test.ts compares these constants with duo.h.
 *
 * duo_segment, 14 i32 words (56 bytes; pointers are duo_ptr = u64, written as low and high words):
 *   [0,1] k   [2,3] v   [4,5] positions (0: consecutive from pos0)   6 dtype (| NONFINITE)   7 row_heads
 *   8 row_start   9 row_count   10 pos0   11 layout   12 buffer_rows (T64)   13 reserved (0)
 */
import type { KvDtype } from "../dtype.ts";
import { type BufferLayout, kvBufferRows, type KvLayout } from "./layout.ts";
import type { AttendOp, Segment } from "./types.ts";

/** DUO_API_VERSION of wasm/src/duo.h: what duo.wasm and the native library must report. */
export const DUO_API_VERSION = 7;

export const STATUS = { OK: 0, E_ARG: -1, E_HANDLE: -2, E_CAPACITY: -3, E_UNSUPPORTED: -4, E_INTERNAL: -7 } as const;

export const DTYPE_CODE: Record<KvDtype, number> = { f32: 0, f16: 1, bf16: 2, int8: 3, int4: 4 };
/** The dtype bits of a segment's dtype word (DUO_DTYPE_MASK). */
export const DUO_DTYPE_MASK = 7;
/** Segment flag: its buffers may hold Inf/NaN (int8/int4: records that decode to Inf), so the kernels take the exact paths. */
export const DUO_NONFINITE = 8;
/** Layout codes: buffers (duo_append) and segments (duo_segment.layout; T64 = 1). */
export const LAYOUT_CODE: Record<BufferLayout | KvLayout, number> = { NHD: 0, K64: 1, V64: 2, T64: 1 };

export const SEGMENT_WORDS = 14;
export const SEG = { K: 0, V: 2, POSITIONS: 4, DTYPE: 6, ROW_HEADS: 7, ROW_START: 8, ROW_COUNT: 9, POS0: 10, LAYOUT: 11, BUFFER_ROWS: 12 } as const;

/** Where a segment's buffers live in the library's memory, as the executor resolved them. */
export interface SegmentAt {
  /** addresses of the K and V buffers (numbers: wasm offsets, or native pointers below 2^53) */
  k: number;
  v: number;
  /** bytes of the K buffer (a T64 buffer's row count follows from it) */
  kBytes: number;
  /** address of the segment's explicit positions in library memory, or 0 for consecutive positions */
  positions: number;
  /** an append wrote Inf or NaN into one of its buffers */
  nonfinite: boolean;
}

/** Write duo_segment i of `words` (an Int32Array of n × SEGMENT_WORDS) for segment s of head dim D. */
export function packSegment(words: Int32Array, i: number, s: Segment, D: number, at: SegmentAt): void {
  const layout = s.layout ?? "NHD";
  const o = i * SEGMENT_WORDS;
  putPtr(words, o + SEG.K, at.k);
  putPtr(words, o + SEG.V, at.v);
  putPtr(words, o + SEG.POSITIONS, at.positions);
  words[o + SEG.DTYPE] = DTYPE_CODE[s.dtype] | (at.nonfinite ? DUO_NONFINITE : 0);
  words[o + SEG.ROW_HEADS] = s.rowHeads;
  words[o + SEG.ROW_START] = s.rowStart;
  words[o + SEG.ROW_COUNT] = s.rowCount;
  words[o + SEG.POS0] = typeof s.positions === "number" ? s.positions : 0;
  words[o + SEG.LAYOUT] = LAYOUT_CODE[layout];
  words[o + SEG.BUFFER_ROWS] = layout === "NHD" ? 0 : kvBufferRows(layout, at.kBytes, s.rowHeads, D, s.dtype);
  words[o + 13] = 0;
}

/** A duo_ptr as two i32 words (low, high). */
export function putPtr(words: Int32Array, at: number, ptr: number): void {
  words[at] = ptr % 2 ** 32 | 0;
  words[at + 1] = Math.floor(ptr / 2 ** 32) | 0;
}

/** Copy a duo_attend result, compact out [T][J*G][D] and lse [T][J*G] for the op's J = qHeads.length KV heads, into
 *  the rows of the caller's out [T][numHeads][D] and lse [T][numHeads] that belong to its query heads. */
export function scatterCompact(op: AttendOp, out: Float32Array, lse: Float32Array | null): void {
  const { T, numHeads: Hq, headDim: D, group: G } = op;
  const J = op.qHeads.length;
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < J; j++) {
      const src = (t * J + j) * G, dst = t * Hq + op.qHeads[j]! * G;
      op.out.set(out.subarray(src * D, (src + G) * D), dst * D);
      if (op.lse && lse) op.lse.set(lse.subarray(src, src + G), dst);
    }
  }
}
