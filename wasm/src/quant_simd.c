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
  /* each vector's bytes 1, 2, 3 of its 4 values into its 32-bit lanes 0, 1, 2 (one byte lookup each), then a 4 x 4
   * transpose of 32-bit lanes by zips: plane k = lane k - 1 of l0..l3. Against 7 two-input byte shuffles of irregular
   * patterns (wasm, relaxed, one worker, 16K, alternating runs): G = 1 int4 decode 34.3-35.5 -> 31.6-32.5 ms; SSE4.1,
   * where clang picks the instructions either way, the same */
  static const uint8_t pick[16] __attribute__((aligned(16))) = {1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 0, 0, 0};
  const VI k = VF_LOAD(pick);
  const VI m0 = VI8_LOOKUP(l0, k), m1 = VI8_LOOKUP(l1, k), m2 = VI8_LOOKUP(l2, k), m3 = VI8_LOOKUP(l3, k);
  const VI a = VF_ZIP_LO32(m0, m2), b = VF_ZIP_LO32(m1, m3); /* [m0.0 m2.0 m0.1 m2.1], [m1.0 m3.0 m1.1 m3.1] */
  *p1 = VF_ZIP_LO32(a, b);
  *p2 = VF_ZIP_HI32(a, b);
  *p3 = VF_ZIP_LO32(VF_ZIP_HI32(m0, m2), VF_ZIP_HI32(m1, m3));
}

/* 16 codes (one per byte of idx) -> their 16 f32 values, in order, in r[0..3]. */
ALWAYS_INLINE void lookup16_v(VF *r, VI idx, VI p1, VI p2, VI p3) {
  VI b0 = VF_ZERO, b1 = VI8_LOOKUP(p1, idx), b2 = VI8_LOOKUP(p2, idx), b3 = VI8_LOOKUP(p3, idx);
  VI lo01 = VI8_SHUFFLE(b0, b1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  VI hi01 = VI8_SHUFFLE(b0, b1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  VI lo23 = VI8_SHUFFLE(b2, b3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  VI hi23 = VI8_SHUFFLE(b2, b3, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  r[0] = VI8_SHUFFLE(lo01, lo23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  r[1] = VI8_SHUFFLE(lo01, lo23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  r[2] = VI8_SHUFFLE(hi01, hi23, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  r[3] = VI8_SHUFFLE(hi01, hi23, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

/* 16 codes (one per byte of idx) -> their 16 f32 values at dst. */
ALWAYS_INLINE void lookup16(float *dst, VI idx, VI p1, VI p2, VI p3) {
  VF r[4];
  lookup16_v(r, idx, p1, p2, p3);
  for (int j = 0; j < 4; j++) VF_STORE(dst + 4 * j, r[j]);
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

#ifdef K_INT4_M1
/*
 * int4 m1 decode without a dequantized copy (kernels.h K_INT4_M1: the 4-lane builds; AVX-512 and AVX2 have the fused
 * kernels below): each record's byte planes as k_dequant builds them, then every 16 codes looked up into 4 vectors
 * in registers and met there by the query (K) or the weight (V): no f32 row written and read back. Two records per
 * pass: their planes (6 vectors) and sums stay in the 16 registers a wasm engine has on x86. What is left is the
 * lookups (~11 operations per 16 codes, against ~4 to widen 16 bf16), so int4 m1 decode in these builds is bound by
 * arithmetic at about bf16's time, not by its 3.8x fewer bytes: wasm (relaxed), one worker, 16K, Llama-2-7B's shape,
 * int4 / bf16 time in the same run 1.11 with the dequantized rows, 0.96 now (bench/wasm-kernels.ts --groups 1).
 */

/* The values of codes [d, d + n) of the record at rec (n = 32, or 16: its last 16) into r[0..n/4). */
ALWAYS_INLINE void int4_values(VF *r, const uint8_t *rec, int d, int n, VI p1, VI p2, VI p3) {
  const VI x = n == 32 ? VF_LOAD(rec + d / 2) : VI_LOAD64(rec + d / 2);
  VI hi = VI8_SHR(x, 4), lo = VI_AND(x, VI8_SPLAT(15));
  lookup16_v(r, VI8_SHUFFLE(hi, lo, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), p1, p2, p3);
  if (n == 32) lookup16_v(r + 4, VI8_SHUFFLE(hi, lo, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), p1, p2, p3);
}

void k_scores_int4_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int n, float *s) {
  for (int i = 0; i < n; i += 2) {
    const uint8_t *ra = k + (uint32_t)i * stride, *rb = i + 1 < n ? ra + stride : ra; /* an odd last: read twice */
    VI a1, a2, a3, b1, b2, b3;
    int4_planes(ra + D / 2, &a1, &a2, &a3);
    int4_planes(rb + D / 2, &b1, &b2, &b3);
    VF a0 = VF_ZERO, a4 = VF_ZERO, b0 = VF_ZERO, b4 = VF_ZERO;
    for (int d = 0; d < D; d += 32) {
      const int m = D - d >= 32 ? 32 : 16;
      VF u[8], w[8];
      int4_values(u, ra, d, m, a1, a2, a3);
      int4_values(w, rb, d, m, b1, b2, b3);
      for (int j = 0; j < m / 4; j += 2) {
        const VF q0 = VF_LOAD(q + d + 4 * j), q1 = VF_LOAD(q + d + 4 * j + 4);
        a0 = VF_MAD(a0, q0, u[j]); a4 = VF_MAD(a4, q1, u[j + 1]);
        b0 = VF_MAD(b0, q0, w[j]); b4 = VF_MAD(b4, q1, w[j + 1]);
      }
    }
    const VF t = vf_sum4(a0, a4, b0, b4); /* [sum a0, sum a4, sum b0, sum b4] */
    s[i] = VF_LANE(t, 0) + VF_LANE(t, 1);
    if (i + 1 < n) s[i + 1] = VF_LANE(t, 2) + VF_LANE(t, 3);
  }
}

void k_pv_int4_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int n) {
  const VF al = VF_SPLAT(alpha);
  for (int d = 0; d < D; d += 4) VF_STORE(acc + d, VF_MUL(VF_LOAD(acc + d), al));
  for (int i = 0; i < n; i += 2) {
    const uint8_t *ra = v + (uint32_t)i * stride, *rb = i + 1 < n ? ra + stride : ra;
    const VF wa = VF_SPLAT(p[i]), wb = VF_SPLAT(i + 1 < n ? p[i + 1] : 0.0f); /* an odd last: weight 0 (finite) */
    VI a1, a2, a3, b1, b2, b3;
    int4_planes(ra + D / 2, &a1, &a2, &a3);
    int4_planes(rb + D / 2, &b1, &b2, &b3);
    for (int d = 0; d < D; d += 32) {
      const int m = D - d >= 32 ? 32 : 16;
      VF u[8], w[8];
      int4_values(u, ra, d, m, a1, a2, a3);
      int4_values(w, rb, d, m, b1, b2, b3);
      for (int j = 0; j < m / 4; j++)
        VF_STORE(acc + d + 4 * j, VF_MAD(VF_MAD(VF_LOAD(acc + d + 4 * j), wa, u[j]), wb, w[j]));
    }
  }
}
#endif

#ifdef K_QUANT_FUSED
/*
 * Fused quantized decode (kernels.h K_QUANT_FUSED), in VQ vectors (simd_x86.h: 16 lanes on AVX-512, 8 on AVX2). An
 * int4 chunk of Q4 = 32 elements (16 bytes) is looked up in the record's table by vq_int4_32 into Q4 / VQ_LANES vectors
 * in its chunk order (AVX-512 keys come in wider steps, QS below); an int8 chunk of QC = 2 * VQ_LANES elements is two
 * runs of VQ_LANES codes. What bounds these kernels is the multiply-add ports, which
 * on x86 also run every shuffle and conversion (AVX-512: ports 0 and 5 only; the lookups port 5 only), so the
 * structure keeps everything but the multiply-adds few: each value is widened once and used by all the query vectors
 * that read it (4 at G = 4: a GQA group) from registers; sums are finished 16 at a time (AVX-512: one vector).
 *
 * The walk: each block's rows front to back, each row across every head of the call (attend_simd.c's wide float
 * kernels walk the same order): one stream. Walking head by head instead reads one record every row_heads records
 * (int4 at D = 128, 8 heads: 68 bytes every 544), which no hardware prefetcher follows. Each record asks for its
 * lines QUANT_AHEAD_BYTES of the call's records ahead as it is read: asking for a whole row at once (a burst of 34
 * lines at G = 1, 32 heads) held the line-fill buffers and measured 25-40 % slower from DRAM. Against the head-by-head
 * walk at G = 4 and the row bursts at G = 1 (one thread, AVX-512, 64K tokens, alternating runs): G = 4 int4 14.7-15.2
 * -> 13.2-13.7 ms, int8 20.3-20.7 -> 17.2-18.3; G = 1 int4 39-41 -> 31-32, int8 58 -> 43-45.
 */
#define QL VQ_LANES
#define QC (2 * VQ_LANES) /* int8: elements per chunk */
#define Q4 32             /* int4: elements per chunk (vq_int4_32) */
#define NV4 (Q4 / QL)     /* int4: vectors per chunk */

#ifdef __AVX512F__
/* AVX-512: int4 keys are read in steps of QS elements (a record's QS / 2 bytes as QL 32-bit lanes of 8 codes: lane j
 * holds elements 8j .. 8j + 7, element 8j + k in nibble k ^ 1, the even element being a byte's high nibble), then
 * chunks for a head dim that is not a multiple of QS: step lookup m (the lanes shifted right by 4m) meets the query
 * elements 8j + (m ^ 1), stored at m * QL + j. Per 128 codes that is one load, 7 shifts and 8 lookups, against 4
 * widening loads, 4 shifts and 8 lookups by chunks. A standalone loop over L1-resident records (constant tables, one
 * thread, AVX-512) ran 6.1 ns per record by chunks, 4.9 by steps; in the library's K pass (tables, prefetches, sums)
 * the two measured within 5 % of each other (5.7-6.0 ns per record). AVX2 reads 32 codes per lookup pass anyway
 * (vq_int4_32): chunks only. */
#define QS (8 * VQ_LANES)
#else
#define QS 0
#endif

/* int4: steps of QS elements (AVX-512), then chunks of Q4 (vq_int4_32's order); int8: natural. The AVX2 chunks, against
 * the 8-code steps of two vpermps and a blend each that they replace (one thread, 64K tokens, bench/wasm-kernels.ts,
 * runs alternating with the previous library): G = 1 int4 64.5-65.0 -> 50.9-51.8 ms (0.95 -> 0.75x bf16's time),
 * G = 4 27.5-27.7 -> 24.0-25.8 ms (1.39-1.42 -> 1.25-1.30x). */
void k_quant_query(float *qz, const float *q, float scale, int D, int dt) {
  const int int4 = (dt & DUO_DTYPE_MASK) == DUO_INT4;
  int d = 0;
#if QS
  if (int4)
    for (; d < D / QS * QS; d++) qz[d / QS * QS + (d % 8 ^ 1) * QL + d % QS / 8] = q[d] * scale;
#endif
  for (; d < D; d++) qz[int4 ? d / Q4 * Q4 + VQ_INT4_AT(d % Q4) : d] = q[d] * scale;
}

/* int8 elements [d, d + QC) of a record: [d, d + QL) (x) and the rest (y). */
ALWAYS_INLINE void chunk8(const uint8_t *rec, int d, VQ *x, VQ *y) {
  *x = VQ_I8(rec + d);
  *y = VQ_I8(rec + d + QL);
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

/* int8's scale of the record at rec (the f32 after its D codes); 1 for int4, whose tables hold its scale. */
ALWAYS_INLINE float rec_scale(const uint8_t *rec, int D, int dt) {
  float sc = 1.0f;
  if (dt == DUO_INT8) __builtin_memcpy(&sc, rec + D, 4);
  return sc;
}

/* The int4 tables of the R records at rec + r * step (r < R). */
ALWAYS_INLINE void tables(VQT *tabs, const uint8_t *rec, uint32_t step, int D, const int R) {
#ifdef __AVX512F__
  if (R > 1 && has_fp16()) { tables_fp16(tabs, rec + D / 2, step, R); return; }
#endif
  for (int r = 0; r < R; r++) tabs[r] = vq_table(rec + (uint32_t)r * step + D / 2);
}

/* Asks for the hb bytes at p, one prefetch per 64 bytes from p: a last partial line is left to the next record's asks
 * where records lie side by side (dot_heads asks for a run of them at once). A prefetch costs about a cycle even when
 * the line is in L1: three per int4 record took ~1 ns per record against none (one thread, L1-resident records). */
ALWAYS_INLINE void prefetch_record(const uint8_t *p, uint32_t hb) {
  for (uint32_t o = 0; o < hb; o += 64) VQ_PREFETCH(p + o);
}

/* G = 1: s[h] = qz_h . the record at row + off[h], for h < R (VQ_ACCS, 4 or 1): the R heads' sums down the head dim,
 * finished together. qz [R][D]: the queries in dt's chunk order (k_quant_query). contig: off[h] = off[0] + h * hb
 * (the call's heads side by side), so the tables of records a fixed step apart serve. */
ALWAYS_INLINE void dot_heads(const float *qz, const uint32_t *off, int D, const uint8_t *row, uint32_t hb,
                             int contig, float *s, int dt, uint32_t ahead, const int R) {
  if (contig) prefetch_record(row + ahead + off[0], (uint32_t)R * hb);
  else
    for (int h = 0; h < R; h++) prefetch_record(row + ahead + off[h], hb);
  VQT t[VQ_ACCS];
  if (dt == DUO_INT4) {
    if (contig) tables(t, row + off[0], hb, D, R);
    else
      for (int h = 0; h < R; h++) tables(t + h, row + off[h], 0, D, 1);
  }
  VQ a[VQ_ACCS];
  if (dt == DUO_INT4)
    for (int h = 0; h < R; h++) { /* record by record (4 at a time interleaved measured 4-10 % slower in L1, the same
                                   * from DRAM), in steps (k_quant_query), then chunks; two sums halve the chain */
      const uint8_t *rec = row + off[h];
      const float *qh = qz + h * D;
      VQ a0 = VQ_ZERO, a1 = VQ_ZERO;
      int d = 0;
#if QS
      for (; d + QS <= D; d += QS) {
        const VQI c = VQ_LOADI(rec + d / 2);
        for (int m = 0; m < 8; m += 2) {
          a0 = VQ_MAD(a0, VQ_LOAD(qh + d + m * QL), vq_lut(m ? VQ_SHR(c, 4 * m) : c, t[h]));
          a1 = VQ_MAD(a1, VQ_LOAD(qh + d + (m + 1) * QL), vq_lut(VQ_SHR(c, 4 * m + 4), t[h]));
        }
      }
#endif
      for (; d < D; d += Q4) {
        VQ x[NV4];
        vq_int4_32(x, rec + d / 2, t[h]);
        for (int u = 0; u < NV4; u += 2) {
          a0 = VQ_MAD(a0, VQ_LOAD(qh + d + u * QL), x[u]);
          a1 = VQ_MAD(a1, VQ_LOAD(qh + d + (u + 1) * QL), x[u + 1]);
        }
      }
      a[h] = VQ_ADD(a0, a1);
    }
  else {
    for (int h = 0; h < R; h++) a[h] = VQ_ZERO;
    for (int d = 0; d < D; d += QC)
      for (int h = 0; h < R; h++) {
        VQ x, y;
        chunk8(row + off[h], d, &x, &y);
        a[h] = VQ_MAD(VQ_MAD(a[h], VQ_LOAD(qz + h * D + d), x), VQ_LOAD(qz + h * D + d + QL), y);
      }
  }
  float sums[VQ_ACCS] __attribute__((aligned(64)));
  vq_sums(sums, a, R);
  for (int h = 0; h < R; h++) s[h] = dt == DUO_INT8 ? sums[h] * rec_scale(row + off[h], D, dt) : sums[h];
}

/* G a multiple of 4: s[r*sm + h] = qz_h . the record at rec + r * stride, for r < R rows (VQ_ACCS / 4, or 1) and the
 * h < 4 query vectors of a GQA group (or a quarter of one): each value widened once, used by the four queries. */
ALWAYS_INLINE void dot_rows(const float *qz, int D, const uint8_t *rec, uint32_t stride, uint32_t hb, float *s, int sm,
                            int dt, uint32_t ahead, const int R) {
  for (int r = 0; r < R; r++) prefetch_record(rec + ahead + (uint32_t)r * stride, hb);
  VQT t[VQ_ACCS / 4];
  if (dt == DUO_INT4) tables(t, rec, stride, D, R);
  VQ a[VQ_ACCS];
  for (int x = 0; x < R * 4; x++) a[x] = VQ_ZERO;
  int d = 0;
  if (dt == DUO_INT4) { /* each value meets the four queries' elements, read from L1 */
#if QS
    for (; d + QS <= D; d += QS) {
      VQI c[VQ_ACCS / 4];
      for (int r = 0; r < R; r++) c[r] = VQ_LOADI(rec + (uint32_t)r * stride + d / 2);
      for (int m = 0; m < 8; m++) {
        VQ qm[4];
        for (int h = 0; h < 4; h++) qm[h] = VQ_LOAD(qz + h * D + d + m * QL);
        for (int r = 0; r < R; r++) {
          const VQ x = vq_lut(m ? VQ_SHR(c[r], 4 * m) : c[r], t[r]);
          for (int h = 0; h < 4; h++) a[r * 4 + h] = VQ_MAD(a[r * 4 + h], qm[h], x);
        }
      }
    }
#endif
    for (; d < D; d += Q4)
      for (int r = 0; r < R; r++) {
        VQ x[NV4];
        vq_int4_32(x, rec + (uint32_t)r * stride + d / 2, t[r]);
        for (int u = 0; u < NV4; u++)
          for (int h = 0; h < 4; h++) a[r * 4 + h] = VQ_MAD(a[r * 4 + h], VQ_LOAD(qz + h * D + d + u * QL), x[u]);
      }
  } else
    for (; d < D; d += QC) {
      VQ qx[4], qy[4];
      for (int h = 0; h < 4; h++) { qx[h] = VQ_LOAD(qz + h * D + d); qy[h] = VQ_LOAD(qz + h * D + d + QL); }
      for (int r = 0; r < R; r++) {
        VQ x, y;
        chunk8(rec + (uint32_t)r * stride, d, &x, &y);
        for (int h = 0; h < 4; h++) a[r * 4 + h] = VQ_MAD(VQ_MAD(a[r * 4 + h], qx[h], x), qy[h], y);
      }
    }
  float sums[VQ_ACCS] __attribute__((aligned(64)));
  vq_sums(sums, a, R * 4);
  for (int r = 0; r < R; r++) {
    const float sc = rec_scale(rec + (uint32_t)r * stride, D, dt);
    for (int h = 0; h < 4; h++) s[r * sm + h] = dt == DUO_INT8 ? sums[r * 4 + h] * sc : sums[r * 4 + h];
  }
}

/* Whether off[v] = off[0] + v * hb for v < nv (the call's heads side by side in each row). */
static int heads_contiguous(const uint32_t *off, int nv, uint32_t hb) {
  for (int v = 1; v < nv; v++)
    if (off[v] != off[0] + (uint32_t)v * hb) return 0;
  return 1;
}

#ifndef QUANT_AHEAD_BYTES
#define QUANT_AHEAD_BYTES 1024
#endif
/* How far ahead each record asks for its lines: whole rows, at least QUANT_AHEAD_BYTES of the call's records (int4 at
 * D = 128: 1 row of 32 heads, 2 of 8), plus `rows` for a kernel that reads that many rows at once. Past a block's end
 * that is the next block's rows; past a buffer's end the prefetches are dropped (they do not fault). Measured from
 * DRAM in a kernel harness (G = 1, int4, 32 heads, K and V): 1 KiB 12.1-13.7 ns per token and head, 2 KiB 13.4,
 * 3-8 KiB 13.1-14.1, the same within the noise; int8 likewise; a far prefetcht2 ask besides was no better. */
static uint32_t ahead_bytes(const uint32_t *off, int nv, uint32_t hb, uint32_t stride, uint32_t rows) {
  uint32_t lo = off[0], hi = off[0];
  for (int v = 1; v < nv; v++) { lo = off[v] < lo ? off[v] : lo; hi = off[v] > hi ? off[v] : hi; }
  hi += hb;
  return ((QUANT_AHEAD_BYTES + hi - lo - 1) / (hi - lo) + rows) * stride;
}

/* g = 1: each row, its heads VQ_ACCS, 4, then 1 at a time. g = 4k: each 4 rows (VQ_ACCS / 4 on AVX2), each group of
 * four query vectors against its head's records in those rows; the rows left one at a time. */
ALWAYS_INLINE void scores_quant_heads_impl(const float *qz, int nv, int sm, const uint32_t *off, int D, const uint8_t *k,
                                           uint32_t stride, int n, float *s, int g, int dt) {
  const uint32_t hb = kv_head_bytes(dt, (uint32_t)D);
  const int contig = heads_contiguous(off, nv, hb);
  if (g == 1) {
    const uint32_t ahead = ahead_bytes(off, nv, hb, stride, 0);
    const uint8_t *row = k;
    for (int i = 0; i < n; i++, row += stride) {
      float *si = s + i * sm;
      int h = 0;
      for (; h + VQ_ACCS <= nv; h += VQ_ACCS) dot_heads(qz + h * D, off + h, D, row, hb, contig, si + h, dt, ahead, VQ_ACCS);
      for (; h + 4 <= nv; h += 4) dot_heads(qz + h * D, off + h, D, row, hb, contig, si + h, dt, ahead, 4);
      for (; h < nv; h++) dot_heads(qz + h * D, off + h, D, row, hb, contig, si + h, dt, ahead, 1);
      for (h = nv; h < sm; h++) si[h] = -__builtin_inff();
    }
    return;
  }
  const int R = VQ_ACCS / 4;
  const uint32_t ahead = ahead_bytes(off, nv, hb, stride, (uint32_t)R);
  int i = 0;
  for (; i + R <= n; i += R)
    for (int v = 0; v < nv; v += 4)
      dot_rows(qz + v * D, D, k + (uint32_t)i * stride + off[v], stride, hb, s + i * sm + v, sm, dt, ahead, R);
  for (; i < n; i++)
    for (int v = 0; v < nv; v += 4)
      dot_rows(qz + v * D, D, k + (uint32_t)i * stride + off[v], stride, hb, s + i * sm + v, sm, dt, ahead, 1);
}

void k_scores_quant_heads(const float *qz, int nv, int sm, int g, const uint32_t *off, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT4) scores_quant_heads_impl(qz, nv, sm, off, D, k, stride, n, s, g, DUO_INT4);
  else scores_quant_heads_impl(qz, nv, sm, off, D, k, stride, n, s, g, DUO_INT8);
}

/* int4: the RR records at rec + r * stride (r < RR) into the NQ accumulators at a (D apart, in chunk order), weights
 * w[r][h]: each chunk's values met by every accumulator, UG vectors of each held at once (all NV4 but for AVX2's
 * 4 x 4, which would take every register: there the values of the chunk are made first and used twice). */
ALWAYS_INLINE void pv_int4(float *a, int D, const uint8_t *rec, uint32_t stride, const VQT *t, VQ w[4][4], const int NQ,
                           const int RR) {
  const int UG = NV4 * NQ <= 8 ? NV4 : 8 / NQ;
  for (int d = 0; d < D; d += Q4) {
    VQ x[4][NV4];
    if (UG < NV4)
      for (int r = 0; r < RR; r++) vq_int4_32(x[r], rec + (uint32_t)r * stride + d / 2, t[r]);
    for (int u0 = 0; u0 < NV4; u0 += UG) {
      VQ e[4][NV4];
      for (int h = 0; h < NQ; h++)
        for (int u = 0; u < UG; u++) e[h][u] = VQ_LOAD(a + h * D + d + (u0 + u) * QL);
      for (int r = 0; r < RR; r++) {
        if (UG == NV4) vq_int4_32(x[r], rec + (uint32_t)r * stride + d / 2, t[r]);
        for (int h = 0; h < NQ; h++)
          for (int u = 0; u < UG; u++) e[h][u] = VQ_MAD(e[h][u], w[r][h], x[r][u0 + u]);
      }
      for (int h = 0; h < NQ; h++)
        for (int u = 0; u < UG; u++) VQ_STORE(a + h * D + d + (u0 + u) * QL, e[h][u]);
    }
  }
}

/* RR rows (4 or 1) into the accumulators: for each group of NQ query vectors (1, or 4 of a GQA group) sharing a record,
 * the RR records of its head (their tables; int8 the weights times their scales), then each chunk of the NQ
 * accumulators loaded once, RR * NQ multiply-adds per vector, stored. int4's accumulators are in chunk order here
 * (pv_quant_heads_impl). */
ALWAYS_INLINE void pv_rows(float *acc, const float *p, int sm, int nv, const uint32_t *off, int D, const uint8_t *row,
                           uint32_t stride, uint32_t hb, int dt, uint32_t ahead, const int NQ, const int RR) {
  for (int v = 0; v < nv; v += NQ) {
    const uint8_t *rec = row + off[v];
    for (int r = 0; r < RR; r++) prefetch_record(rec + ahead + (uint32_t)r * stride, hb);
    VQT t[4];
    if (dt == DUO_INT4) tables(t, rec, stride, D, RR);
    VQ w[4][4]; /* [row][query] */
    for (int r = 0; r < RR; r++) {
      const float sc = rec_scale(rec + (uint32_t)r * stride, D, dt);
      for (int h = 0; h < NQ; h++) {
        const float wt = dt == DUO_INT8 ? p[r * sm + v + h] * sc : p[r * sm + v + h];
        w[r][h] = VQ_SPLAT(&wt);
      }
    }
    float *a = acc + v * D;
    if (dt == DUO_INT4) {
      pv_int4(a, D, rec, stride, t, w, NQ, RR);
      continue;
    }
    for (int d = 0; d < D; d += QC) {
      VQ ex[4], ey[4];
      for (int h = 0; h < NQ; h++) { ex[h] = VQ_LOAD(a + h * D + d); ey[h] = VQ_LOAD(a + h * D + d + QL); }
      for (int r = 0; r < RR; r++) {
        VQ x, y;
        chunk8(rec + (uint32_t)r * stride, d, &x, &y);
        for (int h = 0; h < NQ; h++) { ex[h] = VQ_MAD(ex[h], w[r][h], x); ey[h] = VQ_MAD(ey[h], w[r][h], y); }
      }
      for (int h = 0; h < NQ; h++) { VQ_STORE(a + h * D + d, ex[h]); VQ_STORE(a + h * D + d + QL, ey[h]); }
    }
  }
}

ALWAYS_INLINE void pv_quant_heads_impl(float *acc, const float *alpha, const float *p, int sm, int nv, int g,
                                       const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int n, int dt) {
  for (int h = 0; h < nv; h++) { /* acc *= alpha; int4: each chunk into chunk order */
    const VQ al = VQ_SPLAT(alpha + h);
    float *a = acc + h * D;
    if (dt == DUO_INT4)
      for (int d = 0; d < D; d += Q4) {
        VQ x[NV4];
        vq_int4_in(x, a + d);
        for (int u = 0; u < NV4; u++) VQ_STORE(a + d + u * QL, VQ_MUL(x[u], al));
      }
    else
      for (int d = 0; d < D; d += QL) VQ_STORE(a + d, VQ_MUL(VQ_LOAD(a + d), al));
  }
  const uint32_t hb = kv_head_bytes(dt, (uint32_t)D), ahead = ahead_bytes(off, nv, hb, stride, 4);
  int i = 0;
  if (g == 1) {
    for (; i + 4 <= n; i += 4) pv_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, hb, dt, ahead, 1, 4);
    for (; i < n; i++) pv_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, hb, dt, ahead, 1, 1);
  } else {
    for (; i + 4 <= n; i += 4) pv_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, hb, dt, ahead, 4, 4);
    for (; i < n; i++) pv_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, hb, dt, ahead, 4, 1);
  }
  if (dt == DUO_INT4) /* back to natural order */
    for (int e = 0; e < nv * D; e += Q4) {
      VQ x[NV4];
      for (int u = 0; u < NV4; u++) x[u] = VQ_LOAD(acc + e + u * QL);
      vq_int4_out(acc + e, x);
    }
}

void k_pv_quant_heads(float *acc, const float *alpha, const float *p, int sm, int nv, int g, const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int dt, int n) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT4) pv_quant_heads_impl(acc, alpha, p, sm, nv, g, off, D, v, stride, n, DUO_INT4);
  else pv_quant_heads_impl(acc, alpha, p, sm, nv, g, off, D, v, stride, n, DUO_INT8);
}
#undef QL
#undef QC
#undef Q4
#undef NV4
#undef QS
#endif
