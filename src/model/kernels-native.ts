/**
 * The native model kernels: wasm/model/kernels.c compiled for this CPU inside libduo.so (native/build.sh, SIMD sets;
 * native/src/model.c), through ffi/. Matrices are blocks of the library in their file dtype (f16/bf16 packed in place
 * once written, as in the wasm build), so weights are not limited to 4 GiB; vectors and activations stay host
 * Float32Arrays handed to every call. matmul splits its output rows over the library's threads.
 */
import { DuoError } from "../errors.ts";
import { runtime } from "../runtime.ts";
import type { NativeLibrary } from "../../ffi/symbols.ts";
import { DTYPE_CODE, STATUS } from "../backend/abi.ts";
import { availableMemory } from "./ram.ts";
import { type Matrix, type ModelKernels, type Vector, WEIGHT_BYTES, type WeightDtype } from "./kernels.ts";

class NativeMatrix implements Matrix {
  /** bytes written so far; a 16-bit matrix is packed for the kernels once all of it has been written */
  written = 0;
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
  if (lib.duo_isa() === "scalar") {
    throw new DuoError("BACKEND_UNAVAILABLE", `native model kernels need SIMD, and the library runs the scalar set on this CPU; use kernels "wasm" or "reference"`);
  }
  const budget = opts.memoryBudget ?? (await availableMemory()).bytes;
  return new NativeKernels(lib, Math.max(1, opts.threads ?? runtime().cores), budget);
}

export class NativeKernels implements ModelKernels {
  readonly name = "native" as const;
  private readonly matrices = new Set<NativeMatrix>();
  private weightBytes = 0;
  private readonly addr = new Uint32Array(2);

  /** @param budget bytes of RAM weights and KV share (LoadOptions.memory); reported as memory().capacity */
  constructor(private readonly lib: NativeLibrary, readonly threads: number, private readonly budget = Infinity) {}

  memory(): { weights: number; capacity: number } {
    return { weights: this.weightBytes, capacity: this.budget };
  }

  /** Refuse weights that would not fit in the budget beside those already held (the model loader checks weights +
   *  KV against it first, src/model/ram.ts; an allocation the host cannot make is a CAPACITY error then). */
  reserve(weightBytes: number, scratchBytes: number): void {
    const need = this.weightBytes + weightBytes + scratchBytes;
    if (need > this.budget) throw new DuoError("CAPACITY", `native model kernels: ${need} bytes of weights and activations do not fit in the memory budget of ${this.budget} bytes`);
  }

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    const bytes = rows * cols * WEIGHT_BYTES[dtype];
    this.check(this.lib.duo_alloc(Math.max(64, bytes), this.addr), "duo_alloc", "CAPACITY");
    const m = new NativeMatrix(rows, cols, dtype, this.addr[0]! + this.addr[1]! * 2 ** 32, bytes);
    this.matrices.add(m);
    this.weightBytes += bytes;
    return m;
  }

  /** Each element is written once; when the last byte lands, f16/bf16 rows are packed (wasm/model/kernels.c). */
  write(m: Matrix, elementOffset: number, bytes: Uint8Array): void {
    const w = m as NativeMatrix, eb = WEIGHT_BYTES[w.dtype];
    if (elementOffset < 0 || elementOffset * eb + bytes.length > w.bytes || w.written + bytes.length > w.bytes) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at element ${elementOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${w.bytes} bytes, ${w.written} written)`);
    }
    this.check(this.lib.duo_write(w.ptr, elementOffset * eb, bytes.length, bytes), "duo_write");
    w.written += bytes.length;
    if (w.written === w.bytes && eb === 2) this.check(this.lib.duo_model_pack(w.ptr, w.rows, w.cols), "duo_model_pack");
  }

  /** pread straight into the matrix's block (native/src/file.c); packed like `write` once every byte is in. */
  readFile(m: Matrix, elementOffset: number, file: string, fileOffset: number, bytes: number): void {
    const w = m as NativeMatrix, eb = WEIGHT_BYTES[w.dtype];
    if (elementOffset < 0 || elementOffset * eb + bytes > w.bytes || w.written + bytes > w.bytes) {
      throw new DuoError("INVALID_ARGUMENT", `read of ${bytes} bytes at element ${elementOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${w.bytes} bytes, ${w.written} written)`);
    }
    const path = new TextEncoder().encode(`${file}\0`);
    const status = this.lib.duo_read_file(path, fileOffset, bytes, w.ptr, elementOffset * eb);
    if (status < 0) throw new DuoError("IO", `native model kernels: ${this.lib.duo_last_error() || `duo_read_file status ${status}`}`);
    w.written += bytes;
    if (w.written === w.bytes && eb === 2) this.check(this.lib.duo_model_pack(w.ptr, w.rows, w.cols), "duo_model_pack");
  }

  vector(data: Float32Array): Vector {
    this.weightBytes += data.length * 4;
    return new NativeVector(data.slice());
  }

  matmul(y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector): void {
    const m = w as NativeMatrix;
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_model_matmul(y, x, m.ptr, bias ? (bias as NativeVector).data : null, T, m.cols, m.rows, DTYPE_CODE[m.dtype]), "duo_model_matmul");
  }

  rmsnorm(y: Float32Array, x: Float32Array, w: Vector, T: number, eps: number): void {
    this.check(this.lib.duo_model_rmsnorm(y, x, (w as NativeVector).data, T, w.length, eps), "duo_model_rmsnorm");
  }

  rope(x: Float32Array, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    this.check(this.lib.duo_model_rope(x, cos, sin, T, heads, headDim), "duo_model_rope");
  }

  swiglu(y: Float32Array, gate: Float32Array, up: Float32Array): void {
    this.check(this.lib.duo_model_swiglu(y, gate, up, y.length), "duo_model_swiglu");
  }

  embed(y: Float32Array, ids: Int32Array, table: Matrix): void {
    const m = table as NativeMatrix;
    this.check(this.lib.duo_model_embed(y, ids, m.ptr, ids.length, m.rows, m.cols, DTYPE_CODE[m.dtype]), "duo_model_embed");
  }

  dispose(): void {
    for (const m of this.matrices) this.lib.duo_free(m.ptr);
    this.matrices.clear();
    this.weightBytes = 0;
  }

  private check(status: number, fn: string, code: "INVALID_ARGUMENT" | "CAPACITY" = "INVALID_ARGUMENT"): void {
    if (status >= 0) return;
    throw new DuoError(status === STATUS.E_CAPACITY ? "CAPACITY" : code, `native model kernels: ${fn} refused: ${this.lib.duo_last_error() || `status ${status}`}`);
  }
}
