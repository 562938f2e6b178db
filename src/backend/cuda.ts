/**
 * The CUDA backend: the Backend contract (types.ts) over libduo_cuda.so (cuda/include/duo.h).
 *
 * One shard (one device). Buffers are device buffers behind the library's u32 handles; ops map one to one onto
 * duo_append and duo_attend, whose flat int32 parameter arrays and segment table are filled here. Host arrays are
 * passed to every call as they are; the library copies what it needs and has written `out` / `lse` when it returns.
 * Ops may name device tensors instead (types.ts DeviceTensor: the activations of this backend's model kernels, or a
 * buffer of its own): they stay on the device, and a device `out` is written in stream order (a later download or
 * argmax waits for it).
 * The FFI itself (bun:ffi, Deno.dlopen, koffi) lives in ffi/ and is imported on first use.
 *
 * Every op is checked first as every backend checks it (validate.ts: exact array lengths, heads, slots, rows, buffer
 * bounds); the library checks every value again before it touches the device, so a rejected call changes nothing.
 */
import { KV_DTYPES } from "../dtype.ts";
import { checkInt, DuoError, type DuoErrorCode } from "../errors.ts";
import type { LoadedLibrary } from "../../ffi/load.ts";
import type { DuoLibrary } from "../../ffi/symbols.ts";
import type { BackendOptions } from "./registry.ts";
import type { KvLayout } from "./layout.ts";
import type { AppendOp, AttendOp, Backend, BackendCapabilities, BackendMemory, BackendProbe, Handle, Op, OpTensor } from "./types.ts";
import { checkOps, isDeviceTensor } from "./validate.ts";

export interface CudaBackendOptions extends BackendOptions {
  /** split-KV key chunks per KV head: 0 = automatic (default), 1 = off, n = at most n (tests and benchmarks) */
  splits?: number;
}

async function abi(): Promise<typeof import("../../ffi/symbols.ts")> {
  return await import("../../ffi/symbols.ts");
}

async function load(opts: BackendOptions): Promise<LoadedLibrary> {
  return await (await import("../../ffi/load.ts")).loadLibrary(opts.cudaLibrary);
}

/** Devices on this machine, or a DuoError saying why there are none. */
function deviceCount(lib: DuoLibrary): number {
  const n = lib.duo_device_count();
  if (n < 0) throw new DuoError("BACKEND_UNAVAILABLE", `no CUDA device (${lib.duo_last_error()})`);
  if (n === 0) throw new DuoError("BACKEND_UNAVAILABLE", "no CUDA device (cudaGetDeviceCount found none)");
  return n;
}

function checkDevice(lib: DuoLibrary, device: number): void {
  const n = deviceCount(lib);
  if (device >= n) {
    throw new DuoError("BACKEND_UNAVAILABLE", `no CUDA device ${device} (this machine has ${n}: 0..${n - 1})`);
  }
}

/** Usable iff the library loads (API version checked) and the requested device exists. */
export async function probeCuda(opts: BackendOptions): Promise<BackendProbe> {
  try {
    const device = checkInt("device", opts.device ?? 0, 0);
    checkDevice((await load(opts)).lib, device);
    return { name: "cuda", usable: true };
  } catch (e) {
    return { name: "cuda", usable: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

export async function createCudaBackend(opts: CudaBackendOptions): Promise<Backend> {
  const device = checkInt("device", opts.device ?? 0, 0);
  const splits = checkInt("splits", opts.splits ?? 0, 0, 65535);
  const { lib } = await load(opts);
  checkDevice(lib, device);
  const symbols = await abi();
  const status = lib.duo_init(device);
  if (status !== symbols.STATUS.OK) throw statusError(lib, status, symbols.STATUS);
  return new CudaBackend(lib, symbols, splits);
}

/** The DuoError of a failed library call: its code from the status, its message the library's (`who` in front). */
export function statusError(lib: DuoLibrary, status: number, S: typeof import("../../ffi/symbols.ts").STATUS, who = "cuda backend"): DuoError {
  const code: DuoErrorCode = status === S.ERR_CAPACITY ? "CAPACITY"
    : status === S.ERR_UNSUPPORTED ? "UNSUPPORTED"
    : status === S.ERR_ARGUMENT || status === S.ERR_HANDLE ? "INVALID_ARGUMENT"
    : "BACKEND_UNAVAILABLE";
  return new DuoError(code, `${who}: ${lib.duo_last_error()} (status ${status})`);
}

/** The head dims cuda/src instantiates its kernels for (attend.cu), every dtype (int8 / int4: the records of
 *  src/quant.ts, quantized on append and dequantized inside the attention kernels; both head dims are even, as int4
 *  needs), token-major pages only (duo.h); device tensors for append src and attend q / out / lse. */
export const CUDA_CAPABILITIES: BackendCapabilities = { dtypes: KV_DTYPES, headDims: [64, 128], layouts: ["NHD"], deviceTensors: true };

export class CudaBackend implements Backend {
  readonly name = "cuda" as const;
  readonly shards = 1;
  readonly capabilities = CUDA_CAPABILITIES;

  pageLayout(): KvLayout {
    return "NHD";
  }
  /** handle → bytes, of the buffers this backend allocated and has not freed */
  private readonly handles = new Map<Handle, number>();
  /** the model kernel sets made on this backend: their activations are device tensors its ops may name */
  private readonly kernelSets: import("../model/kernels-cuda.ts").CudaKernels[] = [];
  private disposed = false;
  // Small argument arrays, reused: they are passed whole on every call (never as cached pointers).
  private readonly handleOut = new Uint32Array(1);
  private readonly memOut = new Float64Array(3);
  private readonly appendParams: Int32Array;
  private readonly attendParams: Int32Array;

  constructor(
    private readonly lib: DuoLibrary,
    private readonly abi: typeof import("../../ffi/symbols.ts"),
    private readonly splits: number,
  ) {
    this.appendParams = new Int32Array(abi.APPEND.PARAMS);
    this.attendParams = new Int32Array(abi.ATTEND.PARAMS);
  }

  alloc(shard: number, bytes: number): Handle {
    this.live(shard);
    checkInt("bytes", bytes, 0);
    this.check(this.lib.duo_alloc(bytes, this.handleOut));
    const h = this.handleOut[0]!;
    this.handles.set(h, bytes);
    return h;
  }

  free(shard: number, h: Handle): void {
    this.live(shard);
    if (!this.handles.has(h)) return;
    const status = this.lib.duo_free(h);
    // The handle is forgotten only once the library let go of it (or never knew it): after any other failure it
    // stays owned, so that a later free() or dispose() tries again and memory() keeps counting it.
    if (status === this.abi.STATUS.OK || status === this.abi.STATUS.ERR_HANDLE) this.handles.delete(h);
    this.check(status);
  }

  memory(shard: number): BackendMemory {
    this.live(shard);
    this.check(this.lib.duo_memory(this.memOut));
    return { allocated: this.memOut[0]!, capacity: this.memOut[0]! + this.memOut[1]! };
  }

  async read(shard: number, h: Handle, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.live(shard);
    this.owned(h);
    checkInt("byteOffset", byteOffset, 0);
    checkInt("byteLength", byteLength, 0);
    const dst = new Uint8Array(byteLength);
    this.check(this.lib.duo_read(h, byteOffset, byteLength, dst));
    return dst;
  }

  async run(shard: number, ops: Op<OpTensor>[]): Promise<void> {
    this.live(shard);
    checkOps(ops, this.capabilities, (h) => this.owned(h), (h) => this.tensorBytes(h));
    for (const op of ops) {
      if (op.kind === "append") this.append(op);
      else this.attend(op);
    }
  }

  /** Frees every buffer still held; rejects with the first failure (naming them all) when the library could not. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    let first: DuoError | null = null;
    const failed: string[] = [];
    for (const h of this.handles.keys()) {
      const status = this.lib.duo_free(h);
      if (status === this.abi.STATUS.OK) continue;
      const e = statusError(this.lib, status, this.abi.STATUS);
      first ??= e;
      failed.push(`buffer ${h}: ${e.message}`);
    }
    this.handles.clear();
    if (first) throw new DuoError(first.code, `cuda backend: dispose() could not free ${failed.length} buffer(s): ${failed.join("; ")}`);
  }

  /** The model math on this backend's device (src/model/kernels-cuda.ts): weights and activations in device memory,
   *  on the same library and context as the attention buffers. The caller disposes it. */
  async modelKernels(): Promise<import("../model/kernels-cuda.ts").CudaKernels> {
    this.live(0);
    const kernels = new (await import("../model/kernels-cuda.ts")).CudaKernels(this.lib, this.abi, this);
    this.kernelSets.push(kernels);
    return kernels;
  }

  /** Device milliseconds of the kernels of the last op (CUDA events), or -1 when unknown: for benchmarks. */
  lastDeviceMs(): number {
    return this.lib.duo_last_device_ms();
  }

  private append(op: AppendOp<OpTensor>): void {
    const { APPEND, DTYPE } = this.abi;
    const p = this.appendParams;
    const src = this.tensorParams(op.src, p, APPEND.SRC_BUF);
    p[APPEND.DST] = op.dst;
    p[APPEND.DTYPE] = DTYPE[op.dtype];
    p[APPEND.ROW_HEADS] = op.rowHeads;
    p[APPEND.HEAD_DIM] = op.headDim;
    p[APPEND.TOKENS] = op.rows.length;
    p[APPEND.SRC_HEADS] = op.srcHeads;
    this.check(this.lib.duo_append(p, src, op.heads, op.rows));
  }

  private attend(op: AttendOp<OpTensor>): void {
    const { T, numHeads: Hq, headDim: D } = op;
    const nkv = op.qHeads.length;
    const { ATTEND, SEG, DTYPE } = this.abi;
    const segs = new Int32Array(op.segments.length * SEG.FIELDS);
    const explicit: Int32Array[] = [];
    let npos = 0;
    op.segments.forEach((s, i) => {
      const row = segs.subarray(i * SEG.FIELDS, (i + 1) * SEG.FIELDS);
      row[SEG.K] = s.k;
      row[SEG.V] = s.v;
      row[SEG.DTYPE] = DTYPE[s.dtype];
      row[SEG.ROW_HEADS] = s.rowHeads;
      row[SEG.ROW_START] = s.rowStart;
      row[SEG.ROW_COUNT] = s.rowCount;
      if (typeof s.positions === "number") {
        row[SEG.POS0] = s.positions;
        row[SEG.POS_INDEX] = -1;
      } else {
        row[SEG.POS_INDEX] = npos;
        explicit.push(s.positions);
        npos += s.rowCount;
      }
    });
    let positions: Int32Array | null = null;
    if (explicit.length === 1) positions = explicit[0]!;
    else if (explicit.length > 1) {
      positions = new Int32Array(npos);
      let at = 0;
      for (const a of explicit) {
        positions.set(a, at);
        at += a.length;
      }
    }

    const p = this.attendParams;
    p[ATTEND.TOKENS] = T;
    p[ATTEND.NUM_HEADS] = Hq;
    p[ATTEND.HEAD_DIM] = D;
    p[ATTEND.GROUP] = op.group;
    p[ATTEND.KV_HEADS] = nkv;
    p[ATTEND.SEGMENTS] = op.segments.length;
    p[ATTEND.POSITIONS] = npos;
    p[ATTEND.QPOS0] = op.qPos0;
    p[ATTEND.SINK] = op.window ? op.window.sink : -1;
    p[ATTEND.RECENT] = op.window ? op.window.recent : -1;
    p[ATTEND.SPLITS] = this.splits;
    const q = this.tensorParams(op.q, p, ATTEND.Q_BUF), out = this.tensorParams(op.out, p, ATTEND.OUT_BUF);
    const lse = op.lse === undefined ? (p[ATTEND.LSE_BUF] = 0, null) : this.tensorParams(op.lse, p, ATTEND.LSE_BUF);
    this.check(this.lib.duo_attend(p, q, op.qHeads, op.kvSlots, segs, positions, out, lse));
  }

  /** Params words [at, at + 3) = (buffer, offset low, offset high) of a device tensor, or buffer 0 for a host array;
   *  returns the host argument (null for a device tensor). */
  private tensorParams(x: OpTensor, p: Int32Array, at: number): Float32Array | null {
    if (!isDeviceTensor(x)) {
      p[at] = 0;
      return x;
    }
    p[at] = x.handle;
    p[at + 1] = x.offset % 2 ** 32; // the Int32Array stores the low 32 bits as they are
    p[at + 2] = Math.floor(x.offset / 2 ** 32);
    return null;
  }

  /** The byte size of a buffer a device tensor names: one of this backend's, or of a model kernel set made on it. */
  private tensorBytes(h: Handle): number {
    for (const k of this.kernelSets) {
      const bytes = k.bufferBytes(h);
      if (bytes !== undefined) return bytes;
    }
    if (this.handles.has(h)) return this.handles.get(h)!;
    throw new DuoError("INVALID_ARGUMENT", `cuda backend: device tensor buffer ${h} is neither this backend's nor of a live model kernel set made on it (CudaBackend.modelKernels)`);
  }

  private check(status: number): void {
    if (status !== this.abi.STATUS.OK) throw statusError(this.lib, status, this.abi.STATUS);
  }

  private live(shard: number): void {
    if (this.disposed) throw new DuoError("DISPOSED", "cuda backend: used after dispose()");
    if (shard !== 0) throw new DuoError("INVALID_ARGUMENT", `cuda backend: shard must be 0 (it has 1 shard), got ${shard}`);
  }

  /** The byte size of buffer `h`; throws INVALID_ARGUMENT unless this backend allocated it and has not freed it. */
  private owned(h: Handle): number {
    const bytes = this.handles.get(h);
    if (bytes === undefined) {
      throw new DuoError("INVALID_ARGUMENT", `cuda backend: buffer handle ${h} was not allocated by this backend (or was freed)`);
    }
    return bytes;
  }
}

