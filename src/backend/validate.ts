/**
 * Op validation shared by the backends that run the C kernels (wasm.ts, native.ts): every shape, index and buffer
 * extent an op names is checked here, before it leaves for a kernel, so that a rejected op changes nothing and the
 * error names what was wrong and what is valid. The buffers are looked up through the backend (`bufferOf`), which
 * throws for an unknown handle.
 */
import { bytesPerElement, KV_DTYPES, type KvDtype } from "../dtype.ts";
import { checkInt, checkOneOf, DuoError } from "../errors.ts";
import { bufferBytes, bufferRows, checkSharedBuffer, checkTileable } from "./layout.ts";
import type { AppendOp, AttendOp, Handle, Segment } from "./types.ts";

/** A backend's buffer by handle (throws INVALID_ARGUMENT when it has none by that handle). */
export type BufferOf = (h: Handle) => { bytes: number };

export function checkAppend(op: AppendOp, at: string, bufferOf: BufferOf, backend: string): void {
  checkDtype(op.dtype, at);
  checkHeadDim(op.headDim, at, backend);
  const layout = checkOneOf(`${at} layout`, op.layout ?? "NHD", ["NHD", "K64", "V64"] as const);
  checkInt(`${at} rowHeads`, op.rowHeads, 0);
  checkInt(`${at} srcHeads`, op.srcHeads, 0);
  const dst = bufferOf(op.dst);
  const T = op.rows.length;
  if (op.src.length !== T * op.srcHeads * op.headDim) {
    throw new DuoError("SHAPE_MISMATCH", `${at}: src has ${op.src.length} floats, expected rows.length × srcHeads × headDim = ${T} × ${op.srcHeads} × ${op.headDim}`);
  }
  if (op.heads.length !== op.rowHeads) {
    throw new DuoError("SHAPE_MISMATCH", `${at}: heads has ${op.heads.length} entries, expected rowHeads = ${op.rowHeads}`);
  }
  for (const h of op.heads) {
    if (h < 0 || h >= op.srcHeads) throw new DuoError("INVALID_ARGUMENT", `${at}: heads entry ${h} is outside the ${op.srcHeads} source heads`);
  }
  const capacityRows = bufferRows(layout, dst.bytes, op.rowHeads, op.headDim, bytesPerElement(op.dtype));
  if (layout !== "NHD" && capacityRows !== Infinity) checkTileable(capacityRows, op.headDim, `${at}: buffer ${op.dst}`, layout);
  for (const r of op.rows) {
    if (r >= capacityRows) throw new DuoError("CAPACITY", `${at}: row ${r} is past the buffer's ${capacityRows} rows`);
  }
}

/** Check an attend op; returns its qPos0. */
export function checkAttend(op: AttendOp, at: string, bufferOf: BufferOf, backend: string): number {
  checkHeadDim(op.headDim, at, backend);
  const T = checkInt(`${at} T`, op.T, 0), Hq = checkInt(`${at} numHeads`, op.numHeads, 0);
  const G = checkInt(`${at} group`, op.group, 1), D = op.headDim;
  const qPos0 = checkInt(`${at} qPos0`, op.qPos0, 0, 2 ** 31 - 1 - T);
  if (op.q.length !== T * Hq * D) throw new DuoError("SHAPE_MISMATCH", `${at}: q has ${op.q.length} floats, expected T × numHeads × headDim = ${T} × ${Hq} × ${D}`);
  if (op.out.length !== T * Hq * D) throw new DuoError("SHAPE_MISMATCH", `${at}: out has ${op.out.length} floats, expected T × numHeads × headDim = ${T} × ${Hq} × ${D}`);
  if (op.lse && op.lse.length !== T * Hq) throw new DuoError("SHAPE_MISMATCH", `${at}: lse has ${op.lse.length} floats, expected T × numHeads = ${T} × ${Hq}`);
  if (op.kvSlots.length !== op.qHeads.length) {
    throw new DuoError("SHAPE_MISMATCH", `${at}: kvSlots has ${op.kvSlots.length} entries, qHeads ${op.qHeads.length}; they must match`);
  }
  for (const h of op.qHeads) {
    if (h < 0 || (h + 1) * G > Hq) throw new DuoError("INVALID_ARGUMENT", `${at}: qHeads entry ${h} selects query heads ${h * G}..${h * G + G - 1}, outside the ${Hq} query heads`);
  }
  if (op.window !== null) {
    checkInt(`${at} window.sink`, op.window?.sink, 0, 2 ** 31 - 1);
    checkInt(`${at} window.recent`, op.window?.recent, 0, 2 ** 31 - 1);
  }
  if (op.qHeads.length > 0 && T > 0) for (const s of op.segments) checkSegment(s, op, at, bufferOf);
  return qPos0;
}

function checkSegment(s: Segment, op: AttendOp, at: string, bufferOf: BufferOf): void {
  checkDtype(s.dtype, at);
  const layout = checkOneOf(`${at} segment layout`, s.layout ?? "NHD", ["NHD", "T64"] as const);
  checkInt(`${at} segment rowHeads`, s.rowHeads, 1);
  const start = checkInt(`${at} segment rowStart`, s.rowStart, 0), count = checkInt(`${at} segment rowCount`, s.rowCount, 0);
  for (const slot of op.kvSlots) {
    if (slot < 0 || slot >= s.rowHeads) throw new DuoError("INVALID_ARGUMENT", `${at}: kvSlots entry ${slot} is outside the segment's ${s.rowHeads} row heads`);
  }
  if (layout === "T64") checkSharedBuffer(s.k, s.v, `${at}: a segment`);
  const es = bytesPerElement(s.dtype), end = bufferBytes(layout, start + count, s.rowHeads, op.headDim, es);
  for (const [name, h] of [["k", s.k], ["v", s.v]] as const) {
    const b = bufferOf(h);
    if (end > b.bytes) throw new DuoError("SHAPE_MISMATCH", `${at}: segment rows ${start}..${start + count - 1} of ${s.rowHeads} × ${op.headDim} ${s.dtype} (${layout}) need ${end} bytes of ${name} buffer ${h}, which has ${b.bytes}`);
    if (layout === "T64") checkTileable(bufferRows(layout, b.bytes, s.rowHeads, op.headDim, es), op.headDim, `${at}: ${name} buffer ${h}`, layout);
  }
  if (typeof s.positions === "number") checkInt(`${at} segment positions`, s.positions, -(2 ** 31), 2 ** 31 - 1 - count);
  else if (!(s.positions instanceof Int32Array) || s.positions.length !== count) {
    throw new DuoError("SHAPE_MISMATCH", `${at}: segment positions must be a number or an Int32Array of rowCount = ${count} entries`);
  }
}

export function checkDtype(dtype: KvDtype, at: string): void {
  if (!KV_DTYPES.includes(dtype)) throw new DuoError("UNSUPPORTED", `${at}: dtype must be one of ${KV_DTYPES.map((d) => `"${d}"`).join(", ")}, got ${JSON.stringify(dtype)}`);
}

export function checkHeadDim(headDim: number, at: string, backend: string): void {
  checkInt(`${at} headDim`, headDim, 1);
  if (headDim % 4 !== 0) throw new DuoError("UNSUPPORTED", `${at}: the ${backend} kernels need headDim to be a multiple of 4, got ${headDim}`);
}
