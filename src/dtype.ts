/**
 * KV storage dtypes and exact f32 <-> f16 / bf16 conversion (round to nearest, ties to even).
 * Written without Float16Array: Node 20 does not have it.
 *
 * The float dtypes store each element on its own; the quantized ones (int8, int4: src/quant.ts) store each head's D
 * values of a token as one record with its scale (and min), so their unit of storage is the head row (headBytes).
 */
export type FloatDtype = "f32" | "f16" | "bf16";
export type QuantDtype = "int8" | "int4";
export type KvDtype = FloatDtype | QuantDtype;
export const FLOAT_DTYPES: readonly FloatDtype[] = ["f32", "f16", "bf16"];
export const KV_DTYPES: readonly KvDtype[] = ["f32", "f16", "bf16", "int8", "int4"];

export function isQuantized(dtype: KvDtype): dtype is QuantDtype {
  return dtype === "int8" || dtype === "int4";
}

export function bytesPerElement(dtype: FloatDtype): number {
  return dtype === "f32" ? 4 : 2;
}

/** Bytes one head's D values of one token take in a KV buffer: D elements, or a quantized record (src/quant.ts:
 *  int8 = D bytes + an f32 scale, int4 = D/2 bytes + an f16 scale + an f16 min). */
export function headBytes(dtype: KvDtype, D: number): number {
  if (dtype === "int8") return D + 4;
  if (dtype === "int4") return D / 2 + 4;
  return D * bytesPerElement(dtype);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * f32 -> bf16 bits, RNE; NaN stays a (quiet) NaN. The sign and payload of a NaN are unspecified across backends (a
 * JavaScript engine may canonicalise a NaN it handles; the CUDA kernels store the canonical 0x7FFF), in f16 too.
 */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** f32 -> IEEE binary16 bits, RNE, with subnormals, overflow to Inf and NaN. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    mant |= 0x800000; // make the implicit bit explicit, then shift into the subnormal range
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // may carry into the exponent: still correct
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Round every element of `x` to what `dtype` storage would hold (in place). */
export function roundToDtype(x: Float32Array, dtype: KvDtype): Float32Array {
  if (dtype === "bf16") for (let i = 0; i < x.length; i++) x[i] = bf16BitsToF32(f32ToBf16Bits(x[i]!));
  else if (dtype === "f16") for (let i = 0; i < x.length; i++) x[i] = f16BitsToF32(f32ToF16Bits(x[i]!));
  return x;
}
