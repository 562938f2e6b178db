/**
 * Where element d of head j of row r lives in a KV buffer: the two page layouts of the Backend contract (types.ts).
 *
 * "NHD" (token-major, the default): element (r · H + j) · D + d, H = the buffer's heads per row (rowHeads).
 *
 * "T64" (tiled, what the wasm kernels stream fastest): rows in blocks of 64; block b holds one 64 × D tile per head,
 * in head order, tile (b, j) starting at element (b · H + j) · 64 · D. Inside a tile the order suits the kernel that
 * reads it, so that every kernel walks memory front to back (the hardware prefetcher then keeps up; a strided walk
 * over token-major rows runs at a fraction of the bandwidth in wasm, which has no prefetch instruction):
 *   K tile ("K64"): 8-row groups, each [D][8 rows]        element (i, d) at ((i >> 3) · D + d) · 8 + (i & 7)
 *   V tile ("V64"): 8-column groups, each [64 rows][8]    element (i, d) at ((d >> 3) · 64 + i) · 8 + (d & 7)
 * (i = r mod 64). A T64 segment has its K buffer in K64 and its V buffer in V64; such buffers hold a whole number of
 * 64-row blocks, and D is a multiple of 8. A T64 buffer has the same size as an NHD one.
 */
import { DuoError } from "../errors.ts";

export type KvLayout = "NHD" | "T64";
/** The layout of one buffer: NHD, or the K or V half of T64. */
export type BufferLayout = "NHD" | "K64" | "V64";

export const TILE_ROWS = 64;

/** Element index of (row r, head j, element d) in a buffer of `layout` with `heads` heads per row and head dim D. */
export function kvIndex(layout: BufferLayout, heads: number, D: number, r: number, j: number, d: number): number {
  if (layout === "NHD") return (r * heads + j) * D + d;
  const tile = (Math.floor(r / TILE_ROWS) * heads + j) * TILE_ROWS * D, i = r % TILE_ROWS;
  return layout === "K64" ? tile + ((i >> 3) * D + d) * 8 + (i & 7) : tile + ((d >> 3) * TILE_ROWS + i) * 8 + (d & 7);
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

/** The buffer layouts of a segment's K and V buffers. */
export function segmentLayouts(layout: KvLayout | undefined): { k: BufferLayout; v: BufferLayout } {
  return layout === "T64" ? { k: "K64", v: "V64" } : { k: "NHD", v: "NHD" };
}
