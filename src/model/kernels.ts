/**
 * The model math (everything but attention, which the engine does) behind one small interface, with four
 * implementations: `reference` (plain TS, float64 accumulation — the specification, kernels-reference.ts), `wasm`
 * (C + SIMD128 in wasm/model/, one instance in the calling thread, kernels-wasm.ts), `wasm-parallel` (the same
 * kernels in N workers, each holding a slice of the rows of every matrix: kernels-parallel.ts) and `native` (the same
 * C compiled for this CPU in libduo.so, matmul rows over the library's threads, kernels-native.ts).
 *
 * Weights live inside the kernel set: large matrices keep the file's dtype (f32, f16, bf16, or llama.cpp's Q8_0 /
 * Q4_0 / Q4_K / Q6_K blocks) in the wasm memory or the native library's blocks and are widened / dequantized to f32
 * inside the kernel; the reference set decodes them to f32 at load. Small weights (norms, biases) are f32 vectors.
 *
 * Activations are the kernel set's too (`Activations`): host Float32Arrays on reference, native and wasm-parallel
 * (its own instance's memory there), regions of the wasm memory on wasm, device memory on cuda. A forward pass is a
 * sequence of calls on them, in order (a device set queues them on its stream), and only what the caller downloads
 * comes back to the host: q, k, v for the engine's attention, and the logits (workspace.ts runs a layer so).
 */
import { DuoError } from "../errors.ts";
import { runtime } from "../runtime.ts";
import { BLOCKS, TENSOR_DTYPES, type TensorDtype } from "./tensor-types.ts";

export type WeightDtype = Lowercase<TensorDtype>;
/** (elements, bytes) of a weight dtype's block: the file's tensor types (tensor-types.ts BLOCKS), lower-cased: q8_0 /
 *  q4_0 rows are blocks of 32, q4_k / q6_k of 256 */
export const WEIGHT_BLOCKS = Object.fromEntries(TENSOR_DTYPES.map((t) => [t.toLowerCase(), BLOCKS[t]])) as Record<WeightDtype, { elements: number; bytes: number }>;

/** Bytes of a [rows, cols] matrix of `dtype` (cols a multiple of the block size). */
export function matrixBytes(rows: number, cols: number, dtype: WeightDtype): number {
  const b = WEIGHT_BLOCKS[dtype];
  if (cols % b.elements !== 0) throw new DuoError("UNSUPPORTED", `a ${dtype} matrix needs rows of a multiple of ${b.elements} elements, got ${cols}`);
  return (rows * cols / b.elements) * b.bytes;
}
export type KernelsName = "reference" | "wasm" | "wasm-parallel" | "native" | "cuda";
export const KERNELS: readonly KernelsName[] = ["reference", "wasm", "wasm-parallel", "native", "cuda"];

/** A row-major weight matrix [rows, cols] held by a kernel set. */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  readonly dtype: WeightDtype;
}

/** An f32 weight vector held by a kernel set. */
export interface Vector {
  readonly length: number;
}

/** f32 activations held by a kernel set, row-major, one row per token. A set accepts only its own (and its views);
 *  the host sets' are Float32Arrays. */
export interface Activations {
  readonly length: number;
}

export interface ModelKernels {
  readonly name: KernelsName;
  /** true where activations are host Float32Arrays (reference, native: host-activations.ts) */
  readonly hostActivations?: boolean;
  /** Bytes of weights held, and the most the kernel set can hold (Infinity when unbounded). */
  memory(): { weights: number; capacity: number };
  /** Throw CAPACITY (naming the bytes needed and available) unless `weightBytes` more weights plus
   *  `scratchBytes` of activations fit. Call before loading so nothing is half loaded. */
  reserve(weightBytes: number, scratchBytes: number): void;
  /** A zeroed matrix; fill it with `write`. */
  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix;
  /** Copy raw little-endian bytes of `m.dtype` (row-major, as in the file) into `m` at byte `byteOffset`; each
   *  write holds whole blocks of the dtype. */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void;
  /** Optional (native): read `bytes` raw bytes of `m.dtype` from `file` at byte `fileOffset` straight into `m` at byte
   *  `byteOffset`, as `write` would with those bytes (whole blocks of the dtype), without passing them through the
   *  JS heap. */
  readFile?(m: Matrix, byteOffset: number, file: string, fileOffset: number, bytes: number): void;
  /** Optional (native): a [rows, cols] matrix of `dtype` that is the file's own bytes from `fileOffset` on, mapped
   *  read-only (no copy; never written). Kernels that offer it read every weight dtype as stored. */
  mapFile?(rows: number, cols: number, dtype: WeightDtype, file: string, fileOffset: number): Matrix;
  vector(data: Float32Array): Vector;
  /** `length` zeroed f32 activations, held until release() or dispose() */
  activations(length: number): Activations;
  /** elements [offset, offset + length) of `a`, sharing its memory (no copy) */
  view(a: Activations, offset: number, length: number): Activations;
  /** return the memory of activations made by activations() (not of a view) */
  release(a: Activations): void;
  /** host → kernel set: `src` into the first src.length elements of `a` */
  upload(a: Activations, src: Float32Array): void;
  /** kernel set → host: the first dst.length elements of `a` into `dst` (after every call queued before it) */
  download(a: Activations, dst: Float32Array): void;
  /** y[T, rows] = x[T, cols] · Wᵀ (+ bias[rows]) */
  matmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void;
  /** y[T, n] = x · rsqrt(mean(x²) + eps) · w, per row */
  rmsnorm(y: Activations, x: Activations, w: Vector, T: number, eps: number): void;
  /** In place on x [T, heads, D], rotate-half (NeoX) layout: with h = D/2, for i < h
   *  (x[i], x[i+h]) ← (x[i]·cos − x[i+h]·sin, x[i+h]·cos + x[i]·sin); host tables cos/sin [T, D/2]. */
  rope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  /** y[i] = silu(gate[i]) · up[i] for i < y.length, silu(g) = g / (1 + e^−g) */
  swiglu(y: Activations, gate: Activations, up: Activations): void;
  /** y[i] += x[i] for i < y.length (the residual stream) */
  add(y: Activations, x: Activations): void;
  /** y[T, cols] = table[ids[t]] (ids already checked against table.rows) */
  embed(y: Activations, ids: Int32Array, table: Matrix): void;
  /** Optional (cuda): true when attention on `backend` takes this set's activations as they are (device tensors of
   *  the same device: backend/types.ts DeviceTensor), so the model passes q, k, v and the attention output without
   *  download / upload. */
  attendsIn?(backend: import("../backend/types.ts").Backend): boolean;
  /** Optional (cuda): the index of the largest element of x, the first on ties, NaN never winning — greedy decoding
   *  with one integer crossing back instead of the logits. */
  argmax?(x: Activations): number;
  dispose(): void;
}

export interface ModelKernelsOptions {
  /** a precompiled duo-model.wasm (edge runtimes, bundlers) */
  wasmModule?: WebAssembly.Module;
  /** "wasm-parallel": its worker count (default: one per core); "auto" with 0: no workers */
  modelThreads?: number;
  /** "auto": the bytes of weights the model will load (decides whether workers pay off) */
  weightBytes?: number;
  /** "native": path of libduo.so (default: $DUO_NATIVE_LIB, then native/dist/<os>-<arch>/) */
  nativeLibrary?: string;
  /** "native": threads of the library's matmul (default: one per core) */
  threads?: number;
  /** "native": bytes of RAM the weights and the KV cache may take together (memory().capacity; default: the RAM
   *  available when the kernels are created, src/model/ram.ts) */
  memoryBudget?: number;
}

/** "auto" picks "wasm-parallel" for models of at least this many bytes of weights. Each matmul's trip to the
 *  workers and back (7 per layer) costs 11–13 µs on a busy 2-core VM, and over 150 µs when the workers must wait
 *  for a core (bench/model-parallel.ts): there, 2 workers decoded a 0.16 GB bf16 model 1.6–1.8x as fast as one
 *  instance, but a 0.055 GB one at 0.4–0.65x. */
export const PARALLEL_MIN_BYTES = 128 << 20;

/**
 * A kernel set by name. "auto": reference without WASM SIMD; "wasm-parallel" where this thread may block on shared
 * memory (parallelUnusable(): never a browser's main thread), there are 2 or more cores (modelThreads, default the
 * core count) and the model has at least PARALLEL_MIN_BYTES of weights; else "wasm". "native" by name, or by the model
 * runner when its attention backend is native.
 */
export async function createModelKernels(name: KernelsName | "auto", opts: ModelKernelsOptions = {}): Promise<ModelKernels> {
  if (name === "auto") name = await autoKernels(opts);
  if (name === "reference") return new (await import("./kernels-reference.ts")).ReferenceKernels();
  if (name === "wasm") return await (await import("./kernels-wasm.ts")).createWasmKernels(opts.wasmModule);
  if (name === "wasm-parallel") return await (await import("./kernels-parallel.ts")).ParallelKernels.create(opts);
  if (name === "native") return await (await import("./kernels-native.ts")).createNativeKernels(opts);
  if (name === "cuda") throw new DuoError("INVALID_ARGUMENT", `model kernels "cuda" live on a CUDA backend's context: load the model with backend "cuda" (its kernels come with it)`);
  throw new DuoError("INVALID_ARGUMENT", `model kernels must be one of ${["auto", ...KERNELS].map((k) => `"${k}"`).join(", ")}, got ${JSON.stringify(name)}`);
}

async function autoKernels(opts: ModelKernelsOptions): Promise<KernelsName> {
  const rt = runtime();
  if (!rt.wasmSimd) return "reference";
  const threads = opts.modelThreads ?? rt.cores;
  if (threads < 2 || (opts.weightBytes ?? 0) < PARALLEL_MIN_BYTES) return "wasm";
  return (await import("./kernels-parallel.ts")).parallelUnusable() === null ? "wasm-parallel" : "wasm";
}
