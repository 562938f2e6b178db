/**
 * The op executor of one duo.wasm instance: it owns the buffers of one shard (handle -> pointer), copies the host
 * arrays of each op into a scratch block of the module's memory and calls the kernels (wasm/src/duo.h). The same class
 * runs in this thread (threads: 0) and inside every worker (wasm-worker.ts); ops reaching it are already validated by
 * the backend (wasm.ts), which owns the handle table and the byte accounting.
 */
import { DuoError, type DuoErrorCode } from "../errors.ts";
import { kvBufferRows } from "./layout.ts";
import { DTYPE_CODE, DUO_API_VERSION, LAYOUT_CODE, packSegment, SEGMENT_WORDS } from "./abi.ts";
import type { AppendOp, AttendOp, Handle } from "./types.ts";

export { DUO_API_VERSION };

/** The exports of duo.wasm / duo-scalar.wasm (wasm/src/duo.h). Pointers are u32 byte offsets. */
export interface DuoExports {
  memory: WebAssembly.Memory;
  duo_api_version(): number;
  duo_alloc(bytes: number): number;
  duo_free(ptr: number): void;
  duo_append(dst: number, dtype: number, rowHeads: number, headDim: number, src: number, srcHeads: number,
    heads: number, rows: number, n: number, layout: number, bufferRows: number): number;
  duo_attend(q: number, t: number, numHeads: number, headDim: number, group: number, nHeads: number, qHeads: number,
    kvSlots: number, segments: number, nSegments: number, qPos0: number, windowed: number, sink: number,
    recent: number, out: number, lse: number, work: number): number;
  duo_attend_workspace(t: number, group: number, nHeads: number, headDim: number): number;
  duo_merge(o: number, lse: number, oA: number, lseA: number, oB: number, lseB: number, n: number, headDim: number): void;
  duo_bench_read(ptr: number, bytes: number): number;
  duo_bench_mad(iters: number): number;
}

/** An attend op as it travels to the executor: the host outputs stay with the caller; `lse` says whether to make it. */
export type ExecAttend = Omit<AttendOp, "out" | "lse"> & { lse: boolean };
export type ExecOp = AppendOp | ExecAttend;
/** What an attend returns: out [T, J*G, D] and lse [T, J*G] for the J = qHeads.length KV heads of the op, compact. */
export interface AttendResult {
  out: Float32Array;
  lse: Float32Array | null;
}

/** Messages to a worker (wasm-worker.ts) and its replies; every request with an `id` gets exactly one reply. `seq`
 *  numbers every message and every request on the shared lane (wasm-lane.ts) from 1: the worker handles them in
 *  that order. `init` may bring the lane's memory. */
export type ToWorker = { seq: number } & (
  | { type: "init"; id: number; module: WebAssembly.Module; lane: SharedArrayBuffer | null }
  | { type: "alloc"; handle: Handle; bytes: number }
  | { type: "free"; handle: Handle }
  | { type: "run"; id: number; ops: ExecOp[] }
  | { type: "read"; id: number; handle: Handle; offset: number; length: number }
  | { type: "measure"; id: number; kind: "read" | "mad"; amount: number; reps: number });
export type FromWorker =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; code: DuoErrorCode; message: string };

/** Host rows are copied into wasm memory in pieces of at most this many bytes. */
const PIECE_BYTES = 4 << 20;

export async function instantiate(module: WebAssembly.Module): Promise<DuoExports> {
  const instance = await WebAssembly.instantiate(module, {});
  const ex = instance.exports as unknown as DuoExports;
  if (typeof ex.duo_api_version !== "function" || typeof ex.duo_attend !== "function") {
    throw new DuoError("BACKEND_UNAVAILABLE", "the WebAssembly module is not duo.wasm (it lacks duo_api_version/duo_attend)");
  }
  if (ex.duo_api_version() !== DUO_API_VERSION) {
    throw new DuoError("BACKEND_UNAVAILABLE", `duo.wasm has API version ${ex.duo_api_version()}, this code needs ${DUO_API_VERSION}; rebuild it (npm run build:wasm)`);
  }
  return ex;
}

const align64 = (n: number) => Math.ceil(n / 64) * 64;

/** Bump layout of one op's host arrays in the scratch block. */
class Layout {
  bytes = 0;
  take(bytes: number): number {
    const at = this.bytes;
    this.bytes += align64(bytes);
    return at;
  }
}

interface Buffer {
  ptr: number;
  bytes: number;
  /** an append has written Inf or NaN here (never cleared: the kernels then take their exact paths) */
  nonfinite: boolean;
}

export class WasmExec {
  private readonly buffers = new Map<Handle, Buffer>();
  private scratch = 0;
  private scratchBytes = 0;

  constructor(private readonly ex: DuoExports) {}

  static async create(module: WebAssembly.Module): Promise<WasmExec> {
    return new WasmExec(await instantiate(module));
  }

  /** False when the module's memory cannot grow enough (the 4 GiB limit, or fragmentation). */
  alloc(h: Handle, bytes: number): boolean {
    const ptr = this.ex.duo_alloc(bytes) >>> 0;
    if (ptr === 0) return false;
    this.buffers.set(h, { ptr, bytes, nonfinite: false });
    return true;
  }

  free(h: Handle): void {
    const b = this.buffers.get(h);
    if (!b) return;
    this.ex.duo_free(b.ptr);
    this.buffers.delete(h);
  }

  read(h: Handle, offset: number, length: number): Uint8Array {
    const b = this.buffer(h);
    return new Uint8Array(this.ex.memory.buffer, b.ptr + offset, length).slice();
  }

  /** Run ops in order; one result per op (null for appends). */
  run(ops: ExecOp[]): (AttendResult | null)[] {
    return ops.map((op) => (op.kind === "append" ? (this.append(op), null) : this.attend(op)));
  }

  /** Milliseconds for `reps` calls of a ceiling kernel: "read" sums `amount` bytes, "mad" runs `amount` steps. */
  measure(kind: "read" | "mad", amount: number, reps: number): number {
    let ptr = 0;
    if (kind === "read") {
      ptr = this.ensureScratch(amount);
      new Float32Array(this.ex.memory.buffer, ptr, amount / 4).fill(1);
    }
    let sink = 0;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) sink += kind === "read" ? this.ex.duo_bench_read(ptr, amount) : this.ex.duo_bench_mad(amount);
    const ms = performance.now() - t0;
    if (Number.isNaN(sink)) throw new DuoError("BACKEND_UNAVAILABLE", "benchmark kernel returned NaN");
    return ms;
  }

  private buffer(h: Handle): Buffer {
    const b = this.buffers.get(h);
    if (!b) throw new DuoError("INVALID_ARGUMENT", `wasm backend: buffer handle ${h} does not exist on this shard (freed, or its allocation failed)`);
    return b;
  }

  /** A scratch block of at least `bytes`; its pointer. Memory may grow: take views of memory.buffer after this. */
  private ensureScratch(bytes: number): number {
    if (bytes > this.scratchBytes) {
      if (this.scratch) this.ex.duo_free(this.scratch);
      const want = Math.max(bytes, Math.floor(this.scratchBytes * 1.5));
      this.scratch = this.ex.duo_alloc(want) >>> 0;
      this.scratchBytes = this.scratch ? want : 0;
      if (!this.scratch) {
        throw new DuoError("CAPACITY", `wasm backend: no room for ${want} bytes of scratch memory in this shard's 4 GiB; free some buffers`);
      }
    }
    return this.scratch;
  }

  private append(op: AppendOp): void {
    const dst = this.buffer(op.dst);
    const D = op.headDim, T = op.rows.length, rowFloats = op.srcHeads * D, layout = op.layout ?? "NHD";
    if (op.rowHeads === 0 || T === 0) return;
    const capacity = layout === "NHD" ? 0 : kvBufferRows(layout, dst.bytes, op.rowHeads, D, op.dtype);
    const kept: number[] = [];
    for (let t = 0; t < T; t++) if (op.rows[t]! >= 0) kept.push(t);
    const per = Math.max(1, Math.floor(PIECE_BYTES / Math.max(1, rowFloats * 4)));
    const lay = new Layout();
    const headsAt = lay.take(op.rowHeads * 4), rowsAt = lay.take(per * 4), srcAt = lay.take(per * rowFloats * 4);
    const base = this.ensureScratch(lay.bytes);
    const mem = this.ex.memory.buffer;
    new Int32Array(mem, base + headsAt, op.rowHeads).set(op.heads);
    const rows = new Int32Array(mem, base + rowsAt, per), src = new Float32Array(mem, base + srcAt, per * rowFloats);
    for (let k0 = 0; k0 < kept.length; k0 += per) {
      const n = Math.min(per, kept.length - k0);
      for (let i = 0; i < n; i++) {
        const t = kept[k0 + i]!;
        rows[i] = op.rows[t]!;
        src.set(op.src.subarray(t * rowFloats, (t + 1) * rowFloats), i * rowFloats);
      }
      const rc = this.ex.duo_append(dst.ptr, DTYPE_CODE[op.dtype], op.rowHeads, D, base + srcAt, op.srcHeads,
        base + headsAt, base + rowsAt, n, LAYOUT_CODE[layout], capacity);
      if (rc < 0) throw new DuoError("INVALID_ARGUMENT", `wasm backend: duo_append rejected its arguments (status ${rc})`);
      if (rc > 0) dst.nonfinite = true;
    }
  }

  private attend(op: ExecAttend): AttendResult {
    const { T, numHeads: Hq, headDim: D, group: G } = op;
    const J = op.qHeads.length;
    const out = new Float32Array(T * J * G * D), lse = op.lse ? new Float32Array(T * J * G) : null;
    if (T === 0 || J === 0) return { out, lse };
    const segs = op.segments.map((s) => ({ s, k: this.buffer(s.k), v: this.buffer(s.v) }));
    const per = Math.max(1, Math.min(T, Math.floor(PIECE_BYTES / (Hq * D * 4))));
    const lay = new Layout();
    const segAt = lay.take(segs.length * SEGMENT_WORDS * 4);
    const posAt = segs.map(({ s }) => (typeof s.positions === "number" ? -1 : lay.take(s.positions.length * 4)));
    const qHeadsAt = lay.take(J * 4), slotsAt = lay.take(J * 4);
    const qAt = lay.take(per * Hq * D * 4), outAt = lay.take(per * J * G * D * 4), lseAt = lay.take(per * J * G * 4);
    const workAt = lay.take(this.ex.duo_attend_workspace(per, G, J, D) >>> 0);
    const base = this.ensureScratch(lay.bytes);
    const mem = this.ex.memory.buffer;
    const segWords = new Int32Array(mem, base + segAt, segs.length * SEGMENT_WORDS);
    segs.forEach(({ s, k, v }, i) => {
      const numeric = typeof s.positions === "number";
      if (!numeric) new Int32Array(mem, base + posAt[i]!, s.rowCount).set(s.positions as Int32Array);
      packSegment(segWords, i, s, D, { k: k.ptr, v: v.ptr, kBytes: k.bytes, positions: numeric ? 0 : base + posAt[i]!, nonfinite: k.nonfinite || v.nonfinite });
    });
    new Int32Array(mem, base + qHeadsAt, J).set(op.qHeads);
    new Int32Array(mem, base + slotsAt, J).set(op.kvSlots);
    const q = new Float32Array(mem, base + qAt, per * Hq * D);
    const o = new Float32Array(mem, base + outAt, per * J * G * D), l = new Float32Array(mem, base + lseAt, per * J * G);
    const win = op.window;
    for (let t0 = 0; t0 < T; t0 += per) {
      const n = Math.min(per, T - t0);
      q.set(op.q.subarray(t0 * Hq * D, (t0 + n) * Hq * D));
      const rc = this.ex.duo_attend(base + qAt, n, Hq, D, G, J, base + qHeadsAt, base + slotsAt, base + segAt,
        segs.length, op.qPos0 + t0, win ? 1 : 0, win?.sink ?? 0, win?.recent ?? 0, base + outAt, lse ? base + lseAt : 0,
        base + workAt);
      if (rc < 0) throw new DuoError("INVALID_ARGUMENT", `wasm backend: duo_attend rejected its arguments (status ${rc})`);
      out.set(o.subarray(0, n * J * G * D), t0 * J * G * D);
      lse?.set(l.subarray(0, n * J * G), t0 * J * G);
    }
    return { out, lse };
  }
}
