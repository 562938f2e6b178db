/*
 * k_dequant with SIMD128 (quant.h has the record formats; quant_scalar.c is the twin).
 *  int8: 8 codes per sign-extending load, widened to two f32 vectors, times the scale.
 *  int4: the record's 16 possible values (f16(f16(q * s) + z), q = 0..15) are computed once per record, 4 lanes at a
 *        time, and split into byte planes (plane k = byte k of each value); every 32 codes then become their f32
 *        values with 3 byte-table lookups per 16 codes and a byte interleave: ~1 op per element and exact, where the
 *        f16 arithmetic per element would take ~12. The values are f16 numbers (and +-Inf), whose f32 form has 13 zero
 *        low bits: byte 0 is always 0, so plane 0 is the zero vector and needs no lookup. The table is 20-45 % of the
 *        int4 decode time (measured), so it is built with few operations: scale and min widened in vector lanes, a
 *        4-operation f16 rounding. The per-record table uses the f16 rounding bit trick, exact while
 *        every intermediate is 0 or an f16 normal below 65504 (s == 0 or s >= 2^-14, and 15 s + |z| small enough); a
 *        record outside that (tiny or huge ranges) gets its table from the scalar q_int4_table.
 */
#include "quant.h"
#include "kernels.h"
#include "simd.h"

/* x rounded to f16 precision (RNE) for x = 0, or |x| < 65520 with an f16-normal rounding or an exact one (what
 * int4_planes admits): adding M = +-2^(e + 13), e the exponent of x, keeps the bits of x down to 2^(e - 10), the f16
 * ulp, rounded to nearest even by the add itself; subtracting M again is exact. x = 0 gives M = 2^-114 and 0 back. */
ALWAYS_INLINE VF round16(VF x) {
  VF m = VI_ADD(VI_AND(x, VI_SPLAT((int32_t)0xff800000)), VI_SPLAT(13 << 23));
  return VF_SUB(VF_ADD(x, m), m);
}

/* f16 bits, sign-extended in each 32-bit lane, to f32: exact for finite values (simd.h VF_F16_FAST). */
ALWAYS_INLINE VF widen16(VI h) { return VF_MUL(VI_AND(VI_SHL(h, 13), VI_SPLAT((int32_t)0x8fffffff)), VF_SPLAT(0x1p112f)); }

/* The byte planes 1..3 of a record's table: plane k, byte q = byte k of the f32 lut[q] (plane 0 is zero). */
ALWAYS_INLINE void int4_planes(const uint8_t *meta, VI *p1, VI *p2, VI *p3) {
  const VI w = VF_LOAD_SPLAT(meta); /* z << 16 | s in every lane */
  const VF vs = widen16(VI_SRA(VI_SHL(w, 16), 16)), vz = widen16(VI_SRA(w, 16));
  const float s = VF_LANE(vs, 0), z = VF_LANE(vz, 0); /* an f16 Inf/NaN comes out >= 65536: the scalar table */
  VF l0, l1, l2, l3;
  if ((s == 0.0f || s >= 0x1p-14f) && 15.01f * s + __builtin_fabsf(z) <= 65504.0f) {
    static const float codes0[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    const VF q0 = VF_LOAD(codes0), four = VF_SPLAT(4.0f);
    const VF q1 = VF_ADD(q0, four), q2 = VF_ADD(q1, four), q3 = VF_ADD(q2, four);
    l0 = round16(VF_ADD(round16(VF_MUL(q0, vs)), vz));
    l1 = round16(VF_ADD(round16(VF_MUL(q1, vs)), vz));
    l2 = round16(VF_ADD(round16(VF_MUL(q2, vs)), vz));
    l3 = round16(VF_ADD(round16(VF_MUL(q3, vs)), vz));
  } else {
    float lut[16];
    q_int4_table((uint32_t)meta[0] | (uint32_t)meta[1] << 8, (uint32_t)meta[2] | (uint32_t)meta[3] << 8, lut);
    l0 = VF_LOAD(lut); l1 = VF_LOAD(lut + 4); l2 = VF_LOAD(lut + 8); l3 = VF_LOAD(lut + 12);
  }
  /* byte 1 of values 0..7 (from l0, l1) and 8..15 (l2, l3), then bytes 2 and 3 */
  VI a = VI8_SHUFFLE(l0, l1, 1, 5, 9, 13, 17, 21, 25, 29, 1, 5, 9, 13, 17, 21, 25, 29);
  VI b = VI8_SHUFFLE(l2, l3, 1, 5, 9, 13, 17, 21, 25, 29, 1, 5, 9, 13, 17, 21, 25, 29);
  VI c = VI8_SHUFFLE(l0, l1, 2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  VI d = VI8_SHUFFLE(l2, l3, 2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  *p1 = VI8_SHUFFLE(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  *p2 = VI8_SHUFFLE(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  *p3 = VI8_SHUFFLE(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}

/* 16 codes (one per byte of idx) -> their 16 f32 values at dst. */
ALWAYS_INLINE void lookup16(float *dst, VI idx, VI p1, VI p2, VI p3) {
  VI b0 = VF_ZERO, b1 = VI8_LOOKUP(p1, idx), b2 = VI8_LOOKUP(p2, idx), b3 = VI8_LOOKUP(p3, idx);
  VI lo01 = VI8_SHUFFLE(b0, b1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  VI hi01 = VI8_SHUFFLE(b0, b1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  VI lo23 = VI8_SHUFFLE(b2, b3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  VI hi23 = VI8_SHUFFLE(b2, b3, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  VF_STORE(dst, VI8_SHUFFLE(lo01, lo23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23));
  VF_STORE(dst + 4, VI8_SHUFFLE(lo01, lo23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31));
  VF_STORE(dst + 8, VI8_SHUFFLE(hi01, hi23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23));
  VF_STORE(dst + 12, VI8_SHUFFLE(hi01, hi23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31));
}

/* The codes of 8 packed bytes (in the low half of x), high nibble first: 16 code bytes in element order (the high
 * half of x gives elements 16..31 with `high`). */
ALWAYS_INLINE VI codes(VI x, int high) {
  VI hi = VI8_SHR(x, 4), lo = VI_AND(x, VI8_SPLAT(15));
  return high ? VI8_SHUFFLE(hi, lo, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
              : VI8_SHUFFLE(hi, lo, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}

static void dequant_int4(float *dst, const uint8_t *src, uint32_t stride, int n, int D) {
  for (int i = 0; i < n; i++, src += stride, dst += D) {
    VI p1, p2, p3;
    int4_planes(src + D / 2, &p1, &p2, &p3);
    int d = 0;
    for (; d + 32 <= D; d += 32) {
      VI x = VF_LOAD(src + d / 2);
      lookup16(dst + d, codes(x, 0), p1, p2, p3);
      lookup16(dst + d + 16, codes(x, 1), p1, p2, p3);
    }
    if (d + 16 <= D) {
      lookup16(dst + d, codes(VI_LOAD64(src + d / 2), 0), p1, p2, p3);
      d += 16;
    }
    if (d < D) { /* 4, 8 or 12 elements left: through a 16-element scratch row */
      uint8_t tail[8] = {0};
      float out[16];
      __builtin_memcpy(tail, src + d / 2, (uint32_t)(D - d) / 2);
      lookup16(out, codes(VI_LOAD64(tail), 0), p1, p2, p3);
      __builtin_memcpy(dst + d, out, (uint32_t)(D - d) * 4);
    }
  }
}

static void dequant_int8(float *dst, const uint8_t *src, uint32_t stride, int n, int D) {
  for (int i = 0; i < n; i++, src += stride, dst += D) {
    float scale;
    __builtin_memcpy(&scale, src + D, 4);
    const VF vs = VF_SPLAT(scale);
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      VI w = VI16_LOAD8(src + d);
      VF_STORE(dst + d, VF_MUL(VF_FROM_I32(VI32_LO16(w)), vs));
      VF_STORE(dst + d + 4, VF_MUL(VF_FROM_I32(VI32_HI16(w)), vs));
    }
    for (; d < D; d++) dst[d] = (float)(int8_t)src[d] * scale;
  }
}

void k_dequant(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT8) dequant_int8(dst, src, stride, n, D);
  else dequant_int4(dst, src, stride, n, D);
}
