/**
 * The shared lane of a wasm worker: run requests and their replies written into a SharedArrayBuffer, with Atomics
 * to wake each side, instead of structured-cloned messages. A decode step posts a few small ops per layer and shard;
 * cloning their object graphs both ways and waking the worker's event loop cost more than the kernels at short
 * contexts (bench/wasm-transport.ts: the lane takes half or more off that cost in Bun and Deno, a fifth in Node).
 *
 * One lane per worker, one request on it at a time; requests that do not fit, or arrive while it is busy, travel as
 * messages. Every request (lane or message) carries a sequence number and the worker handles them in that order
 * (wasm-worker.ts), so an allocation posted before a run is done before the run starts, whichever way each came.
 *
 * Memory: ctl (Int32Array[4]: REQ, DONE, STATUS, spare), then the request area and the reply area, REQ_BYTES each.
 * The request is a stream of 32-bit words (ints, and floats through a Float32Array over the same bytes):
 *   [nOps] then per op
 *   append: 0 dst dtype rowHeads headDim srcHeads layout T | heads[rowHeads] | rows[T] | src[T·srcHeads·headDim] (f32)
 *   attend: 1 T numHeads headDim group J nSegments qPos0 windowed sink recent lse | qHeads[J] | kvSlots[J] |
 *           per segment: k v dtype rowHeads rowStart rowCount layout hasPositions pos0 | positions[rowCount]? |
 *           q[T·numHeads·headDim] (f32)
 * The reply: per attend op, out [T, J·G, D] then lse [T, J·G] when asked (f32); on failure (STATUS = 1) the error's
 * code and message as [codeLength, messageLength, UTF-16 units...].
 */
import { KV_DTYPES, type KvDtype } from "../dtype.ts";
import { DuoError, type DuoErrorCode } from "../errors.ts";
import { runtime } from "../runtime.ts";
import type { BufferLayout, KvLayout } from "./layout.ts";
import type { AppendOp, Segment } from "./types.ts";
import type { AttendResult, ExecAttend, ExecOp } from "./wasm-exec.ts";

/** ctl word indices */
export const REQ = 0, DONE = 1, STATUS = 2;
/** DONE when the lane is shut (worker failed or disposed): wakes a waiting caller for good */
export const CLOSED = -1;
const CTL_BYTES = 64;
/** bytes of the request area and of the reply area: a decode step's ops and outputs fit several times over (a 64-head
 *  × 128 query row is 32 KiB); prefill chunks go as messages, where their size hides the message's cost */
export const REQ_BYTES = 256 << 10;

const LAYOUTS: readonly (BufferLayout | KvLayout)[] = ["NHD", "K64", "V64", "T64"];

/** A lane's shared memory and its views (the same on both sides). */
export class Lane {
  readonly ctl: Int32Array;
  private readonly reqI: Int32Array;
  private readonly reqF: Float32Array;
  private readonly repF: Float32Array;
  private readonly repU16: Uint16Array;

  constructor(readonly memory: SharedArrayBuffer) {
    this.ctl = new Int32Array(memory, 0, 4);
    this.reqI = new Int32Array(memory, CTL_BYTES, REQ_BYTES / 4);
    this.reqF = new Float32Array(memory, CTL_BYTES, REQ_BYTES / 4);
    this.repF = new Float32Array(memory, CTL_BYTES + REQ_BYTES, REQ_BYTES / 4);
    this.repU16 = new Uint16Array(memory, CTL_BYTES + REQ_BYTES, REQ_BYTES / 2);
  }

  static create(): Lane {
    return new Lane(new SharedArrayBuffer(CTL_BYTES + 2 * REQ_BYTES));
  }

  /** Write `ops` into the request area; false (nothing usable written) when they or their reply would not fit. */
  encode(ops: ExecOp[]): boolean {
    if (requestWords(ops) > this.reqI.length || replyWords(ops) > this.repF.length) return false;
    const I = this.reqI, F = this.reqF;
    let p = 0;
    I[p++] = ops.length;
    for (const op of ops) {
      if (op.kind === "append") {
        const T = op.rows.length;
        I.set([0, op.dst, dtypeCode(op.dtype), op.rowHeads, op.headDim, op.srcHeads, layoutCode(op.layout ?? "NHD"), T], p);
        p += 8;
        I.set(op.heads, p);
        p += op.heads.length;
        I.set(op.rows, p);
        p += T;
        F.set(op.src, p);
        p += op.src.length;
        continue;
      }
      const J = op.qHeads.length, w = op.window;
      I.set([1, op.T, op.numHeads, op.headDim, op.group, J, op.segments.length, op.qPos0, w ? 1 : 0, w?.sink ?? 0,
        w?.recent ?? 0, op.lse ? 1 : 0], p);
      p += 12;
      I.set(op.qHeads, p);
      p += J;
      I.set(op.kvSlots, p);
      p += J;
      for (const s of op.segments) {
        const listed = typeof s.positions !== "number";
        I.set([s.k, s.v, dtypeCode(s.dtype), s.rowHeads, s.rowStart, s.rowCount, layoutCode(s.layout ?? "NHD"),
          listed ? 1 : 0, listed ? 0 : (s.positions as number)], p);
        p += 9;
        if (listed) {
          I.set(s.positions as Int32Array, p);
          p += s.rowCount;
        }
      }
      F.set(op.q, p);
      p += op.q.length;
    }
    return true;
  }

  /** The ops of the request area, as views into it (valid until the next request is written). */
  decode(): ExecOp[] {
    const I = this.reqI, F = this.reqF;
    let p = 0;
    const ops: ExecOp[] = [];
    for (let n = I[p++]!; n > 0; n--) {
      if (I[p] === 0) {
        const [, dst, dtype, rowHeads, headDim, srcHeads, layout, T] = I.subarray(p, p + 8);
        p += 8;
        const heads = I.subarray(p, (p += rowHeads!)), rows = I.subarray(p, (p += T!));
        const src = F.subarray(p, (p += T! * srcHeads! * headDim!));
        ops.push({ kind: "append", dst: dst!, dtype: KV_DTYPES[dtype!]!, rowHeads: rowHeads!, headDim: headDim!, src,
          srcHeads: srcHeads!, heads, rows, layout: LAYOUTS[layout!] as BufferLayout } satisfies AppendOp);
        continue;
      }
      const [, T, numHeads, headDim, group, J, nSeg, qPos0, windowed, sink, recent, lse] = I.subarray(p, p + 12);
      p += 12;
      const qHeads = I.subarray(p, (p += J!)), kvSlots = I.subarray(p, (p += J!));
      const segments: Segment[] = [];
      for (let s = 0; s < nSeg!; s++) {
        const [k, v, dtype, rowHeads, rowStart, rowCount, layout, listed, pos0] = I.subarray(p, p + 9);
        p += 9;
        const positions = listed ? I.subarray(p, (p += rowCount!)) : pos0!;
        segments.push({ k: k!, v: v!, dtype: KV_DTYPES[dtype!]!, rowHeads: rowHeads!, rowStart: rowStart!,
          rowCount: rowCount!, positions, layout: LAYOUTS[layout!] as KvLayout });
      }
      const q = F.subarray(p, (p += T! * numHeads! * headDim!));
      ops.push({ kind: "attend", q, T: T!, numHeads: numHeads!, headDim: headDim!, group: group!, qHeads, kvSlots,
        segments, qPos0: qPos0!, window: windowed ? { sink: sink!, recent: recent! } : null, lse: lse === 1 } satisfies ExecAttend);
    }
    return ops;
  }

  /** Write the results of a request into the reply area (they fit: encode() checked). */
  reply(results: (AttendResult | null)[]): void {
    let p = 0;
    for (const r of results) {
      if (!r) continue;
      this.repF.set(r.out, p);
      p += r.out.length;
      if (r.lse) {
        this.repF.set(r.lse, p);
        p += r.lse.length;
      }
    }
  }

  /** The results of `ops` from the reply area, copied out. */
  results(ops: ExecOp[]): (AttendResult | null)[] {
    let p = 0;
    return ops.map((op) => {
      if (op.kind === "append") return null;
      const rows = op.T * op.qHeads.length * op.group;
      const out = this.repF.slice(p, (p += rows * op.headDim));
      const lse = op.lse ? this.repF.slice(p, (p += rows)) : null;
      return { out, lse };
    });
  }

  /** Write a failure into the reply area. */
  fail(code: DuoErrorCode, message: string): void {
    const text = code + message.slice(0, this.repU16.length - code.length - 4);
    const head = new Int32Array(this.repU16.buffer, this.repU16.byteOffset, 2);
    head[0] = code.length;
    head[1] = text.length - code.length;
    for (let i = 0; i < text.length; i++) this.repU16[4 + i] = text.charCodeAt(i);
  }

  /** The failure in the reply area. */
  error(): DuoError {
    const head = new Int32Array(this.repU16.buffer, this.repU16.byteOffset, 2);
    const units = this.repU16.subarray(4, 4 + head[0]! + head[1]!);
    let text = "";
    for (let i = 0; i < units.length; i += 4096) text += String.fromCharCode(...units.subarray(i, i + 4096));
    return new DuoError(text.slice(0, head[0]) as DuoErrorCode, text.slice(head[0]));
  }
}

/** Whether this runtime can share memory with its workers and wait for it asynchronously (browsers: only pages
 *  that are cross-origin isolated get SharedArrayBuffer). */
export function laneUsable(): boolean {
  const g = globalThis as { crossOriginIsolated?: boolean; Atomics?: { waitAsync?: unknown } };
  const rt = runtime();
  if (!rt.sharedArrayBuffer || typeof g.Atomics?.waitAsync !== "function") return false;
  return rt.name === "node" || rt.name === "bun" || rt.name === "deno" || g.crossOriginIsolated === true;
}

/** Wait (without blocking this thread) until ctl[index] differs from `value`. */
export async function waitChange(ctl: Int32Array, index: number, value: number): Promise<void> {
  const w = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<unknown> } })
    .waitAsync(ctl, index, value);
  if (w.async) await w.value;
}

function requestWords(ops: ExecOp[]): number {
  let n = 1;
  for (const op of ops) {
    if (op.kind === "append") n += 8 + op.heads.length + op.rows.length + op.src.length;
    else {
      n += 12 + 2 * op.qHeads.length + op.q.length;
      for (const s of op.segments) n += 9 + (typeof s.positions === "number" ? 0 : s.rowCount);
    }
  }
  return n;
}

function replyWords(ops: ExecOp[]): number {
  let n = 0;
  for (const op of ops) if (op.kind === "attend") n += op.T * op.qHeads.length * op.group * (op.headDim + (op.lse ? 1 : 0));
  return n;
}

function dtypeCode(d: KvDtype): number {
  return KV_DTYPES.indexOf(d);
}

function layoutCode(l: BufferLayout | KvLayout): number {
  return LAYOUTS.indexOf(l);
}
