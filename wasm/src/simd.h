/*
 * The SIMD macro layer (wasm SIMD128), in the manner of ggml's simd-mappings.h: the SIMD kernels
 * (kernels_simd.c, convert_simd.c) are written with these macros only; each has a scalar twin with the same
 * signature in *_scalar.c, built into duo-scalar.wasm. VF = 4 f32 lanes; VI = the same 128 bits as i32/i16 lanes.
 *
 * Choices that matter for speed (V8/JSC lower each macro to one x86 instruction):
 *  - VF_MAX is pmax (maxps): scores are never NaN unless the inputs are, and then the result is NaN anyway.
 *  - 16-bit -> f32 widening interleaves with zero (punpcklwd/punpckhwd): lane k becomes h[k] << 16, which IS the
 *    f32 of a bf16 and the raw material of an f16 (see VF_F16_*). Element order stays natural.
 *  - No FMA: baseline SIMD128 has none; VF_MAD is mul then add (two roundings).
 */
#ifndef DUO_SIMD_H
#define DUO_SIMD_H
#include <wasm_simd128.h>

typedef v128_t VF;
typedef v128_t VI;

#define VF_LOAD(p)          wasm_v128_load(p)
#define VF_STORE(p, x)      wasm_v128_store(p, x)
#define VF_LOAD_SPLAT(p)    wasm_v128_load32_splat(p)
#define VF_SPLAT(x)         wasm_f32x4_splat(x)
#define VF_ZERO             wasm_f32x4_const_splat(0.0f)
#define VF_ADD(a, b)        wasm_f32x4_add(a, b)
#define VF_SUB(a, b)        wasm_f32x4_sub(a, b)
#define VF_MUL(a, b)        wasm_f32x4_mul(a, b)
#define VF_DIV(a, b)        wasm_f32x4_div(a, b)
#define VF_MAD(acc, a, b)   wasm_f32x4_add(acc, wasm_f32x4_mul(a, b))
#define VF_MAX(a, b)        wasm_f32x4_pmax(a, b)
#define VF_EQ(a, b)         wasm_f32x4_eq(a, b)
#define VF_SELECT(m, a, b)  wasm_v128_bitselect(a, b, m) /* m ? a : b, per lane */
#define VF_LANE(x, i)       wasm_f32x4_extract_lane(x, i)

#define VI_SPLAT(x)         wasm_i32x4_splat(x)
#define VI_ADD(a, b)        wasm_i32x4_add(a, b)
#define VI_SHL(a, n)        wasm_i32x4_shl(a, n)
#define VI_SRA(a, n)        wasm_i32x4_shr(a, n)
#define VI_SHR(a, n)        wasm_u32x4_shr(a, n)
#define VI_AND(a, b)        wasm_v128_and(a, b)
#define VI_OR(a, b)         wasm_v128_or(a, b)
#define VI_EQ(a, b)         wasm_i32x4_eq(a, b)
#define VI_GT_U(a, b)       wasm_u32x4_gt(a, b)

/* Horizontal: the 4 lane sums of 4 vectors as one vector [sum a, sum b, sum c, sum d]. */
static inline VF vf_sum4(VF a, VF b, VF c, VF d) {
  VF ab = VF_ADD(wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), wasm_i32x4_shuffle(a, b, 2, 6, 3, 7)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
  VF cd = VF_ADD(wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), wasm_i32x4_shuffle(c, d, 2, 6, 3, 7));
  return VF_ADD(wasm_i64x2_shuffle(ab, cd, 0, 2), wasm_i64x2_shuffle(ab, cd, 1, 3));
}
static inline float vf_hsum(VF a) {
  VF s = VF_ADD(a, wasm_i64x2_shuffle(a, a, 1, 0));
  return VF_LANE(s, 0) + VF_LANE(s, 1);
}
static inline float vf_hmax(VF a) {
  VF s = VF_MAX(a, wasm_i64x2_shuffle(a, a, 1, 0));
  s = VF_MAX(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
  return VF_LANE(s, 0);
}

/* 16-bit storage: 8 elements -> two VF (elements 0-3 and 4-7), or 4 elements (64-bit load) -> one VF. */
#define VH_LOAD8(p)         wasm_v128_load(p)
#define VH_LOAD4(p)         wasm_v128_load64_zero(p)
#define VH_LO(h)            wasm_i16x8_shuffle(wasm_i32x4_const_splat(0), h, 0, 8, 1, 9, 2, 10, 3, 11)
#define VH_HI(h)            wasm_i16x8_shuffle(wasm_i32x4_const_splat(0), h, 4, 12, 5, 13, 6, 14, 7, 15)

/* f16 in the high half of each lane (x = h << 16) -> f32. Shifting right by 3 (arithmetic) puts the exponent and
 * mantissa where an f32 has them, minus a bias of 112 that the multiply by 2^112 adds back; the mask drops the copies
 * of the sign. Exact for every finite f16 (subnormals too: they become f32 subnormals first); Inf/NaN come out
 * finite (>= 65536), which VF_F16_EXACT repairs. */
#define VF_F16_FAST(x) \
  VF_MUL(VI_AND(VI_SRA(x, 3), VI_SPLAT((int32_t)0x8fffffff)), VF_SPLAT(0x1p112f))
static inline VF vf_f16_exact(VI x) {
  VI b = VI_AND(VI_SRA(x, 3), VI_SPLAT((int32_t)0x8fffffff));
  VI special = VI_EQ(VI_AND(b, VI_SPLAT(0x0f800000)), VI_SPLAT(0x0f800000)); /* f16 exponent 31: Inf or NaN */
  return VI_OR(VF_MUL(b, VF_SPLAT(0x1p112f)), VI_AND(special, VI_SPLAT(0x7f800000)));
}

#endif
