/*
 * The SIMD macro layer (wasm SIMD128), in the manner of ggml's simd-mappings.h: the SIMD kernels
 * (attend_simd.c, convert_simd.c, bench_simd.c) are written with these macros only; each has a scalar twin with the same
 * signature in *_scalar.c, built into duo-scalar.wasm. VF = 4 f32 lanes; VI = the same 128 bits as i32/i16 lanes.
 *
 * Choices that matter for speed (V8/JSC lower each macro to one x86 instruction):
 *  - VF_MAX is pmax (maxps): scores are never NaN unless the inputs are, and then the result is NaN anyway.
 *  - 16-bit -> f32 widening uses the widening loads (see VF_BF16); element order stays natural.
 *  - VF_MAD: baseline SIMD128 has no fused multiply-add, so duo.wasm does mul then add (two roundings, two ops);
 *    duo-relaxed.wasm is the same source built with -mrelaxed-simd, where VF_MAD is f32x4.relaxed_madd (one FMA where
 *    the CPU has one, else mul + add: relaxed SIMD lets the engine choose). The benchmark ceiling (bench_simd.c) uses
 *    VF_MAD too, so each build is measured against the multiply-add it issues.
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
#ifdef __wasm_relaxed_simd__
#define VF_MAD(acc, a, b)   wasm_f32x4_relaxed_madd(a, b, acc)
#else
#define VF_MAD(acc, a, b)   wasm_f32x4_add(acc, wasm_f32x4_mul(a, b))
#endif
#define VF_MAX(a, b)        wasm_f32x4_pmax(a, b)
#define VF_EQ(a, b)         wasm_f32x4_eq(a, b)
#define VF_SELECT(m, a, b)  wasm_v128_bitselect(a, b, m) /* m ? a : b, per lane */
#define VF_LANE(x, i)       wasm_f32x4_extract_lane(x, i)

#define VI_SPLAT(x)         wasm_i32x4_splat(x)
#define VI_ADD(a, b)        wasm_i32x4_add(a, b)
#define VI_SHL(a, n)        wasm_i32x4_shl(a, n)
#define VI_SHR(a, n)        wasm_u32x4_shr(a, n)
#define VI_SRA(a, n)        wasm_i32x4_shr(a, n)
#define VI_AND(a, b)        wasm_v128_and(a, b)
#define VI_OR(a, b)         wasm_v128_or(a, b)
#define VI_EQ(a, b)         wasm_i32x4_eq(a, b)
#define VI_GT_U(a, b)       wasm_u32x4_gt(a, b)

/* Byte-lane and widening ops of the quantized-KV kernels (quant_simd.c). Plain-C meaning, for ports (a, b, t, x: 16
 * bytes; c0..c15 compile-time constants in 0..31):
 *   VI8_SHUFFLE(a, b, c0..c15)  r[i] = c_i < 16 ? a[c_i] : b[c_i - 16]             (i8x16.shuffle; NEON tbl2)
 *   VI8_LOOKUP(t, x)            r[i] = t[x[i]], for x[i] < 16 only                 (pshufb, NEON tbl1; the relaxed build's
 *                               i8x16.relaxed_swizzle is one pshufb, i8x16.swizzle adds a fix-up for x[i] >= 16)
 *   VI8_SHR(a, n)               r[i] = (uint8_t)a[i] >> n
 *   VI8_SPLAT(x)                r[i] = (uint8_t)x
 *   VI_LOAD64(p)                r[0..7] = p[0..7], r[8..15] = 0
 *   VI16_LOAD8(p)               16-bit lanes r[i] = (int16_t)(int8_t)p[i], i < 8   (sign-extending load)
 *   VI32_LO16(a), VI32_HI16(a)  32-bit lanes r[i] = (int32_t)a16[i] (lanes 0..3), a16[4 + i] (lanes 4..7)
 *   VF_FROM_I32(a)              f32 lanes r[i] = (float)a32[i]                     (cvtdq2ps, exact for |a| < 2^24) */
#define VI8_SHUFFLE(a, b, ...) wasm_i8x16_shuffle(a, b, __VA_ARGS__)
#ifdef __wasm_relaxed_simd__
#define VI8_LOOKUP(t, x)       wasm_i8x16_relaxed_swizzle(t, x)
#else
#define VI8_LOOKUP(t, x)       wasm_i8x16_swizzle(t, x)
#endif
#define VI8_SHR(a, n)          wasm_u8x16_shr(a, n)
#define VI8_SPLAT(x)           wasm_i8x16_splat(x)
#define VI_LOAD64(p)           wasm_v128_load64_zero(p)
#define VI16_LOAD8(p)          wasm_i16x8_load8x8(p)
#define VI32_LO16(a)           wasm_i32x4_extend_low_i16x8(a)
#define VI32_HI16(a)           wasm_i32x4_extend_high_i16x8(a)
#define VF_FROM_I32(a)         wasm_f32x4_convert_i32x4(a)

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

/* 16-bit storage, 4 elements at a time: one widening load (vpmovzxwd / vpmovsxwd) puts each element in its own
 * 32-bit lane, and no constant register is needed (V8 has 15 usable XMM registers; every constant costs one).
 *  bf16: zero-extend, shift left 16: exactly the f32.
 *  f16:  sign-extend, shift left 13: exponent and mantissa sit where an f32 has them, minus a bias of 112 that the
 *        multiply by 2^112 adds back; the mask drops the extra copies of the sign. Exact for every finite f16
 *        (subnormals become f32 subnormals first); Inf/NaN come out finite (>= 65536): vf_f16_exact repairs them. */
#define VF_BF16(p)       VI_SHL(wasm_u32x4_load16x4(p), 16)
#define VI_F16_BITS(p)   VI_AND(VI_SHL(wasm_i32x4_load16x4(p), 13), VI_SPLAT((int32_t)0x8fffffff))
#define VF_F16_FAST(p)   VF_MUL(VI_F16_BITS(p), VF_SPLAT(0x1p112f))
static inline VF vf_f16_exact(const void *p) {
  VI b = VI_F16_BITS(p);
  VI special = VI_EQ(VI_AND(b, VI_SPLAT(0x0f800000)), VI_SPLAT(0x0f800000)); /* f16 exponent 31: Inf or NaN */
  return VI_OR(VF_MUL(b, VF_SPLAT(0x1p112f)), VI_AND(special, VI_SPLAT(0x7f800000)));
}

#endif
