/**
 * The model math (everything but attention, which the engine does) behind one small interface, with two
 * implementations: `reference` (plain TS, float64 accumulation — the specification, kernels-reference.ts) and
 * `wasm` (C + SIMD128 in wasm/model/, one instance in the calling thread, kernels-wasm.ts).
 *
 * Weights live inside the kernel set: large matrices keep the file's dtype (f32, f16, bf16, or llama.cpp's Q8_0 /
 * Q4_0 blocks) in the wasm memory and are widened / dequantized to f32 inside the kernel; the reference set decodes
 * them to f32 at load. Small weights (norms,
 * biases) are f32 vectors. Activations are host Float32Arrays, row-major, one row per token.
 */
import { DuoError } from "../errors.ts";
import { runtime } from "../runtime.ts";

export type WeightDtype = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k" | "q6_k";
/** (elements, bytes) of a weight dtype's block: q8_0 / q4_0 rows are blocks of 32, q4_k / q6_k of 256 (tensor-types.ts) */
export const WEIGHT_BLOCKS: Record<WeightDtype, { elements: number; bytes: number }> = {
  f32: { elements: 1, bytes: 4 },
  f16: { elements: 1, bytes: 2 },
  bf16: { elements: 1, bytes: 2 },
  q8_0: { elements: 32, bytes: 34 },
  q4_0: { elements: 32, bytes: 18 },
  q4_k: { elements: 256, bytes: 144 },
  q6_k: { elements: 256, bytes: 210 },
};

/** Bytes of a [rows, cols] matrix of `dtype` (cols a multiple of the block size). */
export function matrixBytes(rows: number, cols: number, dtype: WeightDtype): number {
  const b = WEIGHT_BLOCKS[dtype];
  if (cols % b.elements !== 0) throw new DuoError("UNSUPPORTED", `a ${dtype} matrix needs rows of a multiple of ${b.elements} elements, got ${cols}`);
  return (rows * cols / b.elements) * b.bytes;
}
export type KernelsName = "reference" | "wasm";
export const KERNELS: readonly KernelsName[] = ["reference", "wasm"];

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

export interface ModelKernels {
  readonly name: KernelsName;
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
  vector(data: Float32Array): Vector;
  /** y[T, rows] = x[T, cols] · Wᵀ (+ bias[rows]) */
  matmul(y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector): void;
  /** y[T, n] = x · rsqrt(mean(x²) + eps) · w, per row */
  rmsnorm(y: Float32Array, x: Float32Array, w: Vector, T: number, eps: number): void;
  /** In place on x [T, heads, D], rotate-half (NeoX) layout: with h = D/2, for i < h
   *  (x[i], x[i+h]) ← (x[i]·cos − x[i+h]·sin, x[i+h]·cos + x[i]·sin); cos/sin [T, D/2]. */
  rope(x: Float32Array, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  /** y[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^−g) */
  swiglu(y: Float32Array, gate: Float32Array, up: Float32Array): void;
  /** y[T, cols] = table[ids[t]] (ids already checked against table.rows) */
  embed(y: Float32Array, ids: Int32Array, table: Matrix): void;
  dispose(): void;
}

/** A kernel set by name; "auto" = wasm where this runtime has WASM SIMD, else reference. */
export async function createModelKernels(name: KernelsName | "auto", opts: { wasmModule?: WebAssembly.Module } = {}): Promise<ModelKernels> {
  if (name === "auto") name = runtime().wasmSimd ? "wasm" : "reference";
  if (name === "reference") return new (await import("./kernels-reference.ts")).ReferenceKernels();
  if (name === "wasm") return await (await import("./kernels-wasm.ts")).createWasmKernels(opts.wasmModule);
  throw new DuoError("INVALID_ARGUMENT", `model kernels must be one of ${["auto", ...KERNELS].map((k) => `"${k}"`).join(", ")}, got ${JSON.stringify(name)}`);
}
