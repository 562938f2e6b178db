/*
 * The SIMD mapping for x86-64 (simd.h picks it under -msse4.1). One type for VF and VI (__m128): the integer macros
 * cast, which costs nothing. Built three times by native/build.sh: SSE4.1 (x86-64-v2), AVX2 + FMA (VEX encoding,
 * VF_MAD one vfmadd), AVX-512VL (EVEX: 32 vector registers, so the 4x8 accumulator blocks never spill).
 */
#ifndef DUO_SIMD_X86_H
#define DUO_SIMD_X86_H
#include <immintrin.h>

typedef __m128 VF;
typedef __m128 VI;

#define X_I(x)              _mm_castps_si128(x)
#define X_F(x)              _mm_castsi128_ps(x)

#define VF_LOAD(p)          _mm_loadu_ps((const float *)(const void *)(p))
#define VF_STORE(p, x)      _mm_storeu_ps((float *)(void *)(p), x)
#define VF_LOAD_SPLAT(p)    _mm_set1_ps(*(const float *)(const void *)(p))
#define VF_SPLAT(x)         _mm_set1_ps(x)
#define VF_ZERO             _mm_setzero_ps()
#define VF_ADD(a, b)        _mm_add_ps(a, b)
#define VF_SUB(a, b)        _mm_sub_ps(a, b)
#define VF_MUL(a, b)        _mm_mul_ps(a, b)
#ifdef __FMA__
#define VF_MAD(acc, a, b)   _mm_fmadd_ps(a, b, acc)
#else
#define VF_MAD(acc, a, b)   _mm_add_ps(acc, _mm_mul_ps(a, b))
#endif
#define VF_MAX(a, b)        _mm_max_ps(b, a) /* maxps gives its second operand when unordered: pmax */
#define VF_EQ(a, b)         _mm_cmpeq_ps(a, b)
#define VF_SELECT(m, a, b)  _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b))
#define VF_LANE(x, i)       _mm_cvtss_f32(_mm_shuffle_ps(x, x, _MM_SHUFFLE(i, i, i, i)))

#define VI_SPLAT(x)         X_F(_mm_set1_epi32(x))
#define VI_ADD(a, b)        X_F(_mm_add_epi32(X_I(a), X_I(b)))
#define VI_SUB(a, b)        X_F(_mm_sub_epi32(X_I(a), X_I(b)))
#define VI_SHL(a, n)        X_F(_mm_slli_epi32(X_I(a), n))
#define VI_SHR(a, n)        X_F(_mm_srli_epi32(X_I(a), n))
#define VI_SRA(a, n)        X_F(_mm_srai_epi32(X_I(a), n))
#define VI_AND(a, b)        _mm_and_ps(a, b)
#define VI_OR(a, b)         _mm_or_ps(a, b)
#define VI_EQ(a, b)         X_F(_mm_cmpeq_epi32(X_I(a), X_I(b)))
#define VI_GT_U(a, b)       X_F(_mm_cmpgt_epi32(_mm_xor_si128(X_I(a), _mm_set1_epi32((int32_t)0x80000000)), \
                                                _mm_xor_si128(X_I(b), _mm_set1_epi32((int32_t)0x80000000))))
#define VI_LANE(x, i)       _mm_extract_epi32(X_I(x), i)
#define VI_GT(a, b)         X_F(_mm_cmpgt_epi32(X_I(a), X_I(b)))
#define VI_FROM_F32(x)      X_F(_mm_cvttps_epi32(x)) /* in range only: no saturation */
#define VF_MIN(a, b)        _mm_min_ps(a, b)
#define VF_DIV(a, b)        _mm_div_ps(a, b)
#define VF_ROUND(x)         _mm_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

#define VF_ZIP_LO32(a, b)   _mm_unpacklo_ps(a, b)
#define VF_ZIP_HI32(a, b)   _mm_unpackhi_ps(a, b)
#define VF_CAT_LO64(a, b)   _mm_movelh_ps(a, b)
#define VF_CAT_HI64(a, b)   _mm_movehl_ps(b, a)
#define VF_SWAP64(a)        _mm_shuffle_ps(a, a, _MM_SHUFFLE(1, 0, 3, 2))
#define VF_SWAP32(a)        _mm_shuffle_ps(a, a, _MM_SHUFFLE(2, 3, 0, 1))
#define VI_ZIP_LO16(a, b)   X_F(_mm_unpacklo_epi16(X_I(a), X_I(b)))
#define VI_ZIP_HI16(a, b)   X_F(_mm_unpackhi_epi16(X_I(a), X_I(b)))
#define VI_EVEN_ODD16(x)    X_F(_mm_shuffle_epi8(X_I(x), _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)))
#define VI_WIDEN_LO_U16(x)  X_F(_mm_cvtepu16_epi32(X_I(x)))
#define VI_WIDEN_HI_U16(x)  X_F(_mm_unpackhi_epi16(X_I(x), _mm_setzero_si128()))
#define VI_LOAD_U16X4(p)    X_F(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define VI_LOAD_I16X4(p)    X_F(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define VI_NARROW_U16(a, b) X_F(_mm_packus_epi32(X_I(a), X_I(b)))
#define VI_STORE64(p, x)    _mm_storel_epi64((__m128i *)(void *)(p), X_I(x))

/* Byte lanes and widening (simd.h gives their plain-C meaning). SSE has no byte shift: a 16-bit shift, then the bits
 * that crossed in from the neighbouring byte are masked off. */
#define VI8_SHUFFLE(a, b, ...) X_F((__m128i)__builtin_shufflevector((__v16qi)X_I(a), (__v16qi)X_I(b), __VA_ARGS__))
#define VI8_LOOKUP(t, x)    X_F(_mm_shuffle_epi8(X_I(t), X_I(x)))
#define VI8_SHR(a, n)       X_F(_mm_and_si128(_mm_srl_epi16(X_I(a), _mm_cvtsi32_si128(n)), _mm_set1_epi8((char)(0xff >> (n)))))
#define VI8_SUB(a, b)       X_F(_mm_sub_epi8(X_I(a), X_I(b)))
#define VI8_SPLAT(x)        X_F(_mm_set1_epi8((char)(x)))
#define VI_LOAD64(p)        X_F(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define VI16_LOAD8(p)       X_F(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define VI16_LO8(a)         X_F(_mm_cvtepi8_epi16(X_I(a)))
#define VI16_HI8(a)         X_F(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(X_I(a), X_I(a))))
#define VI32_LO16(a)        X_F(_mm_cvtepi16_epi32(X_I(a)))
#define VI32_HI16(a)        X_F(_mm_cvtepi16_epi32(_mm_unpackhi_epi64(X_I(a), X_I(a))))
#define VF_FROM_I32(a)      _mm_cvtepi32_ps(X_I(a))

/* Optional: 8-lane f32 vectors (VW, 256 bits) in the AVX2 and AVX-512 sets, for the tiled decode kernels
 * (attend_simd.c uses them where VW_EO16 is defined). With 4-lane vectors one thread's multiply-adds run at about the
 * speed DRAM delivers bf16 (2 bytes per 8 FLOP at G = 4), so decode from DRAM was compute-bound; 8 lanes halve that.
 * VW_EO16(p, f16): the 8 16-bit elements at p (16 bytes, bf16, or f16 with f16 != 0) as f32 in even/odd order
 * [x0 x2 x4 x6 x1 x3 x5 x7]: bf16 by one 16-byte broadcast load and one byte shuffle that puts each element in the
 * top half of its lane; f16 by a byte shuffle and vcvtph2ps (exact, Inf/NaN included). */
#ifdef __AVX2__
typedef __m256 VW;
#define VW_ZERO             _mm256_setzero_ps()
#define VW_LOAD(p)          _mm256_loadu_ps((const float *)(const void *)(p))
#define VW_STORE(p, x)      _mm256_storeu_ps((float *)(void *)(p), x)
#define VW_LOAD_SPLAT(p)    _mm256_broadcast_ss((const float *)(const void *)(p))
#define VW_ADD(a, b)        _mm256_add_ps(a, b)
#define VW_MUL(a, b)        _mm256_mul_ps(a, b)
#define VW_MAD(acc, a, b)   _mm256_fmadd_ps(a, b, acc)
#define VW_PREFETCH(p)      _mm_prefetch((const char *)(const void *)(p), _MM_HINT_T0)
#define VW_ZIP_LO32(a, b)   _mm256_unpacklo_ps(a, b) /* the VF_* lane ops of the same name, in each 128-bit half */
#define VW_ZIP_HI32(a, b)   _mm256_unpackhi_ps(a, b)
#define VW_CAT_LO64(a, b)   _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0))
#define VW_CAT_HI64(a, b)   _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2))
#define VW_LOAD_REP128(p)   _mm256_broadcast_ps((const __m128 *)(const void *)(p)) /* the 4 floats at p in both halves */
#define VW_LO128(x)         _mm256_castps256_ps128(x)
#define VW_HI128(x)         _mm256_extractf128_ps(x, 1)
#define VW_EO16(p, f16)     ((f16) ? _mm256_cvtph_ps(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p)), \
                                       _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15))) \
                                   : _mm256_castsi256_ps(_mm256_shuffle_epi8( \
                                       _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p))), \
                                       _mm256_setr_epi8(-1, -1, 0, 1, -1, -1, 4, 5, -1, -1, 8, 9, -1, -1, 12, 13, \
                                                        -1, -1, 2, 3, -1, -1, 6, 7, -1, -1, 10, 11, -1, -1, 14, 15))))
#endif

/* Optional: 16-lane f32 vectors (VZ, 512 bits) in the AVX-512 set, for the bf16 tiled decode kernels and the online
 * softmax (one query quad, or 16 query vectors at a time; attend_simd.c), and the model kernels (wasm/model/kernels.c):
 *   VZ_PERM2(a, i, b)     r[k] = (i[k] < 16 ? a : b)[i[k] & 15]  (vpermt2ps)
 *   VZ_PREFETCH_L2(p)     ask for the line at p in L2 (prefetcht1); VZ_PREFETCH(p): in L1 (prefetcht0)
 *   VZ_LOAD_MASKED(m, p)  r[k] = bit k of m ? p[k] : 0 (masked-off lanes read nothing)
 *   VZ_PERM(i, x)         r[k] = x[i[k] & 15]
 *   VZ_BF16_EVEN(x), VZ_BF16_ODD(x)  the even / odd bf16 elements of each 32-bit lane of x as f32 (<< 16, & 0xffff0000)
 *   VZ_LANE128(x, i)      128-bit lane i of x as a VF
 *   VZ_QUAD, VZ_LANES4    horizontal sums (below) */
#ifdef __AVX512F__
typedef __m512 VZ;
typedef __m512i VZI;
#define VZ_ZERO             _mm512_setzero_ps()
#define VZ_LOAD(p)          _mm512_loadu_ps((const float *)(const void *)(p))
#define VZ_STORE(p, x)      _mm512_storeu_ps((float *)(void *)(p), x)
#define VZ_LOAD_SPLAT(p)    _mm512_set1_ps(*(const float *)(const void *)(p))
#define VZ_ADD(a, b)        _mm512_add_ps(a, b)
#define VZ_MUL(a, b)        _mm512_mul_ps(a, b)
#define VZ_MAD(acc, a, b)   _mm512_fmadd_ps(a, b, acc)
#define VZ_PERM2(a, i, b)   _mm512_permutex2var_ps(a, i, b)
#define VZ_PREFETCH_L2(p)   _mm_prefetch((const char *)(const void *)(p), _MM_HINT_T1)
#define VZ_PREFETCH(p)      _mm_prefetch((const char *)(const void *)(p), _MM_HINT_T0)
#define VZ_LOAD_MASKED(m, p) _mm512_maskz_loadu_ps((__mmask16)(m), (const float *)(const void *)(p))
#define VZ_PERM(i, x)       _mm512_permutexvar_ps(i, x)
#define VZ_BF16_EVEN(x)     _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(x), 16))
#define VZ_BF16_ODD(x)      _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int32_t)0xffff0000)))
#define VZ_LANE128(x, i)    _mm512_extractf32x4_ps(x, i)
#define VZ_SPLAT(x)         _mm512_set1_ps(x)
#define VZ_SUB(a, b)        _mm512_sub_ps(a, b)
#define VZ_MAX(a, b)        _mm512_max_ps(b, a) /* pmax, as VF_MAX */
#define VZ_LOAD_OR(d, m, p) _mm512_mask_loadu_ps(d, (__mmask16)(m), (const float *)(const void *)(p))
#define VZ_STORE_MASKED(p, m, x) _mm512_mask_storeu_ps((float *)(void *)(p), (__mmask16)(m), x)
#define VZ_REP128(x)        _mm512_broadcast_f32x4(x)
#define VZ_ZERO_IF_EQ(x, v) _mm512_maskz_mov_ps((__mmask16)~_mm512_cmp_ps_mask(x, v, _CMP_EQ_OQ), x) /* as VF_SELECT(VF_EQ) */
static inline __m128 vz_fold_max4(__m512 x) { /* VF_MAX over the 4 128-bit lanes, lane by lane */
  __m256 h = _mm256_max_ps(_mm512_extractf32x8_ps(x, 1), _mm512_castps512_ps256(x));
  return _mm_max_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
}
static inline __m128 vz_fold_add4(__m512 x) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#define VZ_FOLD_MAX4(x)     vz_fold_max4(x)
#define VZ_FOLD_ADD4(x)     vz_fold_add4(x)
/* vf_exp2 (math.h) in 16 lanes: the same clamp, rounding, polynomial and exponent. */
static inline __m512 vz_exp2(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-127.0f), x); /* as VF_MAX(x, -127): a NaN stays NaN */
  const __m512 t = _mm512_add_ps(x, _mm512_set1_ps(12582912.0f));
  const __m512 f = _mm512_sub_ps(x, _mm512_sub_ps(t, _mm512_set1_ps(12582912.0f)));
  __m512 p = _mm512_set1_ps(1.535335614e-04f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887502e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437849e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332367e-02f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264774e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471825e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32((int32_t)(127u - 0x4b400000u))), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
#define VZ_EXP2_READY 1
#define VZ_IDX(...)         _mm512_setr_epi32(__VA_ARGS__)
/* Horizontal sums, 4 vectors x 4 at a time: vz_quad(a, b, c, d) leaves [sum a, sum b, sum c, sum d] as partial sums in
 * each 128-bit lane (4 lane ops, 3 adds); vz_lanes4(u0..u3) adds up the 4 lanes of 4 such vectors: lanes 4k..4k+3 of
 * the result are the sums of u_k (4 lane ops, 3 adds). */
static inline __m512 vz_quad(__m512 a, __m512 b, __m512 c, __m512 d) {
  __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 per 128 */
  __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}
static inline __m512 vz_lanes4(__m512 u0, __m512 u1, __m512 u2, __m512 u3) {
  __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 2, 3, 2)));
  __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}
#define VZ_QUAD(a, b, c, d)     vz_quad(a, b, c, d)
#define VZ_LANES4(a, b, c, d)   vz_lanes4(a, b, c, d)
#endif

/* Optional: the vectors of the fused quantized decode kernels (quant_simd.c, kernels.h K_QUANT_FUSED): VQ_LANES f32 lanes,
 * 16 on AVX-512 (VZ), 8 on AVX2 + FMA + F16C (VW). An int4 record has 16 possible values, its table (VQT): one 16-lane
 * vector on AVX-512, looked up by one vpermps; on AVX2 the table's f32 bytes 1, 2 and 3 as three 16-byte planes (byte 0
 * of an f16 value's f32 form is always 0), looked up by vpshufb (k_dequant's byte planes, 32 codes at a time).
 *   VQ_I8(p)            VQ_LANES int8 codes at p as f32 (exact)
 *   vq_table(meta)      the table of the int4 record whose f16 scale and min are at meta: t[q] = f16(f16(q * s) + z),
 *                       with two hardware f32 -> f16 roundings (q * s is exact in f32, and rounding the f32 sum of two f16
 *                       values to f16 equals rounding the exact sum: 24 >= 2 * 11 + 2 bits), Inf and subnormals included
 *   vq_int4_32(x, p, t) the values of the 32 int4 elements whose codes are the 16 bytes at p, into 32 / VQ_LANES vectors
 *                       x[] in chunk order: element e at position VQ_INT4_AT(e) (AVX-512: the even elements, then the
 *                       odd ones; AVX2: per 8 elements, the 4 even ones, then the 4 odd ones)
 *   vq_int4_in(x, p)    the 32 floats at p into x[] in chunk order; vq_int4_out(p, x) back
 * AVX-512 only, the wider int4 steps of the keys (quant_simd.c QS):
 *   VQ_U8(p)            VQ_LANES bytes at p zero-extended into 32-bit lanes (int4: one byte = two codes)
 *   VQ_LOADI(p)         4 * VQ_LANES bytes at p as VQ_LANES 32-bit lanes (int4: 8 codes per lane)
 *   VQ_SHR(i, n)        i >> n per 32-bit lane (n = 4: a byte's high nibble; the lookup ignores the bits above 3)
 *   vq_lut(i, t)        r[k] = t[i[k] & 15]
 *   vq_sum4(a, b, c, d) [sum a, sum b, sum c, sum d]
 *   VQ_EO_IN(p, x, y)   the 2 * VQ_LANES floats at p split into even (x) and odd (y) elements; VQ_EO_OUT(p, x, y) back
 *   VQ_ACCS             sums a kernel keeps in registers (half the register file) */
#if defined(__AVX512F__)
#define VQ_LANES            16
#define VQ_ACCS             16
typedef __m512 VQ;
typedef __m512i VQI;
typedef __m512 VQT;
#define VQ_ZERO             _mm512_setzero_ps()
#define VQ_LOAD(p)          _mm512_loadu_ps((const float *)(const void *)(p))
#define VQ_STORE(p, x)      _mm512_storeu_ps((float *)(void *)(p), x)
#define VQ_SPLAT(p)         _mm512_set1_ps(*(const float *)(const void *)(p))
#define VQ_MUL(a, b)        _mm512_mul_ps(a, b)
#define VQ_ADD(a, b)        _mm512_add_ps(a, b)
#define VQ_MAD(acc, a, b)   _mm512_fmadd_ps(a, b, acc)
#define VQ_U8(p)            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define VQ_I8(p)            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))
#define VQ_LOADI(p)         _mm512_loadu_si512((const void *)(p))
#define VQ_SHR(i, n)        _mm512_srli_epi32(i, n)
#define vq_lut(i, t)        _mm512_permutexvar_ps(i, t)
#define VQ_F16_ROUND_(x)    _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
static inline VQT vq_table(const uint8_t *meta) {
  const __m512 sz = _mm512_cvtph_ps(_mm256_set1_epi32(*(const int32_t *)(const void *)meta)); /* s z s z ... */
  const __m512 s = _mm512_moveldup_ps(sz), z = _mm512_movehdup_ps(sz);
  const __m512 q = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return VQ_F16_ROUND_(_mm512_add_ps(VQ_F16_ROUND_(_mm512_mul_ps(q, s)), z));
}
static inline __m128 vq_sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 x = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#define VQ_EO_IN(p, x, y) do { \
    const __m512 l_ = VQ_LOAD(p), h_ = VQ_LOAD((const float *)(p) + 16); \
    *(x) = _mm512_permutex2var_ps(l_, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), h_); \
    *(y) = _mm512_permutex2var_ps(l_, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), h_); \
  } while (0)
#define VQ_EO_OUT(p, x, y) do { \
    VQ_STORE(p, _mm512_permutex2var_ps(x, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), y)); \
    VQ_STORE((float *)(p) + 16, _mm512_permutex2var_ps(x, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), y)); \
  } while (0)
#define VQ_INT4_AT(e)       ((e) % 2 * 16 + (e) / 2)
static inline void vq_int4_32(__m512 *x, const uint8_t *p, __m512 t) {
  const __m512i c = VQ_U8(p);
  x[0] = vq_lut(VQ_SHR(c, 4), t);
  x[1] = vq_lut(c, t);
}
static inline void vq_int4_in(__m512 *x, const float *p) { VQ_EO_IN(p, &x[0], &x[1]); }
static inline void vq_int4_out(float *p, const __m512 *x) { VQ_EO_OUT(p, x[0], x[1]); }
/* The float rows of G = 1 decode (attend_simd.c, kernels.h K_M1_WIDE): VQ_F16(p), VQ_BF16(p): VQ_LANES f16 / bf16
 * elements at p as f32 in order (f16 by vcvtph2ps: exact, Inf/NaN included; bf16 zero-extended and shifted); and
 * VQ_BF16_EVEN(x), VQ_BF16_ODD(x): the even / odd elements of 2 * VQ_LANES bf16 loaded as one vector x, as f32 (<< 16,
 * & 0xffff0000: element 2k is the low half of 32-bit lane k, element 2k + 1 the high half); VQ_PREFETCH(p): ask for
 * the line at p in L1 (prefetcht0). */
#define VQ_PREFETCH(p)      _mm_prefetch((const char *)(const void *)(p), _MM_HINT_T0)
#define VQ_F16(p)           _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define VQ_BF16(p)          _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))
#define VQ_BF16_EVEN(x)     _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(x), 16))
#define VQ_BF16_ODD(x)      _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int32_t)0xffff0000)))
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define VQ_LANES            8
#define VQ_ACCS             8
typedef __m256 VQ;
typedef struct { __m256i p1, p2, p3; } VQT; /* byte k of t[0..15] as f32 (plane k = 1, 2, 3), in both 128-bit lanes */
#define VQ_ZERO             _mm256_setzero_ps()
#define VQ_LOAD(p)          _mm256_loadu_ps((const float *)(const void *)(p))
#define VQ_STORE(p, x)      _mm256_storeu_ps((float *)(void *)(p), x)
#define VQ_SPLAT(p)         _mm256_broadcast_ss((const float *)(const void *)(p))
#define VQ_MUL(a, b)        _mm256_mul_ps(a, b)
#define VQ_ADD(a, b)        _mm256_add_ps(a, b)
#define VQ_MAD(acc, a, b)   _mm256_fmadd_ps(a, b, acc)
#define VQ_I8(p)            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define VQ_F16_ROUND_(x)    _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
static inline VQT vq_table(const uint8_t *meta) {
  const __m256 sz = _mm256_cvtph_ps(_mm_set1_epi32(*(const int32_t *)(const void *)meta)); /* s z s z ... */
  const __m256 s = _mm256_moveldup_ps(sz), z = _mm256_movehdup_ps(sz);
  const __m256 q0 = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), q1 = _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15);
  const __m256 lo = VQ_F16_ROUND_(_mm256_add_ps(VQ_F16_ROUND_(_mm256_mul_ps(q0, s)), z)); /* t[0..7] */
  const __m256 hi = VQ_F16_ROUND_(_mm256_add_ps(VQ_F16_ROUND_(_mm256_mul_ps(q1, s)), z)); /* t[8..15] */
  /* bytes 1, 2, 3 of each 128-bit lane's 4 values into its dwords 0, 1, 2; then dword pairs [t0-3, t4-7] per plane */
  const __m256i pick = _mm256_setr_epi8(1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, -1, -1, -1, -1,
                                        1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, -1, -1, -1, -1);
  const __m256i pair = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i a = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(_mm256_castps_si256(lo), pick), pair);
  const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(_mm256_castps_si256(hi), pick), pair);
  const __m256i p13 = _mm256_unpacklo_epi64(a, b), p2 = _mm256_unpackhi_epi64(a, b); /* [plane 1 | 3], [plane 2 | 0] */
  return (VQT){_mm256_permute2x128_si256(p13, p13, 0x00), _mm256_permute2x128_si256(p2, p2, 0x00),
               _mm256_permute2x128_si256(p13, p13, 0x11)};
}
/* The 16 code bytes in both lanes, lane 0 shifted to its high nibbles (the even elements) and lane 1 left at its low
 * ones (the odd elements); the three planes looked up; their bytes interleaved into f32 lanes [0, b1, b2, b3]:
 * 13 operations per 32 values, against 24 by two vpermps and a blend per 8. */
#define VQ_INT4_AT(e)       ((e) / 8 * 8 + (e) % 2 * 4 + (e) % 8 / 2)
static inline void vq_int4_32(__m256 *x, const uint8_t *p, VQT t) {
  const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p));
  const __m256i i = _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(4, 4, 4, 4, 0, 0, 0, 0)), _mm256_set1_epi8(15));
  const __m256i h1 = _mm256_shuffle_epi8(t.p1, i), h2 = _mm256_shuffle_epi8(t.p2, i), h3 = _mm256_shuffle_epi8(t.p3, i);
  const __m256i z = _mm256_setzero_si256();
  const __m256i a = _mm256_unpacklo_epi8(z, h1), c = _mm256_unpacklo_epi8(h2, h3); /* codes 0..7 of each lane */
  const __m256i e = _mm256_unpackhi_epi8(z, h1), f = _mm256_unpackhi_epi8(h2, h3); /* codes 8..15 */
  x[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(a, c));
  x[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(a, c));
  x[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(e, f));
  x[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(e, f));
}
static inline void vq_int4_in(__m256 *x, const float *p) {
  const __m256i in = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int u = 0; u < 4; u++) x[u] = _mm256_permutevar8x32_ps(VQ_LOAD(p + 8 * u), in);
}
static inline void vq_int4_out(float *p, const __m256 *x) {
  const __m256i out = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int u = 0; u < 4; u++) VQ_STORE(p + 8 * u, _mm256_permutevar8x32_ps(x[u], out));
}
static inline __m128 vq_sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
  const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
  const __m256 x = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
}
/* even: shuffle picks 0 2 of each half of both inputs, a 64-bit permute puts the halves in order; odd likewise */
#define VQ_EO_IN(p, x, y) do { \
    const __m256 l_ = VQ_LOAD(p), h_ = VQ_LOAD((const float *)(p) + 8); \
    *(x) = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(l_, h_, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0))); \
    *(y) = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(l_, h_, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0))); \
  } while (0)
#define VQ_EO_OUT(p, x, y) do { \
    const __m256 u_ = _mm256_unpacklo_ps(x, y), v_ = _mm256_unpackhi_ps(x, y); \
    VQ_STORE(p, _mm256_permute2f128_ps(u_, v_, 0x20)); \
    VQ_STORE((float *)(p) + 8, _mm256_permute2f128_ps(u_, v_, 0x31)); \
  } while (0)
#define VQ_PREFETCH(p)      _mm_prefetch((const char *)(const void *)(p), _MM_HINT_T0)
#define VQ_F16(p)           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define VQ_BF16(p)          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))
#define VQ_BF16_EVEN(x)     _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(x), 16))
#define VQ_BF16_ODD(x)      _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32((int32_t)0xffff0000)))
#endif
#ifdef VQ_LANES
/* out[x] = the sum of a[x]'s lanes, x < n (n = 1, or a multiple of 4 up to 16): 16 sums in one vector on AVX-512
 * (15 pairwise steps of 2 lane operations and an add), else 4 at a time. */
static inline void vq_sums(float *out, const VQ *a, int n) {
#ifdef __AVX512F__
  if (n == 16) {
    VZ_STORE(out, VZ_LANES4(VZ_QUAD(a[0], a[1], a[2], a[3]), VZ_QUAD(a[4], a[5], a[6], a[7]),
                            VZ_QUAD(a[8], a[9], a[10], a[11]), VZ_QUAD(a[12], a[13], a[14], a[15])));
    return;
  }
#endif
  if (n == 1) out[0] = VF_LANE(vq_sum4(a[0], VQ_ZERO, VQ_ZERO, VQ_ZERO), 0);
  else
    for (int x = 0; x < n; x += 4) VF_STORE(out + x, vq_sum4(a[x], a[x + 1], a[x + 2], a[x + 3]));
}
#endif

/* Optional, AVX-512 (BW) only: 16-lane tiles of the model kernels' matmul (wasm/model/kernels.c, whose 16-lane
 * weight loads are in wasm/model/widen.h) on the VZ type above; the 4-lane macros stay what every other kernel uses. */
#ifdef __AVX512BW__
#define VZ_LANES            16
#define VZ_HSUM(v)          _mm512_reduce_add_ps(v)
#endif

#endif
