/**
 * The CUDA model kernels: the model math of a Llama-family decoder on the device (cuda/src/kernel_model.cu, the
 * duo_model_* functions of cuda/include/duo.h), on the cuda backend's context (one process, one device), through ffi/.
 *
 * CudaBackend.modelKernels() makes it; LlamaModel on backend "cuda" takes it from there.
 *
 * Weights are device buffers in their file dtype (f32, f16, bf16, or llama.cpp's Q8_0 / Q4_0 / Q4_K / Q6_K blocks,
 * decoded inside the kernels; uploaded once through pinned staging with duo_upload); vectors (norms, biases) are f32
 * buffers. Activations are f32 device buffers: a CudaActivations is a buffer handle plus an element offset, so views
 * share their root's buffer. Every op is queued on the device's stream and returns at once; only download() and
 * argmax() wait, and only what they read crosses back to the host (the RoPE tables and token ids go the other way,
 * staged by the library).
 *
 * Arguments are checked here (kernel-checks.ts, as every set checks them) and again by the library, before anything
 * is queued, so a refused call changes nothing.
 */
import { DuoError } from "../errors.ts";
import { type DuoLibrary, WEIGHT } from "../../ffi/symbols.ts";
import { type CudaBackend, statusError } from "../backend/cuda.ts";
import type { Backend, DeviceTensor } from "../backend/types.ts";
import { checkElementwise, checkEmbed, checkMatmul, checkRmsnorm, checkRope } from "./kernel-checks.ts";
import { type Activations, type Matrix, matrixBytes, type ModelKernels, type Vector, WEIGHT_BLOCKS, type WeightDtype } from "./kernels.ts";

type Abi = typeof import("../../ffi/symbols.ts");

/** enum duo_weight_dtype: every weight dtype of the model files (WEIGHT in ffi/symbols.ts). */
const WEIGHT_CODE: Record<WeightDtype, number> = { f32: WEIGHT.F32, f16: WEIGHT.F16, bf16: WEIGHT.BF16, q8_0: WEIGHT.Q8_0, q4_0: WEIGHT.Q4_0, q4_k: WEIGHT.Q4_K, q6_k: WEIGHT.Q6_K };

/** Elements [offset, offset + length) of the f32 device buffer `handle`; `root` is false for a view. A DeviceTensor
 *  (backend/types.ts): the cuda backend's ops take it as it is. */
export class CudaActivations implements Activations, DeviceTensor {
  constructor(readonly handle: number, readonly offset: number, readonly length: number, readonly root: boolean) {}
}

class CudaMatrix implements Matrix {
  constructor(readonly rows: number, readonly cols: number, readonly dtype: WeightDtype, readonly handle: number, readonly bytes: number) {}
}

class CudaVector implements Vector {
  constructor(readonly handle: number, readonly length: number) {}
}

export class CudaKernels implements ModelKernels {
  readonly name = "cuda" as const;
  /** handle → bytes of every buffer this set allocated (weights and activation roots) and has not freed */
  private readonly buffers = new Map<number, number>();
  private weightBytes = 0;
  private disposed = false;
  private readonly handleOut = new Uint32Array(1);
  private readonly memOut = new Float64Array(3);
  private readonly argmaxOut = new Int32Array(1);

  /** Activations crossed between host and device (upload / download calls): the device-path tests read them. */
  readonly transfers = { uploads: 0, downloads: 0 };

  /** `lib` must be initialised on its device (the cuda backend's createCudaBackend did so); `backend`: the one that
   *  made this set, whose ops take its activations as device tensors. */
  constructor(private readonly lib: DuoLibrary, private readonly abi: Abi, private readonly backend: CudaBackend) {}

  /** Attention on `backend` reads and writes these activations where they are: it is the backend that made them. */
  attendsIn(backend: Backend): boolean {
    return backend === this.backend && !this.disposed;
  }

  /** @internal the bytes of buffer `h` while this set holds it (the cuda backend checks device tensors with it) */
  bufferBytes(h: number): number | undefined {
    return this.buffers.get(h);
  }

  /** Weights held; capacity: the bytes this process holds on the device plus the device's free bytes. */
  memory(): { weights: number; capacity: number } {
    this.check(this.lib.duo_memory(this.memOut));
    return { weights: this.weightBytes, capacity: this.memOut[0]! + this.memOut[1]! };
  }

  reserve(weightBytes: number, scratchBytes: number): void {
    this.live();
    this.check(this.lib.duo_memory(this.memOut));
    const need = weightBytes + scratchBytes, free = this.memOut[1]!;
    if (need > free) throw new DuoError("CAPACITY", `cuda model kernels: ${need} bytes of weights and activations do not fit in the device's ${free} free bytes`);
  }

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    this.live();
    const bytes = matrixBytes(rows, cols, dtype);
    const m = new CudaMatrix(rows, cols, dtype, this.alloc(bytes), bytes);
    this.weightBytes += bytes;
    return m;
  }

  /** Whole blocks of the dtype inside the matrix, uploaded through pinned staging (stream order, no wait). */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    this.live();
    const w = m as CudaMatrix, bb = WEIGHT_BLOCKS[w.dtype].bytes;
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % bb !== 0 || bytes.length % bb !== 0 || byteOffset + bytes.length > w.bytes) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at byte ${byteOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${w.bytes} bytes) or splits its ${bb}-byte blocks`);
    }
    this.check(this.lib.duo_upload(w.handle, byteOffset, bytes.length, bytes));
  }

  vector(data: Float32Array): Vector {
    this.live();
    const h = this.alloc(data.length * 4);
    this.check(this.lib.duo_upload(h, 0, data.length * 4, data));
    this.weightBytes += data.length * 4;
    return new CudaVector(h, data.length);
  }

  activations(length: number): CudaActivations {
    this.live();
    checkLength("activations length", length);
    return new CudaActivations(this.alloc(length * 4), 0, length, true);
  }

  view(a: Activations, offset: number, length: number): CudaActivations {
    const x = this.act(a, "view of");
    checkLength("view offset", offset);
    checkLength("view length", length);
    if (offset + length > x.length) {
      throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: view [${offset}, ${offset + length}) is past the end of activations of length ${x.length}`);
    }
    return new CudaActivations(x.handle, x.offset + offset, length, false);
  }

  /** Frees a root's buffer (its views become invalid); a view owns nothing, and releasing it does nothing. Releasing
   *  twice does nothing. */
  release(a: Activations): void {
    this.live();
    const x = a as CudaActivations;
    if (!(x instanceof CudaActivations) || !x.root || !this.buffers.has(x.handle)) return;
    this.free(x.handle);
  }

  upload(a: Activations, src: Float32Array): void {
    const x = this.act(a, "upload to");
    if (src.length > x.length) throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: upload of ${src.length} elements into activations of length ${x.length}`);
    this.transfers.uploads++;
    this.check(this.lib.duo_upload(x.handle, x.offset * 4, src.length * 4, src));
  }

  download(a: Activations, dst: Float32Array): void {
    const x = this.act(a, "download from");
    if (dst.length > x.length) throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: download of ${dst.length} elements from activations of length ${x.length}`);
    this.transfers.downloads++;
    this.check(this.lib.duo_read(x.handle, x.offset * 4, dst.length * 4, dst));
  }

  matmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void {
    const m = w as CudaMatrix, Y = this.act(y, "matmul y"), X = this.act(x, "matmul x");
    checkMatmul(Y, X, m, T, bias);
    const b = bias ? (bias as CudaVector).handle : 0;
    this.check(this.lib.duo_model_matmul(Y.handle, Y.offset, X.handle, X.offset, m.handle, WEIGHT_CODE[m.dtype], b, T, m.cols, m.rows));
  }

  rmsnorm(y: Activations, x: Activations, w: Vector, T: number, eps: number): void {
    const Y = this.act(y, "rmsnorm y"), X = this.act(x, "rmsnorm x");
    checkRmsnorm(Y, X, w, T);
    this.check(this.lib.duo_model_rmsnorm(Y.handle, Y.offset, X.handle, X.offset, (w as CudaVector).handle, T, w.length, eps));
  }

  rope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    const X = this.act(x, "rope x");
    checkRope(X, T, heads, headDim, cos, sin);
    this.check(this.lib.duo_model_rope(X.handle, X.offset, cos, sin, T, heads, headDim));
  }

  swiglu(y: Activations, gate: Activations, up: Activations): void {
    const Y = this.act(y, "swiglu y"), G = this.act(gate, "swiglu gate"), U = this.act(up, "swiglu up");
    checkElementwise("swiglu", Y, G, U);
    this.check(this.lib.duo_model_swiglu(Y.handle, Y.offset, G.handle, G.offset, U.handle, U.offset, Y.length));
  }

  add(y: Activations, x: Activations): void {
    const Y = this.act(y, "add y"), X = this.act(x, "add x");
    checkElementwise("add", Y, X);
    this.check(this.lib.duo_model_add(Y.handle, Y.offset, X.handle, X.offset, Y.length));
  }

  embed(y: Activations, ids: Int32Array, table: Matrix): void {
    const Y = this.act(y, "embed y"), m = table as CudaMatrix;
    checkEmbed(Y, ids, m);
    this.check(this.lib.duo_model_embed(Y.handle, Y.offset, ids, ids.length, m.handle, m.rows, m.cols, WEIGHT_CODE[m.dtype]));
  }

  /** The index of the largest of x (first on ties; NaN never wins; 0 when all are NaN): one int32 crosses back. */
  argmax(x: Activations): number {
    const X = this.act(x, "argmax x");
    this.check(this.lib.duo_model_argmax(X.handle, X.offset, X.length, this.argmaxOut));
    return this.argmaxOut[0]!;
  }

  /** Frees every buffer; throws the first failure (naming them all) when the library could not free some. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const failed: string[] = [];
    let first: DuoError | null = null;
    for (const h of this.buffers.keys()) {
      const status = this.lib.duo_free(h);
      if (status === this.abi.STATUS.OK) continue;
      const e = statusError(this.lib, status, this.abi.STATUS, "cuda model kernels");
      first ??= e;
      failed.push(`buffer ${h}: ${e.message}`);
    }
    this.buffers.clear();
    this.weightBytes = 0;
    if (first) throw new DuoError(first.code, `cuda model kernels: dispose() could not free ${failed.length} buffer(s): ${failed.join("; ")}`);
  }

  private alloc(bytes: number): number {
    this.check(this.lib.duo_alloc(bytes, this.handleOut));
    const h = this.handleOut[0]!;
    this.buffers.set(h, bytes);
    return h;
  }

  private free(h: number): void {
    const status = this.lib.duo_free(h);
    if (status === this.abi.STATUS.OK || status === this.abi.STATUS.ERR_HANDLE) this.buffers.delete(h);
    this.check(status);
  }

  /** `a` as this set's activations, whose buffer is still held. */
  private act(a: Activations, what: string): CudaActivations {
    this.live();
    if (!(a instanceof CudaActivations)) throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: ${what}: not activations of a cuda kernel set`);
    if (!this.buffers.has(a.handle)) throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: ${what}: activations released, or of another kernel set`);
    return a;
  }

  private live(): void {
    if (this.disposed) throw new DuoError("DISPOSED", "cuda model kernels: used after dispose()");
  }

  /** Throws the library's message (which names the function and the bad value) unless `status` is OK. */
  private check(status: number): void {
    if (status !== this.abi.STATUS.OK) throw statusError(this.lib, status, this.abi.STATUS, "cuda model kernels");
  }
}

function checkLength(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new DuoError("INVALID_ARGUMENT", `cuda model kernels: ${what} must be an integer >= 0, got ${n}`);
}
