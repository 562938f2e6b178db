/**
 * The element types a weight file may hold, as (block of elements, bytes per block): plain types are blocks of one
 * element; llama.cpp's quantized types are blocks of 32 weights along a row (ggml-common.h): Q8_0 an f16 scale d and
 * 32 int8 q (value = q·d, 34 bytes), Q4_0 an f16 d and 16 bytes of nibbles (value i = ((qs[i] & 15) − 8)·d,
 * value 16 + i = ((qs[i] >> 4) − 8)·d, 18 bytes); the K-quants Q4_K and Q6_K are super-blocks of 256 (kquants.ts).
 * Decoding to f32 is exact for every type here but the K-quants, which decode in ggml's f32 operations.
 */
import { f16BitsToF32, f32ToF16Bits } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import { dequantizeQ4_K, dequantizeQ6_K } from "./kquants.ts";

export type TensorDtype = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_K" | "Q6_K";
export const TENSOR_DTYPES: readonly TensorDtype[] = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"];
export const BLOCKS: Record<TensorDtype, { elements: number; bytes: number }> = {
  F32: { elements: 1, bytes: 4 },
  F16: { elements: 1, bytes: 2 },
  BF16: { elements: 1, bytes: 2 },
  Q8_0: { elements: 32, bytes: 34 },
  Q4_0: { elements: 32, bytes: 18 },
  Q4_K: { elements: 256, bytes: 144 },
  Q6_K: { elements: 256, bytes: 210 },
};

export function isTensorDtype(dtype: string): dtype is TensorDtype {
  return (TENSOR_DTYPES as readonly string[]).includes(dtype);
}

/** Bytes of a row-major tensor of `dtype` whose last dimension is `shape.at(-1)`; undefined when the type is unknown
 *  or the rows are not whole blocks. */
export function tensorBytes(dtype: string, shape: readonly number[]): number | undefined {
  if (!isTensorDtype(dtype)) return undefined;
  const b = BLOCKS[dtype], count = shape.reduce((a, d) => a * d, 1), row = shape.at(-1) ?? 1;
  if (row % b.elements !== 0) return undefined;
  return (count / b.elements) * b.bytes;
}

/** Raw little-endian elements of `dtype` -> f32 (exact for every supported type). */
export function toF32(bytes: Uint8Array, dtype: string, name: string): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "Q8_0") return dequantizeQ8_0(bytes);
  if (dtype === "Q4_0") return dequantizeQ4_0(bytes);
  if (dtype === "Q4_K") return dequantizeQ4_K(bytes);
  if (dtype === "Q6_K") return dequantizeQ6_K(bytes);
  if (!isTensorDtype(dtype)) throw new DuoError("UNSUPPORTED", `tensor "${name}" has dtype ${dtype}; supported weight dtypes are ${TENSOR_DTYPES.join(", ")}`);
  const n = bytes.length / BLOCKS[dtype].bytes;
  const out = new Float32Array(n);
  if (dtype === "F32") for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  else if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
  } else for (let i = 0; i < n; i++) out[i] = f16BitsToF32(view.getUint16(i * 2, true));
  return out;
}

/** Q8_0 blocks [n/32 × (f16 d, 32 × int8 q)] -> f32 [n], value = q·d (exact in f32: 8-bit × 11-bit significands). */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const blocks = bytes.length / 34, out = new Float32Array(blocks * 32);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    const d = f16BitsToF32(view.getUint16(b * 34, true));
    for (let i = 0; i < 32; i++) out[b * 32 + i] = view.getInt8(b * 34 + 2 + i) * d;
  }
  return out;
}

/** f32 [n] (n a multiple of 32) -> Q8_0 blocks, as ggml's quantize_row_q8_0_ref: d = max|x| / 127 (stored as
 *  f16), q = round(x / d). Re-quantizing dequantized Q8_0 gives the same bytes back. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new DuoError("INVALID_ARGUMENT", `Q8_0 needs rows that are a multiple of 32 elements, got ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
    const d = Math.fround(amax / 127), id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16Bits(d), true);
    for (let i = 0; i < 32; i++) {
      const v = Math.fround(x[b * 32 + i]! * id);
      view.setInt8(b * 34 + 2 + i, Math.sign(v) * Math.round(Math.abs(v))); // roundf: halves away from zero
    }
  }
  return out;
}

/** Q4_0 blocks [n/32 × (f16 d, 16 bytes of nibbles)] -> f32 [n] (exact). */
export function dequantizeQ4_0(bytes: Uint8Array): Float32Array {
  const blocks = bytes.length / 18, out = new Float32Array(blocks * 32);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    const d = f16BitsToF32(view.getUint16(b * 18, true));
    for (let i = 0; i < 16; i++) {
      const q = bytes[b * 18 + 2 + i]!;
      out[b * 32 + i] = ((q & 15) - 8) * d;
      out[b * 32 + 16 + i] = ((q >> 4) - 8) * d;
    }
  }
  return out;
}

/** f32 [n] (n a multiple of 32) -> Q4_0 blocks, as ggml's quantize_row_q4_0_ref: m = the value of largest |x|,
 *  d = m / −8 (stored as f16), q = min(15, trunc(x / d + 8.5)). Re-quantizing dequantized Q4_0 gives the same bytes. */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new DuoError("INVALID_ARGUMENT", `Q4_0 needs rows that are a multiple of 32 elements, got ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0, max = 0;
    for (let i = 0; i < 32; i++) {
      const v = x[b * 32 + i]!;
      if (amax < Math.abs(v)) (amax = Math.abs(v)), (max = v);
    }
    const d = Math.fround(max / -8), id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 18, f32ToF16Bits(d), true);
    const q = (v: number) => Math.min(15, Math.trunc(Math.fround(Math.fround(v * id) + 8.5)));
    for (let i = 0; i < 16; i++) out[b * 18 + 2 + i] = q(x[b * 32 + i]!) | (q(x[b * 32 + 16 + i]!) << 4);
  }
  return out;
}
