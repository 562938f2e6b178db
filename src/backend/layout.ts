/**
 * Where element d of head j of row r lives in a KV buffer: the two page layouts of the Backend contract (types.ts).
 *
 * "NHD" (token-major, the default): element (r · H + j) · D + d, H = the buffer's heads per row (rowHeads).
 *
 * "T64" (tiled, what the wasm kernels stream fastest): K and V share one buffer of `rows` rows (a multiple of 64),
 * cut into blocks of 64 rows, head by head: block b of head j is a 64 × D K tile and then a 64 × D V tile, the K tile
 * starting at element (j · rows/64 + b) · 2 · 64 · D and its V tile 64 · D after it. Inside a tile the order suits the
 * kernel that reads it, so that decode walks memory front to back, one head's K and V tiles of a page as one stream
 * (the hardware prefetcher then keeps up; a strided walk over token-major rows runs at a fraction of the bandwidth in
 * wasm, which has no prefetch instruction, and two streams taking turns cost 12–15 % from DRAM), with only that
 * head's query and accumulators beside it in L1 (block by block over 8 heads measured 7–10 % slower):
 *   K tile ("K64"): 8-row groups, each [D][8 rows]        element (i, d) at ((i >> 3) · D + d) · 8 + (i & 7)
 *   V tile ("V64"): 8-column groups, each [64 rows][8]    element (i, d) at ((d >> 3) · 64 + i) · 8 + (d & 7)
 * (i = r mod 64). "K64" and "V64" name the two halves of a T64 buffer for appends (an AppendOp writes K or V); a T64
 * segment has k === v, that one buffer. A T64 buffer holds a whole number of 64-row blocks, D is a multiple of 8, and
 * it is as large as an NHD K buffer and V buffer together (bufferBytes).
 */
import { headBytes, isQuantized, type KvDtype } from "../dtype.ts";
import { DuoError } from "../errors.ts";

export type KvLayout = "NHD" | "T64";
/** The layout of one buffer: NHD, or the K or V half of T64. */
export type BufferLayout = "NHD" | "K64" | "V64";

export const TILE_ROWS = 64;

/** Element index of (row r, head j, element d) in a buffer of `layout` with `heads` heads per row, head dim D and
 *  `rows` rows (the buffer's capacity: the tiled layouts keep each head's rows together). */
export function kvIndex(layout: BufferLayout, heads: number, rows: number, D: number, r: number, j: number, d: number): number {
  if (layout === "NHD") return (r * heads + j) * D + d;
  const tile = ((j * (rows / TILE_ROWS) + Math.floor(r / TILE_ROWS)) * 2 + (layout === "V64" ? 1 : 0)) * TILE_ROWS * D, i = r % TILE_ROWS;
  return layout === "K64" ? tile + ((i >> 3) * D + d) * 8 + (i & 7) : tile + ((d >> 3) * TILE_ROWS + i) * 8 + (d & 7);
}

/** Bytes of a buffer of `layout` holding `rows` rows of `heads` heads × D elements of `elementBytes`: an NHD buffer
 *  holds K or V, a tiled one (T64, or one of its halves K64 / V64) both. */
export function bufferBytes(layout: BufferLayout | KvLayout, rows: number, heads: number, D: number, elementBytes: number): number {
  return rows * heads * D * elementBytes * (layout === "NHD" ? 1 : 2);
}

/** Rows a buffer of `bytes` bytes holds in `layout` (Infinity when a row has no bytes). */
export function bufferRows(layout: BufferLayout | KvLayout, bytes: number, heads: number, D: number, elementBytes: number): number {
  const rowBytes = bufferBytes(layout, 1, heads, D, elementBytes);
  return rowBytes === 0 ? Infinity : Math.floor(bytes / rowBytes);
}

/** Bytes of a KV buffer of `dtype`: as bufferBytes, and for the quantized dtypes (always NHD: a record per head row,
 *  src/quant.ts) rows · heads · headBytes. */
export function kvBufferBytes(layout: BufferLayout | KvLayout, rows: number, heads: number, D: number, dtype: KvDtype): number {
  return isQuantized(dtype) ? rows * heads * headBytes(dtype, D) : bufferBytes(layout, rows, heads, D, headBytes(dtype, D) / D);
}

/** Rows a KV buffer of `bytes` bytes of `dtype` holds (Infinity when a row has no bytes). */
export function kvBufferRows(layout: BufferLayout | KvLayout, bytes: number, heads: number, D: number, dtype: KvDtype): number {
  const rowBytes = kvBufferBytes(layout, 1, heads, D, dtype);
  return rowBytes === 0 ? Infinity : Math.floor(bytes / rowBytes);
}

/** Whether a buffer of `rows` rows and head dim D can be tiled. */
export function tileable(rows: number, D: number): boolean {
  return rows % TILE_ROWS === 0 && D % 8 === 0;
}

/** Throw INVALID_ARGUMENT, naming what a tiled buffer needs, when `what` (a `layout` buffer of `rows` rows) cannot be
 *  tiled. */
export function checkTileable(rows: number, D: number, what: string, layout: string): void {
  if (!tileable(rows, D)) {
    throw new DuoError("INVALID_ARGUMENT", `${what} is ${layout}: it needs a multiple of ${TILE_ROWS} rows and headDim a multiple of 8, and has ${rows} rows of headDim ${D}`);
  }
}

/** A T64 segment names its one buffer as both k and v: throw INVALID_ARGUMENT, naming `what`, when it does not. */
export function checkSharedBuffer(k: number, v: number, what: string): void {
  if (k !== v) throw new DuoError("INVALID_ARGUMENT", `${what} is T64, which keeps K and V in one buffer: k and v must be the same handle, got k = ${k}, v = ${v}`);
}

/** The buffer layouts of a segment's K and V buffers. */
export function segmentLayouts(layout: KvLayout | undefined): { k: BufferLayout; v: BufferLayout } {
  return layout === "T64" ? { k: "K64", v: "V64" } : { k: "NHD", v: "NHD" };
}
