/**
 * The native CPU backend: the kernels of wasm/src compiled for the host CPU (native/build.sh: AVX-512 / AVX2 + FMA /
 * SSE4.1 / NEON / scalar, chosen by the library at load) and called through ffi/ (bun:ffi, Deno.dlopen, koffi).
 *
 * One shard: the library's thread pool splits each attend over `threads` threads (heads, or KV rows with a
 * log-sum-exp merge: native/src/attend_mt.c) in shared memory, so there is no sharding to do here. Buffers are host
 * blocks of the library (64-byte aligned, no 4 GiB limit on the whole; a buffer itself holds less than 4 GiB),
 * referenced by their address, which only this module sees: the Backend contract's handles map to them. Host arrays
 * (q, out, lse, src, heads, rows, the segment table) are handed to every call as they are; explicit positions are
 * copied into a scratch block of the library, because a segment names them by address (the one wire format of
 * abi.ts, which the wasm build reads too).
 *
 * Ops are validated here (validate.ts) and again by the library against its block table, so a rejected op writes
 * nothing; a library refusal becomes a DuoError with duo_last_error's message.
 */
import { createModelKernels, type ModelKernels, type ModelKernelsOptions } from "../model/kernels.ts";
import { KV_DTYPES, type KvDtype } from "../dtype.ts";
import { checkInt, DuoError, type DuoErrorCode } from "../errors.ts";
import { runtime } from "../runtime.ts";
import type { NativeLibrary } from "../../ffi/symbols.ts";
import { DTYPE_CODE, LAYOUT_CODE, packSegment, scatterCompact, SEGMENT_WORDS, STATUS } from "./abi.ts";
import { kvBufferRows, type KvLayout, tileable } from "./layout.ts";
import type { BackendOptions } from "./registry.ts";
import type { AppendOp, AttendOp, Backend, BackendCapabilities, BackendMemory, BackendProbe, Handle, Op } from "./types.ts";
import { checkOps } from "./validate.ts";

/** The wasm/src kernels compiled natively implement what they do in wasm: every dtype (int8 / int4 token-major only,
 *  validate.ts), head dims in 4-lane vectors, token-major and tiled pages. */
export const NATIVE_CAPABILITIES: BackendCapabilities = { dtypes: KV_DTYPES, headDims: { multipleOf: 4 }, layouts: ["NHD", "T64"] };

/** A buffer holds less than 4 GiB: the kernels' offsets inside one buffer are 32-bit (wasm/src/duo.h). */
const MAX_BUFFER_BYTES = 2 ** 32 - 64;

interface Block {
  ptr: number;
  bytes: number;
  /** an append has written Inf or NaN here (the kernels then take their exact paths) */
  nonfinite: boolean;
}

async function load(opts: BackendOptions) {
  return await (await import("../../ffi/load.ts")).loadNativeLibrary(opts.nativeLibrary);
}

/** Usable iff this runtime has an FFI and the library of this host loads with the right API version. */
export async function probeNative(opts: BackendOptions = {}): Promise<BackendProbe & { isa?: string }> {
  try {
    const { lib } = await load(opts);
    return { name: "native", usable: true, isa: lib.duo_isa() };
  } catch (e) {
    return { name: "native", usable: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

export async function createNativeBackend(opts: BackendOptions = {}): Promise<NativeBackend> {
  const threads = Math.max(1, checkInt("threads", opts.threads ?? runtime().cores, 0, 256));
  const { lib } = await load(opts);
  return new NativeBackend(lib, threads);
}

export class NativeBackend implements Backend {
  readonly name = "native" as const;
  readonly shards = 1;
  readonly capabilities = NATIVE_CAPABILITIES;
  /** the instruction set the library's kernels run with ("avx512", "avx2", "sse41", "neon", "scalar") */
  readonly isa: string;
  private readonly blocks = new Map<Handle, Block>();
  private nextHandle = 1;
  private allocated = 0;
  private disposed = false;
  /** blocks the read ceiling streams, by size */
  private readonly benchBlocks = new Map<number, number>();
  /** a block for explicit positions (segments name them by address) */
  private scratch: Block | null = null;
  // Small argument arrays, reused: passed whole on every call, never as cached pointers.
  private readonly addr = new Uint32Array(2);

  constructor(private readonly lib: NativeLibrary, readonly threads: number) {
    this.isa = lib.duo_isa();
  }

  /** The model kernels of this library with this backend's threads (NativeKernels); on a CPU where the library runs
   *  its scalar set, the wasm ones (the native model kernels need SIMD). */
  async modelKernels(options: ModelKernelsOptions = {}): Promise<ModelKernels> {
    if (this.isa === "scalar") return await createModelKernels("auto", options);
    return await (await import("../model/kernels-native.ts")).nativeKernelsOn(this.lib, options.threads ?? this.threads, options.memoryBudget);
  }

  /** The same rule as wasm (the same kernels): tiled pages where the G = 4 bf16/f16 decode fast path applies. */
  pageLayout(dtype: KvDtype, headDim: number, pageRows: number, group: number): KvLayout {
    return (dtype === "f16" || dtype === "bf16") && group === 4 && tileable(pageRows, headDim) ? "T64" : "NHD";
  }

  alloc(shard: number, bytes: number): Handle {
    this.live(shard);
    checkInt("alloc bytes", bytes, 0);
    if (bytes > MAX_BUFFER_BYTES) {
      throw new DuoError("UNSUPPORTED", `native backend: one buffer holds less than 4 GiB (the kernels' offsets inside a buffer are 32-bit), asked for ${bytes} bytes; use smaller pages`);
    }
    const ptr = this.allocBlock(Math.max(64, bytes));
    const h = this.nextHandle++;
    this.blocks.set(h, { ptr, bytes, nonfinite: false });
    this.allocated += Math.ceil(Math.max(64, bytes) / 64) * 64;
    return h;
  }

  free(shard: number, h: Handle): void {
    this.live(shard);
    const b = this.block(h);
    this.check(this.lib.duo_free(b.ptr), "duo_free");
    this.blocks.delete(h);
    this.allocated -= Math.ceil(Math.max(64, b.bytes) / 64) * 64;
  }

  memory(shard: number): BackendMemory {
    this.live(shard);
    return { allocated: this.allocated, capacity: Infinity };
  }

  async read(shard: number, h: Handle, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.live(shard);
    const b = this.block(h);
    checkInt("read byteOffset", byteOffset, 0, b.bytes);
    checkInt("read byteLength", byteLength, 0, b.bytes - byteOffset);
    const dst = new Uint8Array(byteLength);
    this.check(this.lib.duo_read(b.ptr, byteOffset, byteLength, dst), "duo_read");
    return dst;
  }

  async run(shard: number, ops: Op[]): Promise<void> {
    this.live(shard);
    checkOps(ops, this.capabilities, (h) => this.block(h).bytes);
    this.lib.duo_threads(this.threads);
    for (const op of ops) {
      if (op.kind === "append") this.append(op);
      else this.attend(op);
    }
  }

  /** The build that runs the kernels (for the ceilings: wasm-ceilings.ts). */
  get kernels(): string {
    return `native ${this.isa}`;
  }
  /** Every thread runs all multiply-add steps of a "mad" measure. */
  get madThreads(): number {
    return this.threads;
  }

  /** Milliseconds for `reps` calls of a ceiling kernel over this backend's threads (bench/wasm-kernels.ts,
   *  wasm-ceilings.ts): "read" streams `amount` bytes (a multiple of 64, split over the threads), "mad" runs `amount`
   *  steps of 96 FLOP on every thread. */
  async measure(shard: number, kind: "read" | "mad", amount: number, reps: number): Promise<number> {
    this.live(shard);
    this.lib.duo_threads(this.threads);
    let ptr = 0;
    if (kind === "read") { // filled once per size and kept: callers time the whole call
      ptr = this.benchBlocks.get(amount) ?? 0;
      if (!ptr) {
        ptr = this.allocBlock(amount);
        this.check(this.lib.duo_write(ptr, 0, amount, new Float32Array(amount / 4).fill(1)), "duo_write");
        this.benchBlocks.set(amount, ptr);
      }
    }
    let sink = 0;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) sink += kind === "read" ? this.lib.duo_bench_read(ptr, amount) : this.lib.duo_bench_mad(amount);
    const ms = performance.now() - t0;
    if (Number.isNaN(sink)) throw new DuoError("BACKEND_UNAVAILABLE", "benchmark kernel returned NaN");
    return ms;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.blocks.values()) this.lib.duo_free(b.ptr);
    this.blocks.clear();
    if (this.scratch) this.lib.duo_free(this.scratch.ptr);
    this.scratch = null;
    for (const ptr of this.benchBlocks.values()) this.lib.duo_free(ptr);
    this.benchBlocks.clear();
    this.allocated = 0;
  }

  private allocBlock(bytes: number): number {
    this.check(this.lib.duo_alloc(bytes, this.addr), "duo_alloc", "CAPACITY");
    return this.addr[0]! + this.addr[1]! * 2 ** 32;
  }

  private append(op: AppendOp): void {
    const dst = this.block(op.dst), layout = op.layout ?? "NHD";
    if (op.rowHeads === 0 || op.rows.length === 0) return;
    const rows = layout === "NHD" ? 0 : kvBufferRows(layout, dst.bytes, op.rowHeads, op.headDim, op.dtype);
    const rc = this.lib.duo_append(dst.ptr, DTYPE_CODE[op.dtype], op.rowHeads, op.headDim, op.src, op.srcHeads, op.heads,
      op.rows, op.rows.length, LAYOUT_CODE[layout], rows);
    this.check(rc, "duo_append");
    if (rc > 0) dst.nonfinite = true;
  }

  private attend(op: AttendOp): void {
    const { T, numHeads: Hq, headDim: D, group: G } = op;
    const J = op.qHeads.length;
    if (T === 0 || J === 0) return;
    let npos = 0;
    for (const s of op.segments) if (typeof s.positions !== "number") npos += s.rowCount;
    const pos = npos > 0 ? this.positionsBlock(npos * 4) : 0;
    const words = new Int32Array(op.segments.length * SEGMENT_WORDS);
    let at = 0;
    op.segments.forEach((s, i) => {
      const k = this.block(s.k), v = this.block(s.v);
      let positions = 0;
      if (typeof s.positions !== "number" && s.rowCount > 0) {
        this.check(this.lib.duo_write(pos, at * 4, s.rowCount * 4, s.positions), "duo_write");
        positions = pos + at * 4;
        at += s.rowCount;
      }
      packSegment(words, i, s, D, { k: k.ptr, v: v.ptr, kBytes: k.bytes, positions, nonfinite: k.nonfinite || v.nonfinite });
    });
    const out = new Float32Array(T * J * G * D), lse = op.lse ? new Float32Array(T * J * G) : null;
    const win = op.window;
    this.check(this.lib.duo_attend(op.q, T, Hq, D, G, J, op.qHeads, op.kvSlots, words, op.segments.length, op.qPos0,
      win ? 1 : 0, win?.sink ?? 0, win?.recent ?? 0, out, lse, null), "duo_attend");
    scatterCompact(op, out, lse);
  }

  /** The positions scratch block, grown to at least `bytes`; its address. */
  private positionsBlock(bytes: number): number {
    if (!this.scratch || this.scratch.bytes < bytes) {
      const want = Math.max(bytes, 4096, (this.scratch?.bytes ?? 0) * 2);
      if (this.scratch) this.lib.duo_free(this.scratch.ptr);
      this.scratch = null;
      this.scratch = { ptr: this.allocBlock(want), bytes: want, nonfinite: false };
    }
    return this.scratch.ptr;
  }

  private check(status: number, fn: string, code: DuoErrorCode = "INVALID_ARGUMENT"): void {
    if (status >= 0) return;
    const c: DuoErrorCode = status === STATUS.E_CAPACITY ? "CAPACITY" : status === STATUS.E_UNSUPPORTED ? "UNSUPPORTED" : code;
    throw new DuoError(c, `native backend: ${fn} refused: ${this.lib.duo_last_error() || `status ${status}`}`);
  }

  private live(shard: number): void {
    if (this.disposed) throw new DuoError("DISPOSED", "native backend: used after dispose()");
    if (shard !== 0) throw new DuoError("INVALID_ARGUMENT", `native backend: shard must be 0 (it has 1 shard; threads split each op), got ${shard}`);
  }

  private block(h: Handle): Block {
    const b = this.blocks.get(h);
    if (!b) throw new DuoError("INVALID_ARGUMENT", `native backend: unknown buffer handle ${h} (never allocated here, or freed)`);
    return b;
  }
}

/** Switch the library's kernels to one instruction set, process-wide ("" = the best this CPU runs); false when this
 *  build or CPU lacks it. For tests and benchmarks that compare the sets (native/src/host.h duo_select_isa). */
export async function selectNativeIsa(name: string, opts: BackendOptions = {}): Promise<boolean> {
  const { lib } = await load(opts);
  return lib.duo_select_isa(new TextEncoder().encode(`${name}\0`)) === STATUS.OK;
}
