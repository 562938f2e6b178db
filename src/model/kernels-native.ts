/**
 * The native model kernels: wasm/model/kernels.c compiled for this CPU inside libduo.so (native/build.sh, SIMD sets;
 * native/src/model.c), through ffi/. Matrices are blocks of the library in their file dtype (f16/bf16 packed in place
 * once written, as in the wasm build; Q8_0 / Q4_0 / Q4_K / Q6_K blocks as in the file), so weights are not limited to 4 GiB; vectors and activations stay host
 * Float32Arrays handed to every call. matmul splits its output rows over the library's threads.
 */
import { DuoError } from "../errors.ts";
import { runtime } from "../runtime.ts";
import type { NativeLibrary } from "../../ffi/symbols.ts";
import { STATUS } from "../backend/abi.ts";
import { type Matrix, matrixBytes, type ModelKernels, type Vector, type WeightDtype } from "./kernels.ts";

/** The library's weight dtype codes (native/src/host.h DUO_W_*; not the KV dtype codes of duo.h). */
export const WEIGHT_CODE: Record<WeightDtype, number> = { f32: 0, f16: 1, bf16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q6_k: 6 };

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

export async function createNativeKernels(opts: { nativeLibrary?: string; threads?: number } = {}): Promise<NativeKernels> {
  const { lib } = await (await import("../../ffi/load.ts")).loadNativeLibrary(opts.nativeLibrary);
  if (lib.duo_isa() === "scalar") {
    throw new DuoError("BACKEND_UNAVAILABLE", `native model kernels need SIMD, and the library runs the scalar set on this CPU; use kernels "wasm" or "reference"`);
  }
  return new NativeKernels(lib, Math.max(1, opts.threads ?? runtime().cores));
}

export class NativeKernels implements ModelKernels {
  readonly name = "native" as const;
  private readonly matrices = new Set<NativeMatrix>();
  private weightBytes = 0;
  private readonly addr = new Uint32Array(2);

  constructor(private readonly lib: NativeLibrary, readonly threads: number) {}

  memory(): { weights: number; capacity: number } {
    return { weights: this.weightBytes, capacity: Infinity };
  }

  /** Host memory: nothing to reserve ahead (an allocation the host cannot make is a CAPACITY error then). */
  reserve(_weightBytes: number, _scratchBytes: number): void {}

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    const bytes = matrixBytes(rows, cols, dtype);
    this.check(this.lib.duo_alloc(Math.max(64, bytes), this.addr), "duo_alloc", "CAPACITY");
    const m = new NativeMatrix(rows, cols, dtype, this.addr[0]! + this.addr[1]! * 2 ** 32, bytes);
    this.matrices.add(m);
    this.weightBytes += bytes;
    return m;
  }

  /** Each byte is written once; when the last byte lands, f16/bf16 rows are packed (wasm/model/kernels.c). */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    const w = m as NativeMatrix;
    if (byteOffset < 0 || byteOffset + bytes.length > w.bytes || w.written + bytes.length > w.bytes) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at byte ${byteOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${w.bytes} bytes, ${w.written} written)`);
    }
    this.check(this.lib.duo_write(w.ptr, byteOffset, bytes.length, bytes), "duo_write");
    w.written += bytes.length;
    if (w.written === w.bytes && (w.dtype === "f16" || w.dtype === "bf16")) this.check(this.lib.duo_model_pack(w.ptr, w.rows, w.cols), "duo_model_pack");
  }

  vector(data: Float32Array): Vector {
    this.weightBytes += data.length * 4;
    return new NativeVector(data.slice());
  }

  matmul(y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector): void {
    const m = w as NativeMatrix;
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_model_matmul(y, x, m.ptr, bias ? (bias as NativeVector).data : null, T, m.cols, m.rows, WEIGHT_CODE[m.dtype]), "duo_model_matmul");
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
    this.check(this.lib.duo_model_embed(y, ids, m.ptr, ids.length, m.rows, m.cols, WEIGHT_CODE[m.dtype]), "duo_model_embed");
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
