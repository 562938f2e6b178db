// Widening loads of weights as the model kernels read them (kernels.c's matmul and embed, backward.c's transposed
// matmul): 8 consecutive weights -> two f32x4 (lo = elements 0..3, hi = 4..7), and one element of a row's tail; on
// AVX-512, 32 weights -> two f32x16 for the 16-lane tiles (vz_*). Shared so that every kernel reads the 16-bit layout
// of its build the same way.
//
// The layout of 16-bit (f16 / bf16) rows depends on the build:
//   wasm (W16_PACKED): pack_u16 (kernels.c) stores each full group of 8 elements of a row as [0,4,1,5,2,6,3,7], so
//     that u32 lane i of a 16-byte load holds element i in its low half and element i+4 in its high half: one load
//     then gives elements 0..3 (low halves) and 4..7 (high halves) with one shift or mask each, where the file order
//     would need a widening extend and a shift. The weights are copied into wasm memory anyway, so packing is free.
//   native (x86 SSE4.1 / AVX2 / AVX-512, NEON): the file's own order, so that a checkpoint's f16 / bf16 tensors are
//     used in place (mapped, native/src/map.c): there it costs nothing either. bf16 widens by interleaving with
//     zeros (one punpcklwd / zip1 per 4, as the packed mask), f16 by F16C's vcvtph2ps where the set has it (AVX2,
//     AVX-512: one per 4, exact, Inf/NaN included) or the integer conversion below after the same interleave.
//   The nin % 8 tail of each row is in file order in both.
#ifndef DUO_MODEL_WIDEN_H
#define DUO_MODEL_WIDEN_H
#include <stdint.h>
#include "../src/simd.h"

#ifdef __wasm__
#define W16_PACKED 1
#endif

static inline void ld8_f32(const float* p, VF* lo, VF* hi) {
  *lo = VF_LOAD(p);
  *hi = VF_LOAD(p + 4);
}

// bf16 is the top half of an f32. Packed: low halves shift up by 16, high halves are masked. File order: each element
// interleaved with a zero below it.
static inline void ld8_bf16(const uint16_t* p, VF* lo, VF* hi) {
  VF h = VF_LOAD(p);
#ifdef W16_PACKED
  *lo = VI_SHL(h, 16);
  *hi = VI_AND(h, VI_SPLAT((int)0xffff0000));
#else
  *lo = VI_ZIP_LO16(VF_ZERO, h);
  *hi = VI_ZIP_HI16(VF_ZERO, h);
#endif
}

// f16 bits (one per u32 lane) -> f32: move exponent+mantissa into place and rescale by 2^112, which is exact for
// normals and subnormals; exponent 31 (Inf/NaN) gets the f32 all-ones exponent; the sign is copied.
static inline VF f16x4_to_f32(VF h) {
  VF sign = VI_SHL(VI_AND(h, VI_SPLAT(0x8000)), 16);
  VF em = VI_AND(h, VI_SPLAT(0x7fff));
  VF f = VF_MUL(VI_SHL(em, 13), VF_SPLAT(0x1p112f));
  VF special = VI_GT(em, VI_SPLAT(0x7bff));
  f = VI_OR(f, VI_AND(special, VI_SPLAT(0x7f800000)));
  return VI_OR(f, sign);
}

static inline void ld8_f16(const uint16_t* p, VF* lo, VF* hi) {
#if defined(W16_PACKED)
  VF h = VF_LOAD(p);
  *lo = f16x4_to_f32(VI_AND(h, VI_SPLAT(0xffff)));
  *hi = f16x4_to_f32(VI_SHR(h, 16));
#elif defined(__F16C__)
  *lo = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(const void*)p));
  *hi = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(const void*)(p + 4)));
#else
  VF h = VF_LOAD(p);
  *lo = f16x4_to_f32(VI_ZIP_LO16(h, VF_ZERO));
  *hi = f16x4_to_f32(VI_ZIP_HI16(h, VF_ZERO));
#endif
}

static inline float w1_f32(const float* p) { return *p; }
static inline float w1_bf16(const uint16_t* p) {
  union { uint32_t u; float f; } v = { (uint32_t)*p << 16 };
  return v.f;
}
static inline float w1_f16(const uint16_t* p) {
  return VF_LANE(f16x4_to_f32(VI_SPLAT(*p)), 0);
}

#ifdef VZ_LANES
// The 16-lane tiles (AVX-512BW, native only: 16-bit rows in file order). vz_ld32_*(p, lo, hi) widen the 32 weights at
// p (a run that starts on a multiple of 32 of the row) into two VZ; vz_xl32_*(x, u, v) load x[0..31] in the lanes
// they pair with, so that u·lo + v·hi is the run's dot product (a dot product may pair x and W in any lane order):
//   f32, f16: element order, lo = 0..15, hi = 16..31 (two loads / two vcvtph2ps); x as it is.
//   bf16: u32 lane j of one 64-byte load holds elements 2j (low half) and 2j + 1 (high half): << 16 gives the even
//         elements, & 0xffff0000 the odd ones, 2 ops per 32 weights; x split to match, even elements in u, odd in v
//         (two vpermt2ps, shared by every row the tile meets: the matmul tiles load x once per 4 rows or per chunk).
static inline void vz_ld32_f32(const float* p, VZ* lo, VZ* hi) {
  *lo = VZ_LOAD(p);
  *hi = VZ_LOAD(p + 16);
}
static inline void vz_ld32_f16(const uint16_t* p, VZ* lo, VZ* hi) {
  *lo = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(const void*)p));
  *hi = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(const void*)(p + 16)));
}
static inline void vz_ld32_bf16(const uint16_t* p, VZ* lo, VZ* hi) {
  const __m512i v = _mm512_loadu_si512((const void*)p);
  *lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  *hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000)));
}
// bf16 in element order (lo = 0..15, hi = 16..31), for a kernel whose lanes are W's columns (backward.c's transposed
// matmul writes dx in them): a zero extension and a shift per 16, 4 ops per 32 against vz_ld32_bf16's 2.
static inline void vz_ld32e_bf16(const uint16_t* p, VZ* lo, VZ* hi) {
  *lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)p)), 16));
  *hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)(p + 16))), 16));
}
static inline void vz_xl32_f32(const float* x, VZ* u, VZ* v) {
  *u = VZ_LOAD(x);
  *v = VZ_LOAD(x + 16);
}
static inline void vz_xl32_bf16(const float* x, VZ* u, VZ* v) {
  const VZ a = VZ_LOAD(x), b = VZ_LOAD(x + 16);
  *u = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  *v = _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
}
#endif

#endif
