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

#ifdef K_QUANT_FUSED
/*
 * Fused quantized decode (kernels.h K_QUANT_FUSED), in VQ vectors (simd_x86.h: 16 lanes on AVX-512, 8 on AVX2). A step
 * reads a chunk of QC = 2 * VQ_LANES elements of a record as two vectors: int4 QC / 2 bytes zero-extended into lanes,
 * the high nibbles (even elements) and the low ones (odd elements) looked up in the record's table; int8 two runs of
 * VQ_LANES codes. What bounds these kernels at G = 4 is the multiply-add ports, which on x86 also run every shuffle
 * and conversion (AVX-512: ports 0 and 5 only), so the structure keeps everything but the multiply-adds few:
 *  - each value is widened once and used by all nq query vectors from registers (nq = 4: a GQA group);
 *  - the block's int4 tables are built first, all independent, into an L1 array (stage);
 *  - K: R records per pass (R * nq = VQ_ACCS sums in registers), the queries' chunks loaded once for all R, the R * nq
 *    sums finished together (AVX-512: 16 in one vector; else 4 at a time, vq_sum4); int8's scales multiply them;
 *  - V: a panel of the accumulators (nq vectors x CH chunks) stays in registers down all n records of the block;
 *    int8's weights are staged times their record's scale.
 * Per 16 elements at G = 4 that is 4 multiply-adds and 2 other operations (a lookup and half an unpack: int4; a
 * widening and a conversion: int8), plus one table per record (~14 operations; ~5 with AVX512-FP16) and, for K, the
 * horizontal sums: in L1, one thread, int4 K ran at 0.43 and V at 0.54 of the 512-bit multiply-add peak (README).
 */
#define QL VQ_LANES
#define QC (2 * VQ_LANES)

void k_quant_query(float *qz, const float *q, float scale, int D, int dt) {
  const int int4 = (dt & DUO_DTYPE_MASK) == DUO_INT4;
  for (int d = 0; d < D; d++) qz[int4 ? d / QC * QC + d % 2 * QL + d % QC / 2 : d] = q[d] * scale;
}

/* Elements [d, d + QC) of a record: int4 the even ones (x) and the odd ones (y); int8 [d, d + QL) and the rest. */
ALWAYS_INLINE void chunk(const uint8_t *rec, int d, int dt, VQT t, VQ *x, VQ *y) {
  if (dt == DUO_INT4) {
    const VQI c = VQ_U8(rec + d / 2);
    *x = vq_lut(VQ_SHR4(c), t);
    *y = vq_lut(c, t);
  } else {
    *x = VQ_I8(rec + d);
    *y = VQ_I8(rec + d + QL);
  }
}

#ifdef __AVX512F__
#include <cpuid.h>
/* With AVX512-FP16 (Sapphire Rapids and later; chosen at run time, the set targets x86-64-v4) the tables of two
 * records come from one f16 multiply and one f16 add over 32 lanes: the codec's own arithmetic, f16(q * s) and then
 * f16(+ z), each rounded to nearest even with Inf on overflow (these instructions ignore DAZ / FTZ), so the same
 * values as vq_table's f32 arithmetic and two roundings, in ~5 operations per table instead of ~14. */
__attribute__((target("avx512fp16"))) static void tables_fp16(VQT *tabs, const uint8_t *meta, uint32_t stride, int n) {
  static const uint16_t codes[32] __attribute__((aligned(64))) = { /* 0..15 as f16, twice */
    0x0000, 0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800, 0x4880, 0x4900, 0x4980, 0x4a00, 0x4a80, 0x4b00, 0x4b80,
    0x0000, 0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800, 0x4880, 0x4900, 0x4980, 0x4a00, 0x4a80, 0x4b00, 0x4b80};
  const __m512h q = _mm512_castsi512_ph(_mm512_load_si512((const void *)codes));
  const __m512i lo = _mm512_set1_epi32(0x01000100), hi = _mm512_set1_epi32(0x03020302); /* s, z of each dword */
  int i = 0;
  for (; i + 2 <= n; i += 2, meta += 2 * stride) { /* records i, i + 1 in the low / high 16 lanes */
    const __m512i m = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(*(const int32_t *)(const void *)meta)),
                                         _mm256_set1_epi32(*(const int32_t *)(const void *)(meta + stride)), 1);
    const __m512h t = _mm512_add_ph(_mm512_mul_ph(q, _mm512_castsi512_ph(_mm512_shuffle_epi8(m, lo))),
                                    _mm512_castsi512_ph(_mm512_shuffle_epi8(m, hi)));
    tabs[i] = _mm512_cvtph_ps(_mm256_castph_si256(_mm512_castph512_ph256(t)));
    tabs[i + 1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(_mm512_castph_si512(t), 1));
  }
  if (i < n) tabs[i] = vq_table(meta);
}

static int has_fp16(void) {
  static int known = -1; /* -1 until asked; every thread computes the same answer */
  int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
  if (v < 0) {
    unsigned a, b, c, d;
    v = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 23 & 1);
    __atomic_store_n(&known, v, __ATOMIC_RELAXED);
  }
  return v;
}
#endif

/* The block's int4 tables, built before the loops that use them (tabs [n]: independent chains of conversions, ~45
 * cycles long each, that the loops then read from L1). */
ALWAYS_INLINE void stage(VQT *tabs, const uint8_t *rec, uint32_t stride, int D, int n, int dt) {
  if (dt != DUO_INT4) return;
#ifdef __AVX512F__
  if (has_fp16()) { tables_fp16(tabs, rec + D / 2, stride, n); return; }
#endif
  for (int i = 0; i < n; i++, rec += stride) tabs[i] = vq_table(rec + D / 2);
}

/* R records at a time; a last group of fewer reads its first record again in the missing places (those sums are
 * dropped), so that every group runs the same code. */
ALWAYS_INLINE void scores_impl(const float *qz, int D, const uint8_t *k, uint32_t stride, int n, float *s, int sm,
                               int dt, const int NQ, const int R) {
  VQT tabs[64];
  stage(tabs, k, stride, D, n, dt);
  for (int i = 0; i < n; i += R) {
    const int m = n - i < R ? n - i : R;
    const uint8_t *rec[VQ_ACCS]; /* fixed sizes: arrays sized by R would be VLAs, on the stack */
    const VQT *t[VQ_ACCS];
    VQ a[VQ_ACCS];
    for (int r = 0; r < R; r++) {
      const int row = i + (r < m ? r : 0);
      rec[r] = k + (uint32_t)row * stride;
      t[r] = tabs + row;
    }
    for (int x = 0; x < R * NQ; x++) a[x] = VQ_ZERO;
    for (int d = 0; d < D; d += QC) {
      VQ qx[4], qy[4];
      for (int h = 0; h < NQ; h++) { qx[h] = VQ_LOAD(qz + h * D + d); qy[h] = VQ_LOAD(qz + h * D + d + QL); }
      for (int r = 0; r < R; r++) {
        VQ x, y;
        chunk(rec[r], d, dt, dt == DUO_INT4 ? *t[r] : (VQT){0}, &x, &y);
        for (int h = 0; h < NQ; h++) a[r * NQ + h] = VQ_MAD(VQ_MAD(a[r * NQ + h], qx[h], x), qy[h], y);
      }
    }
    float sums[VQ_ACCS] __attribute__((aligned(64)));
#ifdef VZ_LANES4
    if (R * NQ == 16) /* all 16 sums in one vector: 15 pairwise steps of 2 lane operations and an add */
      VZ_STORE(sums, VZ_LANES4(VZ_QUAD(a[0], a[1], a[2], a[3]), VZ_QUAD(a[4], a[5], a[6], a[7]),
                               VZ_QUAD(a[8], a[9], a[10], a[11]), VZ_QUAD(a[12], a[13], a[14], a[15])));
    else
#endif
      for (int x = 0; x < R * NQ; x += 4) VF_STORE(sums + x, vq_sum4(a[x], a[x + 1], a[x + 2], a[x + 3]));
    for (int r = 0; r < m; r++) {
      float sc = 1.0f;
      if (dt == DUO_INT8) __builtin_memcpy(&sc, rec[r] + D, 4);
      for (int h = 0; h < NQ; h++) s[(i + r) * sm + h] = dt == DUO_INT8 ? sums[r * NQ + h] * sc : sums[r * NQ + h];
    }
  }
}

void k_scores_quant(const float *qz, int nq, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s, int sm) {
  const int int4 = (dt & DUO_DTYPE_MASK) == DUO_INT4;
  if (nq == 1) {
    if (int4) scores_impl(qz, D, k, stride, n, s, sm, DUO_INT4, 1, VQ_ACCS / 2);
    else scores_impl(qz, D, k, stride, n, s, sm, DUO_INT8, 1, VQ_ACCS / 2);
  } else {
    if (int4) scores_impl(qz, D, k, stride, n, s, sm, DUO_INT4, 4, VQ_ACCS / 4);
    else scores_impl(qz, D, k, stride, n, s, sm, DUO_INT8, 4, VQ_ACCS / 4);
  }
}

/* Elements [d0, d0 + CH * QC) of the nq accumulators, in registers down the n records (int4: even/odd halves per
 * chunk, VQ_EO_IN / VQ_EO_OUT at the ends). w [n][ws]: the weights (h < NQ); tabs [n]: the int4 tables. */
ALWAYS_INLINE void pv_panel(float *acc, const float *alpha, const float *w, int ws, const VQT *tabs, int D,
                            const uint8_t *v, uint32_t stride, int n, int dt, const int NQ, int d0, const int CH) {
  VQ e[4 * 2 * 4]; /* [query][chunk][x, y]: NQ * 2 * CH used (a fixed size: not a VLA) */
  for (int h = 0; h < NQ; h++) {
    const VQ al = VQ_SPLAT(alpha + h);
    for (int c = 0; c < CH; c++) {
      const float *src = acc + h * D + d0 + c * QC;
      VQ x, y;
      if (dt == DUO_INT4) VQ_EO_IN(src, &x, &y);
      else { x = VQ_LOAD(src); y = VQ_LOAD(src + QL); }
      e[(h * CH + c) * 2] = VQ_MUL(x, al);
      e[(h * CH + c) * 2 + 1] = VQ_MUL(y, al);
    }
  }
  const uint8_t *r = v;
  for (int i = 0; i < n; i++, r += stride) {
    VQ wv[4];
    for (int h = 0; h < NQ; h++) wv[h] = VQ_SPLAT(w + i * ws + h);
    for (int c = 0; c < CH; c++) {
      VQ x, y;
      chunk(r, d0 + c * QC, dt, dt == DUO_INT4 ? tabs[i] : (VQT){0}, &x, &y);
      for (int h = 0; h < NQ; h++) {
        e[(h * CH + c) * 2] = VQ_MAD(e[(h * CH + c) * 2], wv[h], x);
        e[(h * CH + c) * 2 + 1] = VQ_MAD(e[(h * CH + c) * 2 + 1], wv[h], y);
      }
    }
  }
  for (int h = 0; h < NQ; h++)
    for (int c = 0; c < CH; c++) {
      float *dst = acc + h * D + d0 + c * QC;
      if (dt == DUO_INT4) VQ_EO_OUT(dst, e[(h * CH + c) * 2], e[(h * CH + c) * 2 + 1]);
      else { VQ_STORE(dst, e[(h * CH + c) * 2]); VQ_STORE(dst + QL, e[(h * CH + c) * 2 + 1]); }
    }
}

/* Panels of CH chunks (nq = 4: VQ_ACCS sums; nq = 1: 4 chunks), then one panel of the chunks left. int8's weights are
 * staged times their record's scale; int4's are read where they are. */
ALWAYS_INLINE void pv_impl(float *acc, const float *alpha, const float *p, int sm, int D, const uint8_t *v,
                           uint32_t stride, int n, int dt, const int NQ) {
  const int CH = NQ == 1 ? 4 : VQ_ACCS / 8;
  float staged[64 * 4] __attribute__((aligned(64)));
  VQT tabs[64];
  stage(tabs, v, stride, D, n, dt);
  const float *w = p;
  int ws = sm;
  if (dt == DUO_INT8) {
    const uint8_t *r = v;
    for (int i = 0; i < n; i++, r += stride) {
      float sc;
      __builtin_memcpy(&sc, r + D, 4);
      for (int h = 0; h < NQ; h++) staged[i * NQ + h] = p[i * sm + h] * sc;
    }
    w = staged;
    ws = NQ;
  }
  int d0 = 0;
  for (; d0 + CH * QC <= D; d0 += CH * QC) pv_panel(acc, alpha, w, ws, tabs, D, v, stride, n, dt, NQ, d0, CH);
  const int left = (D - d0) / QC;
  if (CH > 3 && left == 3) pv_panel(acc, alpha, w, ws, tabs, D, v, stride, n, dt, NQ, d0, CH > 3 ? 3 : 1);
  if (CH > 2 && left == 2) pv_panel(acc, alpha, w, ws, tabs, D, v, stride, n, dt, NQ, d0, CH > 2 ? 2 : 1);
  if (CH > 1 && left == 1) pv_panel(acc, alpha, w, ws, tabs, D, v, stride, n, dt, NQ, d0, 1);
}

void k_pv_quant(float *acc, const float *alpha, const float *p, int sm, int nq, int D, const uint8_t *v, uint32_t stride,
                int dt, int n) {
  const int int4 = (dt & DUO_DTYPE_MASK) == DUO_INT4;
  if (nq == 1) {
    if (int4) pv_impl(acc, alpha, p, sm, D, v, stride, n, DUO_INT4, 1);
    else pv_impl(acc, alpha, p, sm, D, v, stride, n, DUO_INT8, 1);
  } else {
    if (int4) pv_impl(acc, alpha, p, sm, D, v, stride, n, DUO_INT4, 4);
    else pv_impl(acc, alpha, p, sm, D, v, stride, n, DUO_INT8, 4);
  }
}

/*
 * G = 1 decode (nq = 1, the MHA shape) row by row (kernels.h k_scores_quant_heads / k_pv_quant_heads): the head-by-head
 * kernels above read one record every row_heads records (int4 at D = 128: 68 bytes every 32 x 68), a walk no hardware
 * prefetcher follows, even with the driver asking for the next block (int4 6.7-7.3 GB/s, int8 8.3-9.3, one thread,
 * against a ~17 GB/s read ceiling). These walk each block's rows front to back, each row across every head of the call
 * (attend_simd.c's wide float kernels, same order): one stream. The arithmetic per record is as above (a table per
 * int4 record, int8's scale on the sum and on the weight), so the two orders agree to rounding in the sums.
 * Measured (one thread, AVX-512, 64K tokens, shared 2-vCPU VM, A/B in alternating runs): int4 0.56-0.58 -> 0.51 of
 * bf16's time, int8 0.92-0.93 -> 0.73-0.75. Both now compute-bound, not read-bound: K alone (P.V skipped, a timing
 * experiment) took half the time, ~36 cycles per int4 record (at the clock the FMA ceiling implies) against ~12 of
 * port-0/5 work in its inner loop (a vpmovzxbd, a shift, two vpermps, two FMAs per 32 elements), so what is left is in
 * the cores, not the walk.
 */

/* The int4 tables of the R records at row + off[h] (h < R). contig: off[h] = off[0] + h * hb, so the AVX512-FP16
 * tables (records a fixed stride apart) serve them. */
ALWAYS_INLINE void head_tables(VQT *tabs, const uint8_t *row, const uint32_t *off, int D, uint32_t hb, int contig,
                               const int R) {
#ifdef __AVX512F__
  if (contig && R > 1 && has_fp16()) { tables_fp16(tabs, row + off[0] + D / 2, hb, R); return; }
#else
  (void)hb; (void)contig;
#endif
  for (int h = 0; h < R; h++) tabs[h] = vq_table(row + off[h] + D / 2);
}

/* s[h] = qz_h . the record at row + off[h], for h < R (VQ_ACCS, 4 or 1): one sum per head down the head dim, the R
 * sums added up together. qz [R][D]: the queries in dt's chunk order (k_quant_query). */
ALWAYS_INLINE void dot_records(const float *qz, const uint32_t *off, int D, const uint8_t *row, uint32_t hb,
                               int contig, float *s, int dt, const int R) {
  VQT tabs[VQ_ACCS];
  if (dt == DUO_INT4) head_tables(tabs, row, off, D, hb, contig, R);
  VQ a[VQ_ACCS];
  for (int h = 0; h < R; h++) a[h] = VQ_ZERO;
  for (int d = 0; d < D; d += QC)
    for (int h = 0; h < R; h++) {
      VQ x, y;
      chunk(row + off[h], d, dt, dt == DUO_INT4 ? tabs[h] : (VQT){0}, &x, &y);
      a[h] = VQ_MAD(VQ_MAD(a[h], VQ_LOAD(qz + h * D + d), x), VQ_LOAD(qz + h * D + d + QL), y);
    }
  float sums[VQ_ACCS] __attribute__((aligned(64)));
#ifdef VZ_LANES4
  if (R == 16)
    VZ_STORE(sums, VZ_LANES4(VZ_QUAD(a[0], a[1], a[2], a[3]), VZ_QUAD(a[4], a[5], a[6], a[7]),
                             VZ_QUAD(a[8], a[9], a[10], a[11]), VZ_QUAD(a[12], a[13], a[14], a[15])));
  else
#endif
  if (R == 1) sums[0] = VF_LANE(vq_sum4(a[0], VQ_ZERO, VQ_ZERO, VQ_ZERO), 0);
  else
    for (int h = 0; h < R; h += 4) VF_STORE(sums + h, vq_sum4(a[h], a[h + 1], a[h + 2], a[h + 3]));
  for (int h = 0; h < R; h++) {
    float sc = 1.0f;
    if (dt == DUO_INT8) __builtin_memcpy(&sc, row + off[h] + D, 4);
    s[h] = dt == DUO_INT8 ? sums[h] * sc : sums[h];
  }
}

/* Whether off[h] = off[0] + h * hb for h < nv (the call's heads side by side in each row). */
static int heads_contiguous(const uint32_t *off, int nv, uint32_t hb) {
  for (int h = 1; h < nv; h++)
    if (off[h] != off[0] + (uint32_t)h * hb) return 0;
  return 1;
}

#ifndef QUANT_AHEAD_BYTES
#define QUANT_AHEAD_BYTES 8192
#endif
/* Each row asks for the span of the call's records [lo, hi) of the row QUANT_AHEAD_BYTES of records on (int4 at
 * D = 128, 32 heads: 4 rows; past a block's end, the next block's rows: prefetches past a buffer's end are dropped,
 * they do not fault). The distance measured the same at 4, 8 and 16 KiB (int4 64K: 38.9-39.1 ms, shared VM). */
ALWAYS_INLINE void scores_quant_heads_impl(const float *qz, int nv, int sm, const uint32_t *off, int D, const uint8_t *k,
                                           uint32_t stride, int n, float *s, int dt) {
  const uint32_t hb = kv_head_bytes(dt, (uint32_t)D);
  uint32_t lo = off[0], hi = off[0];
  for (int h = 1; h < nv; h++) { lo = off[h] < lo ? off[h] : lo; hi = off[h] > hi ? off[h] : hi; }
  hi += hb;
  const int contig = heads_contiguous(off, nv, hb);
  const uint32_t ahead = (QUANT_AHEAD_BYTES + hi - lo - 1) / (hi - lo) * stride;
  const uint8_t *row = k;
  for (int i = 0; i < n; i++, row += stride) {
    for (uint32_t o = lo; o < hi; o += 64) VQ_PREFETCH(row + ahead + o);
    float *si = s + i * sm;
    int h = 0;
    for (; h + VQ_ACCS <= nv; h += VQ_ACCS) dot_records(qz + h * D, off + h, D, row, hb, contig, si + h, dt, VQ_ACCS);
    for (; h + 4 <= nv; h += 4) dot_records(qz + h * D, off + h, D, row, hb, contig, si + h, dt, 4);
    for (; h < nv; h++) dot_records(qz + h * D, off + h, D, row, hb, contig, si + h, dt, 1);
    for (h = nv; h < sm; h++) si[h] = -__builtin_inff();
  }
}

void k_scores_quant_heads(const float *qz, int nv, int sm, const uint32_t *off, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT4) scores_quant_heads_impl(qz, nv, sm, off, D, k, stride, n, s, DUO_INT4);
  else scores_quant_heads_impl(qz, nv, sm, off, D, k, stride, n, s, DUO_INT8);
}

/* RR rows (4 or 1) into every accumulator: the RR records of head h (their tables, int8 their weights times their
 * scales, as pv_impl stages them), then each chunk of acc[h] loaded once, RR multiply-adds per half, stored. int4's
 * accumulators are in even/odd order per chunk here (pv_quant_heads_impl). */
ALWAYS_INLINE void pv_records_rows(float *acc, const float *p, int sm, int nv, const uint32_t *off, int D,
                                   const uint8_t *row, uint32_t stride, int dt, const int RR) {
  for (int h = 0; h < nv; h++) {
    const uint8_t *rec = row + off[h];
    VQ w[4];
    VQT t[4];
    if (dt == DUO_INT4) {
#ifdef __AVX512F__
      if (RR > 1 && has_fp16()) tables_fp16(t, rec + D / 2, stride, RR);
      else
#endif
        for (int r = 0; r < RR; r++) t[r] = vq_table(rec + (uint32_t)r * stride + D / 2);
    }
    for (int r = 0; r < RR; r++) {
      float wt = p[r * sm + h];
      if (dt == DUO_INT8) {
        float sc;
        __builtin_memcpy(&sc, rec + (uint32_t)r * stride + D, 4);
        wt *= sc;
      }
      w[r] = VQ_SPLAT(&wt);
    }
    float *a = acc + h * D;
    for (int d = 0; d < D; d += QC) {
      VQ ex = VQ_LOAD(a + d), ey = VQ_LOAD(a + d + QL);
      for (int r = 0; r < RR; r++) {
        VQ x, y;
        chunk(rec + (uint32_t)r * stride, d, dt, dt == DUO_INT4 ? t[r] : (VQT){0}, &x, &y);
        ex = VQ_MAD(ex, w[r], x);
        ey = VQ_MAD(ey, w[r], y);
      }
      VQ_STORE(a + d, ex);
      VQ_STORE(a + d + QL, ey);
    }
  }
}

ALWAYS_INLINE void pv_quant_heads_impl(float *acc, const float *alpha, const float *p, int sm, int nv,
                                       const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int n, int dt) {
  for (int h = 0; h < nv; h++) { /* acc *= alpha; int4: each chunk into its even / odd halves */
    const VQ al = VQ_SPLAT(alpha + h);
    for (int d = 0; d < D; d += QC) {
      VQ x, y;
      if (dt == DUO_INT4) VQ_EO_IN(acc + h * D + d, &x, &y);
      else { x = VQ_LOAD(acc + h * D + d); y = VQ_LOAD(acc + h * D + d + QL); }
      VQ_STORE(acc + h * D + d, VQ_MUL(x, al));
      VQ_STORE(acc + h * D + d + QL, VQ_MUL(y, al));
    }
  }
  const uint32_t hb = kv_head_bytes(dt, (uint32_t)D);
  uint32_t lo = off[0], hi = off[0];
  for (int h = 1; h < nv; h++) { lo = off[h] < lo ? off[h] : lo; hi = off[h] > hi ? off[h] : hi; }
  hi += hb;
  const uint32_t ahead = ((QUANT_AHEAD_BYTES + hi - lo - 1) / (hi - lo) + 4) * stride;
  int i = 0; /* each 4-row step asks for the V rows as far ahead as the scores kernel asks for K */
  for (; i + 4 <= n; i += 4) {
    for (int r = 0; r < 4; r++)
      for (uint32_t o = lo; o < hi; o += 64) VQ_PREFETCH(v + (uint32_t)(i + r) * stride + ahead + o);
    pv_records_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, dt, 4);
  }
  for (; i < n; i++) pv_records_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, dt, 1);
  if (dt == DUO_INT4) /* back to natural order */
    for (int e = 0; e < nv * D; e += QC) {
      const VQ x = VQ_LOAD(acc + e), y = VQ_LOAD(acc + e + QL);
      VQ_EO_OUT(acc + e, x, y);
    }
}

void k_pv_quant_heads(float *acc, const float *alpha, const float *p, int sm, int nv, const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int dt, int n) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT4) pv_quant_heads_impl(acc, alpha, p, sm, nv, off, D, v, stride, n, DUO_INT4);
  else pv_quant_heads_impl(acc, alpha, p, sm, nv, off, D, v, stride, n, DUO_INT8);
}
#undef QL
#undef QC
#endif
