/**
 * The quantized KV codecs, exactly: what a cache of kvDtype "int8" or "int4" stores for one head's D values of one
 * token (a "record"), and the values attention reads back. Every backend quantizes and dequantizes bit for bit as
 * written here (the reference backend calls these functions; wasm/src/quant_*.c are their C twins).
 *
 * int4 — upstream's codec (SPEC.md §4.5, demo/quantize_int4.cu), one asymmetric group of D values per token per head,
 * K and V separately. All arithmetic in f32:
 *     mn = min x, mx = max x,  scale = (mx − mn) / 15 + 1e-8,  q_d = clamp(roundf((x_d − mn) / scale), 0, 15)
 *   with roundf = round half away from zero and the f32 scale (not its f16 rounding). Stored: the D/2 packed bytes
 *   (byte i = q_{2i} << 4 | q_{2i+1}: even element in the high nibble), then f16 scale s and f16 min z (RNE).
 *   Dequant in f16 arithmetic as upstream's __hmul / __hadd:  x̂_d = f16(f16(q_d · s) + z).
 *   Upstream divides with --use_fast_math (rare ±1 differences at .5 boundaries); we divide exactly (IEEE f32).
 *   Record: [D/2 bytes][s: f16 LE][z: f16 LE] = D/2 + 4 bytes (68 at D = 128, upstream's 64 + 2 + 2).
 *
 * int8 — symmetric, one group of D values per token per head:
 *     amax = max |x|,  scale = amax / 127,  q_d = clamp(rne(x_d / scale), −127, 127)   (q = 0 when scale is 0)
 *   Stored: D int8 bytes, then scale as f32 LE: D + 4 bytes. x̂_d = f32(q_d · scale).
 *   Why an f32 scale: it costs 2 bytes more per record than f16 (1.5 % at D = 128) and in exchange the scale is the
 *   exact f32 quotient — no f16 overflow past 65504·127, no subnormal f16 scales (rows with amax < 2^-14·127 ≈ 8e-3,
 *   common for V rows after small projections, would lose scale bits), and the kernels multiply by it directly.
 *
 * Records need finite input; int4 also needs |x| ≤ 65504 (its min is stored as f16). The engine checks both before a
 * call changes anything (src/engine/sequence.ts). int4 packs element pairs: D must be even.
 */
import { f16BitsToF32, f32ToF16Bits, headBytes, type QuantDtype } from "./dtype.ts";
import { DuoError } from "./errors.ts";

const fr = Math.fround;
/** The f32 constant upstream adds to the int4 scale (keeps a constant row's scale non-zero). */
export const INT4_EPS = fr(1e-8);
/** The largest magnitude an int4 record can hold (its min is an f16). */
export const INT4_MAX_ABS = 65504;

/** x rounded to f16 and back (RNE): one f16 arithmetic result. */
export function f16Round(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

/** Round half to even (f32 rintf / wasm f32.nearest) of a value that is already an f32. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/** Round half away from zero (C roundf) of a value that is already an f32. */
export function roundHalfAway(v: number): number {
  const t = Math.trunc(v), d = Math.abs(v - t); // v − trunc(v) is exact for an f32 v
  return d >= 0.5 ? t + Math.sign(v) : t;
}

/** Throw UNSUPPORTED unless the codec of `dtype` can store head dim D. */
export function checkQuantHeadDim(dtype: QuantDtype, D: number, at = "kvDtype"): void {
  if (dtype === "int4" && D % 2 !== 0) {
    throw new DuoError("UNSUPPORTED", `${at} "int4" packs two values per byte: headDim must be even, got ${D}; use "int8", "bf16", "f16" or "f32" for this head dim`);
  }
}

/** Quantize x[0..D) into the record at out[at .. at + headBytes(dtype, D)). */
export function quantizeRecord(dtype: QuantDtype, x: ArrayLike<number>, D: number, out: Uint8Array, at: number): void {
  const view = new DataView(out.buffer, out.byteOffset + at, headBytes(dtype, D));
  if (dtype === "int8") {
    let amax = 0;
    for (let d = 0; d < D; d++) amax = Math.max(amax, Math.abs(fr(x[d]!)));
    const scale = fr(amax / 127);
    for (let d = 0; d < D; d++) {
      const q = scale === 0 ? 0 : Math.min(127, Math.max(-127, roundHalfEven(fr(fr(x[d]!) / scale))));
      view.setInt8(d, q);
    }
    view.setFloat32(D, scale, true);
    return;
  }
  let mn = Infinity, mx = -Infinity;
  for (let d = 0; d < D; d++) {
    const v = fr(x[d]!);
    mn = Math.min(mn, v);
    mx = Math.max(mx, v);
  }
  const scale = fr(fr(fr(mx - mn) / 15) + INT4_EPS);
  for (let d = 0; d < D; d += 2) {
    const hi = quant4(fr(x[d]!), mn, scale), lo = quant4(fr(x[d + 1]!), mn, scale);
    view.setUint8(d >> 1, (hi << 4) | lo);
  }
  view.setUint16(D / 2, f32ToF16Bits(scale), true);
  view.setUint16(D / 2 + 2, f32ToF16Bits(mn), true);
}

function quant4(x: number, mn: number, scale: number): number {
  return Math.min(15, Math.max(0, roundHalfAway(fr(fr(x - mn) / scale))));
}

/** Dequantize the record at rec[at ..) into out[0..D). */
export function dequantizeRecord(dtype: QuantDtype, rec: Uint8Array, at: number, D: number, out: Float32Array | number[]): void {
  const view = new DataView(rec.buffer, rec.byteOffset + at, headBytes(dtype, D));
  if (dtype === "int8") {
    const scale = view.getFloat32(D, true);
    for (let d = 0; d < D; d++) out[d] = fr(view.getInt8(d) * scale);
    return;
  }
  const lut = int4Table(view.getUint16(D / 2, true), view.getUint16(D / 2 + 2, true));
  for (let d = 0; d < D; d += 2) {
    const b = view.getUint8(d >> 1);
    out[d] = lut[b >> 4]!;
    out[d + 1] = lut[b & 15]!;
  }
}

/** The 16 values an int4 record with f16 scale bits `s` and min bits `z` can hold: f16(f16(q · s) + z), q = 0..15. */
export function int4Table(s: number, z: number): Float64Array {
  const sf = f16BitsToF32(s), zf = f16BitsToF32(z), lut = new Float64Array(16);
  for (let q = 0; q < 16; q++) lut[q] = f16Round(f16Round(q * sf) + zf);
  return lut;
}

/** x[0..n·D) quantized record by record and dequantized again: what a quantized cache gives attention for x. */
export function roundTrip(dtype: QuantDtype, x: Float32Array, D: number): Float32Array {
  const out = new Float32Array(x.length), rec = new Uint8Array(headBytes(dtype, D)), row = new Float32Array(D);
  for (let i = 0; i < x.length; i += D) {
    quantizeRecord(dtype, x.subarray(i, i + D), D, rec, 0);
    dequantizeRecord(dtype, rec, 0, D, row);
    out.set(row, i);
  }
  return out;
}
