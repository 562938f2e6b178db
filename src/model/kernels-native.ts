/**
 * The native model kernels: wasm/model/kernels.c compiled for this CPU inside libduo.so (native/build.sh, SIMD sets;
 * native/src/model.c), through ffi/. Matrices are blocks of the library in their file dtype and layout (f32, f16 and
 * bf16 rows in file order: unlike the wasm build, the native one does not pack 16-bit rows, wasm/model/widen.h; Q8_0 /
 * Q4_0 / Q4_K / Q6_K blocks as in the file), so weights are not limited to 4 GiB; vectors and activations
 * (host-activations.ts) stay host Float32Arrays handed to every call. matmul splits its output rows over the library's threads.
 *
 * Since every dtype is used as stored, a matrix can instead be a read-only view of the checkpoint file mapped once
 * (mapFile, native/src/map.c): no copy, its pages the file's page cache. Mapped matrices count in
 * memory().weights like copied ones (they must stay resident to run fast, and the RAM check, src/model/ram.ts, counts
 * them so: MemAvailable includes the page cache the kernel could drop, so counting them again is the safe side), and
 * in memory().mapped; the library's duo_memory counts only what it allocated.
 */
import { DuoError } from "../errors.ts";
import { runtime } from "../runtime.ts";
import type { NativeLibrary } from "../../ffi/symbols.ts";
import { STATUS } from "../backend/abi.ts";
import { availableMemory } from "./ram.ts";
import { hostArray, HostActivationKernels } from "./host-activations.ts";
import { checkElementwise, checkEmbed, checkMatmul, checkRmsnorm, checkRope } from "./kernel-checks.ts";
import { type Activations, type Matrix, matrixBytes, type ModelKernels, type Vector, WEIGHT_BLOCKS, type WeightDtype } from "./kernels.ts";

/** The library's weight dtype codes (native/src/host.h DUO_W_*; not the KV dtype codes of duo.h). */
export const WEIGHT_CODE: Record<WeightDtype, number> = { f32: 0, f16: 1, bf16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q6_k: 6 };

class NativeMatrix implements Matrix {
  /** bytes written so far (each byte is written once) */
  written = 0;
  /** a read-only view of a mapped file (mapFile): never written */
  mapped = false;
  constructor(readonly rows: number, readonly cols: number, readonly dtype: WeightDtype, readonly ptr: number, readonly bytes: number) {}
}

class NativeVector implements Vector {
  constructor(readonly data: Float32Array) {}
  get length(): number {
    return this.data.length;
  }
}

export async function createNativeKernels(opts: { nativeLibrary?: string; threads?: number; memoryBudget?: number } = {}): Promise<NativeKernels> {
  const { lib } = await (await import("../../ffi/load.ts")).loadNativeLibrary(opts.nativeLibrary);
  return await nativeKernelsOn(lib, opts.threads ?? runtime().cores, opts.memoryBudget);
}

/** The model kernels of a loaded library (the native backend's own, NativeBackend.modelKernels). */
export async function nativeKernelsOn(lib: NativeLibrary, threads: number, memoryBudget?: number): Promise<NativeKernels> {
  if (lib.duo_isa() === "scalar") {
    throw new DuoError("BACKEND_UNAVAILABLE", `native model kernels need SIMD, and the library runs the scalar set on this CPU; use kernels "wasm" or "reference"`);
  }
  return new NativeKernels(lib, Math.max(1, threads), memoryBudget ?? (await availableMemory()).bytes);
}

export class NativeKernels extends HostActivationKernels implements ModelKernels {
  readonly name = "native" as const;
  private readonly matrices = new Set<NativeMatrix>();
  private weightBytes = 0;
  private mappedBytes = 0;
  private readonly addr = new Uint32Array(2);
  /** file path -> its mapping (duo_map_file): each checkpoint file is mapped once, unmapped by dispose */
  private readonly maps = new Map<string, { handle: number; bytes: number }>();

  /** @param budget bytes of RAM weights and KV share (LoadOptions.memory); reported as memory().capacity */
  constructor(private readonly lib: NativeLibrary, readonly threads: number, private readonly budget = Infinity) {
    super();
  }

  /** weights: bytes of every weight held (mapped ones too); mapped: those of them that are views of mapped files */
  memory(): { weights: number; capacity: number; mapped: number } {
    return { weights: this.weightBytes, capacity: this.budget, mapped: this.mappedBytes };
  }

  /** Refuse weights that would not fit in the budget beside those already held (the model loader checks weights +
   *  KV against it first, src/model/ram.ts; an allocation the host cannot make is a CAPACITY error then). */
  reserve(weightBytes: number, scratchBytes: number): void {
    const need = this.weightBytes + weightBytes + scratchBytes;
    if (need > this.budget) throw new DuoError("CAPACITY", `native model kernels: ${need} bytes of weights and activations do not fit in the memory budget of ${this.budget} bytes`);
  }

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    const bytes = matrixBytes(rows, cols, dtype);
    this.check(this.lib.duo_alloc(Math.max(64, bytes), this.addr), "duo_alloc", "CAPACITY");
    const m = new NativeMatrix(rows, cols, dtype, this.addr[0]! + this.addr[1]! * 2 ** 32, bytes);
    this.matrices.add(m);
    this.weightBytes += bytes;
    return m;
  }

  /** Each byte is written once, as the file stores it. */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    const w = m as NativeMatrix;
    this.checkRange(w, "write", byteOffset, bytes.length);
    this.check(this.lib.duo_write(w.ptr, byteOffset, bytes.length, bytes), "duo_write");
    w.written += bytes.length;
  }

  /** A write or file read of `bytes` at `byteOffset` must hold whole blocks of the dtype inside the matrix. */
  private checkRange(w: NativeMatrix, what: string, byteOffset: number, bytes: number): void {
    if (w.mapped) throw new DuoError("INVALID_ARGUMENT", `${what} into a [${w.rows}, ${w.cols}] ${w.dtype} matrix that is a read-only view of a mapped file`);
    const bb = WEIGHT_BLOCKS[w.dtype].bytes;
    if (byteOffset < 0 || byteOffset % bb !== 0 || bytes % bb !== 0 || byteOffset + bytes > w.bytes || w.written + bytes > w.bytes) {
      throw new DuoError("INVALID_ARGUMENT", `${what} of ${bytes} bytes at byte ${byteOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${w.bytes} bytes, ${w.written} written) or splits its ${bb}-byte blocks`);
    }
  }

  /** pread straight into the matrix's block (native/src/file.c); checked like `write`. */
  readFile(m: Matrix, byteOffset: number, file: string, fileOffset: number, bytes: number): void {
    const w = m as NativeMatrix;
    this.checkRange(w, "read", byteOffset, bytes);
    const path = new TextEncoder().encode(`${file}\0`);
    this.lib.duo_threads(this.threads);
    const status = this.lib.duo_read_file(path, fileOffset, bytes, w.ptr, byteOffset);
    if (status < 0) throw new DuoError("IO", `native model kernels: ${this.lib.duo_last_error() || `duo_read_file status ${status}`}`);
    w.written += bytes;
  }

  /** A [rows, cols] matrix that is the bytes of `file` from `fileOffset` on (any weight dtype: the kernels read every
   *  one as stored), mapped read-only and read into memory now by the library's threads. The file is mapped once for
   *  all its tensors. IO when the range is not inside the file (a truncated file) or the file shrank while it was
   *  read; the message names the path. */
  mapFile(rows: number, cols: number, dtype: WeightDtype, file: string, fileOffset: number): Matrix {
    const bytes = matrixBytes(rows, cols, dtype);
    let map = this.maps.get(file);
    if (!map) {
      const out = new Uint32Array(4);
      const status = this.lib.duo_map_file(new TextEncoder().encode(`${file}\0`), out);
      if (status < 0) throw new DuoError("IO", `native model kernels: ${this.lib.duo_last_error() || `duo_map_file status ${status}`}`);
      map = { handle: out[0]! + out[1]! * 2 ** 32, bytes: out[2]! + out[3]! * 2 ** 32 };
      this.maps.set(file, map);
    }
    if (fileOffset < 0 || fileOffset + bytes > map.bytes) {
      throw new DuoError("IO", `${file}: a [${rows}, ${cols}] ${dtype} matrix at bytes [${fileOffset}, ${fileOffset + bytes}) lies beyond the file's ${map.bytes} bytes (the file is truncated)`);
    }
    this.lib.duo_threads(this.threads);
    const status = this.lib.duo_map_view(map.handle, fileOffset, bytes, this.addr);
    if (status < 0) throw new DuoError("IO", `native model kernels: ${this.lib.duo_last_error() || `duo_map_view status ${status}`}`);
    const m = new NativeMatrix(rows, cols, dtype, this.addr[0]! + this.addr[1]! * 2 ** 32, bytes);
    m.written = bytes;
    m.mapped = true;
    this.matrices.add(m);
    this.weightBytes += bytes;
    this.mappedBytes += bytes;
    return m;
  }

  vector(data: Float32Array): Vector {
    this.weightBytes += data.length * 4;
    return new NativeVector(data.slice());
  }

  matmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void {
    checkMatmul(y, x, w, T, bias);
    const m = w as NativeMatrix;
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_model_matmul(hostArray(y, this.name), hostArray(x, this.name), m.ptr, bias ? (bias as NativeVector).data : null, T, m.cols, m.rows, WEIGHT_CODE[m.dtype]), "duo_model_matmul");
  }

  rmsnorm(y: Activations, x: Activations, w: Vector, T: number, eps: number): void {
    checkRmsnorm(y, x, w, T);
    this.check(this.lib.duo_model_rmsnorm(hostArray(y, this.name), hostArray(x, this.name), (w as NativeVector).data, T, w.length, eps), "duo_model_rmsnorm");
  }

  rope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, T, heads, headDim, cos, sin);
    this.check(this.lib.duo_model_rope(hostArray(x, this.name), cos, sin, T, heads, headDim), "duo_model_rope");
  }

  swiglu(y: Activations, gate: Activations, up: Activations): void {
    checkElementwise("swiglu", y, gate, up);
    this.check(this.lib.duo_model_swiglu(hostArray(y, this.name), hostArray(gate, this.name), hostArray(up, this.name), y.length), "duo_model_swiglu");
  }

  embed(y: Activations, ids: Int32Array, table: Matrix): void {
    checkEmbed(y, ids, table);
    const m = table as NativeMatrix;
    this.check(this.lib.duo_model_embed(hostArray(y, this.name), ids, m.ptr, ids.length, m.rows, m.cols, WEIGHT_CODE[m.dtype]), "duo_model_embed");
  }

  /** @internal The library these kernels run on, for kernels that share its blocks (identify/backward-native.ts). */
  get library(): NativeLibrary {
    return this.lib;
  }

  /** @internal The address of one of this set's matrices in the library's memory. */
  matrixAddress(m: Matrix): number {
    if (!(m instanceof NativeMatrix) || !this.matrices.has(m)) throw new DuoError("INVALID_ARGUMENT", "a matrix of another kernel set (or a disposed one)");
    return m.ptr;
  }

  /** Free every matrix and drop every file mapping (a mapping goes once its last view is freed). */
  dispose(): void {
    for (const m of this.matrices) this.lib.duo_free(m.ptr);
    for (const map of this.maps.values()) this.lib.duo_unmap(map.handle);
    this.matrices.clear();
    this.maps.clear();
    this.weightBytes = 0;
    this.mappedBytes = 0;
  }

  private check(status: number, fn: string, code: "INVALID_ARGUMENT" | "CAPACITY" = "INVALID_ARGUMENT"): void {
    if (status >= 0) return;
    throw new DuoError(status === STATUS.E_CAPACITY ? "CAPACITY" : code, `native model kernels: ${fn} refused: ${this.lib.duo_last_error() || `status ${status}`}`);
  }
}
