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

/* Optional: 8 f16 packed as pack_u16 leaves them (u32 lane i = element i low, element i + 4 high) -> f32 elements 0..3
 * (lo) and 4..7 (hi), exactly, with F16C (the AVX2 and AVX-512 sets): one byte shuffle puts elements 0..3 in the low
 * half and 4..7 in the high half, then two vcvtph2ps. Sets without it widen with integer operations (model kernels). */
#ifdef __F16C__
#define VF_LD8_F16_PACKED(p, lo, hi) do { \
    __m128i h_ = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p)), \
                                  _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)); \
    *(lo) = _mm_cvtph_ps(h_); \
    *(hi) = _mm_cvtph_ps(_mm_unpackhi_epi64(h_, h_)); \
  } while (0)
#endif

/* Optional, AVX-512 (BW) only: 16-lane vectors for the prefill tiles of the model kernels (wasm/model/kernels.c, VW_*;
 * the 4-lane macros above stay what every other kernel uses). vw_ld32_*(p, lo, hi) give the 32 weights of a run that
 * starts on a group of 8 as f32 in element order (lo = 0..15, hi = 16..31), so x is read as it is: f32 two loads;
 * packed bf16 (pack_u16: each group of 8 as 0 4 1 5 2 6 3 7) one word permute that puts element i in the high half
 * of u32 lane i and element 16 + i in its low half, then a mask (lo) and a shift (hi): 3 uops per 32 (two masked
 * permutes were 4: clang turns the zero mask into an AND); packed f16 one word permute back to element order, then
 * two vcvtph2ps. */
#ifdef __AVX512BW__
typedef __m512 VW;
#define VW_LANES            16
#define VW_ZERO             _mm512_setzero_ps()
#define VW_LOAD(p)          _mm512_loadu_ps((const float *)(const void *)(p))
#define VW_MAD(acc, a, b)   _mm512_fmadd_ps(a, b, acc)
#define VW_ADD(a, b)        _mm512_add_ps(a, b)
#define VW_HSUM(v)          _mm512_reduce_add_ps(v)
/* word of a packed run holding element e: group e / 8, then 0 2 4 6 1 3 5 7 within it */
#define VW_P_(e)            (((e) & ~7) | ((e) & 4 ? (((e) & 3) << 1) | 1 : ((e) & 3) << 1))
#define VW_P2_(e)           VW_P_((e) + 16), VW_P_(e)
#define VW_P8_(e)           VW_P2_(e), VW_P2_((e) + 1), VW_P2_((e) + 2), VW_P2_((e) + 3)
static const uint16_t vw_bf16_order_[32] __attribute__((aligned(64))) = {VW_P8_(0), VW_P8_(4), VW_P8_(8), VW_P8_(12)};
#define VW_P8N_(e)          VW_P_(e), VW_P_((e) + 1), VW_P_((e) + 2), VW_P_((e) + 3), VW_P_((e) + 4), VW_P_((e) + 5), \
                            VW_P_((e) + 6), VW_P_((e) + 7)
static const uint16_t vw_f16_order_[32] __attribute__((aligned(64))) = {VW_P8N_(0), VW_P8N_(8), VW_P8N_(16), VW_P8N_(24)};
/* pack_u16 of 32 elements (4 groups of 8) in place: packed word q holds element 8 (q / 8) + (q even ? q % 8 / 2 : 4 + q % 8 / 2) */
#define VW_Q_(q)            (((q) & ~7) | ((q) & 1 ? 4 + (((q) & 7) >> 1) : ((q) & 7) >> 1))
#define VW_Q8_(q)           VW_Q_(q), VW_Q_((q) + 1), VW_Q_((q) + 2), VW_Q_((q) + 3), VW_Q_((q) + 4), VW_Q_((q) + 5), \
                            VW_Q_((q) + 6), VW_Q_((q) + 7)
static const uint16_t vw_pack_order_[32] __attribute__((aligned(64))) = {VW_Q8_(0), VW_Q8_(8), VW_Q8_(16), VW_Q8_(24)};
static inline void vw_pack32_u16(uint16_t *p) {
  _mm512_storeu_si512((void *)p, _mm512_permutexvar_epi16(_mm512_load_si512((const void *)vw_pack_order_), _mm512_loadu_si512((const void *)p)));
}
static inline void vw_ld32_f32(const float *p, VW *lo, VW *hi) {
  *lo = VW_LOAD(p);
  *hi = VW_LOAD(p + 16);
}
static inline void vw_ld32_bf16(const uint16_t *p, VW *lo, VW *hi) {
  const __m512i v = _mm512_permutexvar_epi16(_mm512_load_si512((const void *)vw_bf16_order_), _mm512_loadu_si512((const void *)p));
  *lo = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000)));
  *hi = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline void vw_ld32_f16(const uint16_t *p, VW *lo, VW *hi) {
  const __m512i v = _mm512_permutexvar_epi16(_mm512_load_si512((const void *)vw_f16_order_), _mm512_loadu_si512((const void *)p));
  *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
  *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1));
}
#endif

#endif
