/**
 * Checks shared by every backend, so that each refuses the same input with the same words.
 *
 *  - `unsupported(caps, needs)`: can a backend with these capabilities (types.ts, declared once per backend) run an
 *    engine of this KV dtype and head dim? DuoAttention.create asks it before anything is allocated, and
 *    `backend: "auto"` passes over a backend that cannot.
 *  - `checkOps(ops, caps, sizeOf)`: every op of a run, against the capabilities and the byte sizes of the buffers it
 *    names, before any kernel runs; a rejected run changes nothing. Array lengths must be exact: a longer array is
 *    as much a caller's mistake as a shorter one. Values a kernel indexes with (heads, slots, rows, positions) are
 *    checked here too, so a C kernel never reads out of bounds on a JS caller's word.
 * Quantized dtypes (int8, int4: src/quant.ts) are token-major only, int4 with an even head dim.
 * Device tensors (types.ts DeviceTensor: append src, attend q / out / lse) pass only on a backend whose capabilities
 * say `deviceTensors`, naming a buffer of that backend (`tensorSize`), with exactly the elements an array would have,
 * inside the buffer; elsewhere they are refused as UNSUPPORTED, naming what the backend takes.
 */
import { isQuantized, type KvDtype } from "../dtype.ts";
import { checkInt, checkOneOf, DuoError } from "../errors.ts";
import { checkQuantHeadDim } from "../quant.ts";
import { type BufferLayout, checkSharedBuffer, checkTileable, kvBufferBytes, kvBufferRows, type KvLayout } from "./layout.ts";
import type { AppendOp, AttendOp, BackendCapabilities, DeviceTensor, Handle, Op, OpTensor, Segment } from "./types.ts";

/** What an engine needs of its backend. */
export interface EngineNeeds {
  dtype: KvDtype;
  headDim: number;
}

/** The head dims of `caps` in words, to follow "head dims": "64 or 128", "that are multiples of 4". */
export function headDimsText(caps: BackendCapabilities): string {
  const h = caps.headDims;
  if ("multipleOf" in h) return h.multipleOf === 1 ? "of any size" : `that are multiples of ${h.multipleOf}`;
  return h.length === 1 ? String(h[0]) : `${h.slice(0, -1).join(", ")} or ${h[h.length - 1]}`;
}

function headDimOk(caps: BackendCapabilities, D: number): boolean {
  const h = caps.headDims;
  return "multipleOf" in h ? D % h.multipleOf === 0 : h.includes(D);
}

/** Why a backend named `name` with `caps` cannot run an engine of `needs`, in words; null when it can. */
export function unsupported(name: string, caps: BackendCapabilities, needs: EngineNeeds): string | null {
  const why: string[] = [];
  if (!headDimOk(caps, needs.headDim)) why.push(`its kernels take head dims ${headDimsText(caps)}, not ${needs.headDim} (shape.headDim)`);
  if (!caps.dtypes.includes(needs.dtype)) why.push(`it stores KV as ${caps.dtypes.join(", ")}, not ${needs.dtype} (kvDtype)`);
  return why.length ? `the ${name} backend cannot run this engine: ${why.join("; and ")}` : null;
}

/** Byte size of buffer `h` of the shard being run; throws INVALID_ARGUMENT for a handle the shard does not hold. */
export type BufferSize = (h: Handle) => number;

/** Is `a` a DeviceTensor (types.ts) rather than a host array? */
export function isDeviceTensor(a: unknown): a is DeviceTensor {
  return typeof a === "object" && a !== null && !ArrayBuffer.isView(a) && "handle" in a;
}

/** Check every op of one run; the message names the op (`ops[i] (kind)`) and the field that is wrong. `tensorSize`:
 *  the byte size of a buffer a device tensor names (a backend with `deviceTensors` passes it; it throws
 *  INVALID_ARGUMENT for a handle that is not the backend's). */
export function checkOps(ops: readonly Op<OpTensor>[], caps: BackendCapabilities, sizeOf: BufferSize, tensorSize?: BufferSize): void {
  if (!Array.isArray(ops)) throw new DuoError("INVALID_ARGUMENT", `ops must be an array of append / attend ops, got ${typeof ops}`);
  ops.forEach((op, i) => checkOp(op, i, caps, sizeOf, tensorSize));
}

/** Check one op, ops[i] of its run. */
export function checkOp(op: Op<OpTensor>, i: number, caps: BackendCapabilities, sizeOf: BufferSize, tensorSize?: BufferSize): void {
  const at = `ops[${i}] (${op?.kind})`;
  const device = (name: string, a: DeviceTensor, want: number, how: string) => checkDeviceTensor(name, a, want, how, at, caps, tensorSize);
  if (op?.kind === "append") checkAppend(op, at, caps, sizeOf, device);
  else if (op?.kind === "attend") checkAttend(op, at, caps, sizeOf, device);
  else throw new DuoError("INVALID_ARGUMENT", `ops[${i}].kind must be "append" or "attend", got ${JSON.stringify((op as { kind?: unknown })?.kind)}`);
}

function checkDtype(dtype: KvDtype, caps: BackendCapabilities, at: string): void {
  if (!caps.dtypes.includes(dtype)) {
    throw new DuoError("UNSUPPORTED", `${at}: dtype must be one of ${caps.dtypes.map((d) => `"${d}"`).join(", ")}, got ${JSON.stringify(dtype)}`);
  }
}

function checkHeadDim(D: number, caps: BackendCapabilities, at: string): void {
  checkInt(`${at} headDim`, D, 1);
  if (!headDimOk(caps, D)) throw new DuoError("UNSUPPORTED", `${at}: the kernels take head dims ${headDimsText(caps)}, got ${D}`);
}

/** The buffer layouts of `caps` for `dtype`: NHD, and the two halves of T64 where the kernels tile a float dtype. */
function bufferLayouts(caps: BackendCapabilities, dtype: KvDtype): BufferLayout[] {
  return caps.layouts.includes("T64") && !isQuantized(dtype) ? ["NHD", "K64", "V64"] : ["NHD"];
}

/** Throw SHAPE_MISMATCH unless typed array `a` has exactly `want` elements (`how`: the formula, for the message). */
function length(name: string, a: unknown, want: number, how: string, at: string): void {
  const n = ArrayBuffer.isView(a) ? (a as Float32Array).length : NaN;
  const unit = a instanceof Float32Array ? "floats" : "entries";
  if (n !== want) throw new DuoError("SHAPE_MISMATCH", `${at}: ${name} has ${Number.isNaN(n) ? "no" : n} ${unit}, expected ${how} = ${want}`);
}

/** Checks a device tensor of `want` elements (`how`: the formula) of an op; see checkDeviceTensor. */
type DeviceCheck = (name: string, a: DeviceTensor, want: number, how: string) => void;

/** A host array of exactly `want` floats, or a device tensor (checkDeviceTensor). */
function tensor(name: string, a: OpTensor, want: number, how: string, at: string, device: DeviceCheck): void {
  if (isDeviceTensor(a)) device(name, a, want, how);
  else length(name, a, want, how, at);
}

/** A device tensor: only where the backend takes them; a safe offset; exactly `want` elements; inside its buffer. */
function checkDeviceTensor(name: string, a: DeviceTensor, want: number, how: string, at: string, caps: BackendCapabilities,
                           tensorSize: BufferSize | undefined): void {
  if (!caps.deviceTensors || !tensorSize) {
    throw new DuoError("UNSUPPORTED", `${at}: ${name} is a device tensor (buffer ${a.handle}); this backend takes host Float32Arrays (device tensors are for a backend whose capabilities say deviceTensors, e.g. cuda)`);
  }
  const offset = checkInt(`${at} ${name}.offset`, a.offset, 0);
  if (a.length !== want) throw new DuoError("SHAPE_MISMATCH", `${at}: ${name} is a device tensor of ${a.length} floats, expected ${how} = ${want}`);
  const floats = Math.floor(tensorSize(a.handle) / 4);
  if (offset + want > floats) {
    throw new DuoError("CAPACITY", `${at}: ${name} elements [${offset}, ${offset + want}) are past the end of buffer ${a.handle} (${floats} f32 elements)`);
  }
}

/** Do two device tensors share elements? */
function overlap(a: DeviceTensor, b: DeviceTensor): boolean {
  return a.handle === b.handle && a.length > 0 && b.length > 0 && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

function checkAppend(op: AppendOp<OpTensor>, at: string, caps: BackendCapabilities, sizeOf: BufferSize, device: DeviceCheck): void {
  checkDtype(op.dtype, caps, at);
  checkHeadDim(op.headDim, caps, at);
  if (isQuantized(op.dtype)) checkQuantHeadDim(op.dtype, op.headDim, `${at} dtype`);
  const layout = checkOneOf(`${at} layout`, op.layout ?? "NHD", bufferLayouts(caps, op.dtype));
  checkInt(`${at} rowHeads`, op.rowHeads, 0);
  checkInt(`${at} srcHeads`, op.srcHeads, 0);
  if (!(op.rows instanceof Int32Array)) throw new DuoError("INVALID_ARGUMENT", `${at}: rows must be an Int32Array (one destination row per source token)`);
  const T = op.rows.length;
  tensor("src", op.src, T * op.srcHeads * op.headDim, `rows.length × srcHeads × headDim = ${T} × ${op.srcHeads} × ${op.headDim}`, at, device);
  length("heads", op.heads, op.rowHeads, "rowHeads", at);
  for (const h of op.heads) {
    if (h < 0 || h >= op.srcHeads) throw new DuoError("INVALID_ARGUMENT", `${at}: heads entry ${h} is outside the ${op.srcHeads} source heads`);
  }
  const bytes = sizeOf(op.dst);
  const capacityRows = kvBufferRows(layout, bytes, op.rowHeads, op.headDim, op.dtype);
  if (layout !== "NHD" && capacityRows !== Infinity) checkTileable(capacityRows, op.headDim, `${at}: buffer ${op.dst}`, layout);
  for (const r of op.rows) {
    if (r >= capacityRows) throw new DuoError("CAPACITY", `${at}: row ${r} is past the buffer's ${capacityRows} rows`);
  }
}

function checkAttend(op: AttendOp<OpTensor>, at: string, caps: BackendCapabilities, sizeOf: BufferSize, device: DeviceCheck): void {
  checkHeadDim(op.headDim, caps, at);
  const T = checkInt(`${at} T`, op.T, 0), Hq = checkInt(`${at} numHeads`, op.numHeads, 0);
  const G = checkInt(`${at} group`, op.group, 1), D = op.headDim;
  checkInt(`${at} qPos0`, op.qPos0, 0, 2 ** 31 - 1 - T);
  tensor("q", op.q, T * Hq * D, `T × numHeads × headDim = ${T} × ${Hq} × ${D}`, at, device);
  tensor("out", op.out, T * Hq * D, `T × numHeads × headDim = ${T} × ${Hq} × ${D}`, at, device);
  if (op.lse !== undefined) {
    tensor("lse", op.lse, T * Hq, `T × numHeads = ${T} × ${Hq}`, at, device);
    if (isDeviceTensor(op.lse) !== isDeviceTensor(op.out)) throw new DuoError("INVALID_ARGUMENT", `${at}: out and lse must both be host arrays or both device tensors`);
    if (isDeviceTensor(op.out) && isDeviceTensor(op.lse) && overlap(op.out, op.lse)) {
      throw new DuoError("INVALID_ARGUMENT", `${at}: out (elements [${op.out.offset}, ${op.out.offset + op.out.length}) of buffer ${op.out.handle}) and lse (elements [${op.lse.offset}, ${op.lse.offset + op.lse.length})) overlap; they must be disjoint`);
    }
  }
  length("kvSlots", op.kvSlots, op.qHeads?.length, "qHeads.length", at);
  for (const h of op.qHeads) {
    if (h < 0 || (h + 1) * G > Hq) throw new DuoError("INVALID_ARGUMENT", `${at}: qHeads entry ${h} selects query heads ${h * G}..${h * G + G - 1}, outside the ${Hq} query heads`);
  }
  if (op.window !== null) {
    checkInt(`${at} window.sink`, op.window?.sink, 0, 2 ** 31 - 1);
    checkInt(`${at} window.recent`, op.window?.recent, 0, 2 ** 31 - 1);
  }
  if (!Array.isArray(op.segments)) throw new DuoError("INVALID_ARGUMENT", `${at}: segments must be an array`);
  if (op.qHeads.length > 0 && T > 0) op.segments.forEach((s, i) => checkSegment(s, `${at} segment ${i}`, op, caps, sizeOf));
}

function checkSegment(s: Segment, at: string, op: AttendOp<OpTensor>, caps: BackendCapabilities, sizeOf: BufferSize): void {
  checkDtype(s.dtype, caps, at);
  const layout: KvLayout = checkOneOf(`${at} layout`, s.layout ?? "NHD", isQuantized(s.dtype) ? ["NHD"] : caps.layouts);
  checkInt(`${at} rowHeads`, s.rowHeads, 1);
  const start = checkInt(`${at} rowStart`, s.rowStart, 0), count = checkInt(`${at} rowCount`, s.rowCount, 0);
  for (const slot of op.kvSlots) {
    if (slot < 0 || slot >= s.rowHeads) throw new DuoError("INVALID_ARGUMENT", `${at}: kvSlots entry ${slot} is outside the segment's ${s.rowHeads} row heads`);
  }
  if (layout === "T64") checkSharedBuffer(s.k, s.v, at);
  const end = kvBufferBytes(layout, start + count, s.rowHeads, op.headDim, s.dtype);
  for (const [name, h] of [["k", s.k], ["v", s.v]] as const) {
    const bytes = sizeOf(h);
    if (end > bytes) throw new DuoError("SHAPE_MISMATCH", `${at}: rows ${start}..${start + count - 1} of ${s.rowHeads} × ${op.headDim} ${s.dtype} (${layout}) need ${end} bytes of ${name} buffer ${h}, which has ${bytes}`);
    if (layout === "T64") checkTileable(kvBufferRows(layout, bytes, s.rowHeads, op.headDim, s.dtype), op.headDim, `${at}: ${name} buffer ${h}`, layout);
  }
  if (typeof s.positions === "number") checkInt(`${at} positions`, s.positions, -(2 ** 31), 2 ** 31 - 1 - count);
  else if (!(s.positions instanceof Int32Array) || s.positions.length !== count) {
    throw new DuoError("SHAPE_MISMATCH", `${at}: positions must be a number or an Int32Array of rowCount = ${count} entries`);
  }
}
