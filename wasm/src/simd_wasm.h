/*
 * The SIMD mapping for wasm SIMD128 (simd.h picks it with -msimd128). VF = 4 f32 lanes; VI = the same 128 bits as
 * i32/i16 lanes (one type in wasm: v128_t).
 *
 * Choices that matter for speed (V8/JSC lower each macro to one x86 instruction):
 *  - VF_MAX is pmax (maxps): scores are never NaN unless the inputs are, and then the result is NaN anyway.
 *  - 16-bit -> f32 widening uses the widening loads (see VF_BF16); element order stays natural.
 *  - VF_MAD: baseline SIMD128 has no fused multiply-add, so duo.wasm does mul then add (two roundings, two ops);
 *    duo-relaxed.wasm is the same source built with -mrelaxed-simd, where VF_MAD is f32x4.relaxed_madd (one FMA where
 *    the CPU has one, else mul + add: relaxed SIMD lets the engine choose). The benchmark ceiling (bench_simd.c) uses
 *    VF_MAD too, so each build is measured against the multiply-add it issues.
 */
#ifndef DUO_SIMD_WASM_H
#define DUO_SIMD_WASM_H
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

#define VI_SUB(a, b)        wasm_i32x4_sub(a, b)
#define VI_LANE(x, i)       wasm_i32x4_extract_lane(x, i)
#define VI_GT(a, b)         wasm_i32x4_gt(a, b)
#define VI_FROM_F32(x)      wasm_i32x4_trunc_sat_f32x4(x)
#define VF_MIN(a, b)        wasm_f32x4_min(a, b)
#define VF_DIV(a, b)        wasm_f32x4_div(a, b)
#define VF_ROUND(x)         wasm_f32x4_nearest(x)

/* Lane moves (simd.h names them for every mapping) */
#define VF_ZIP_LO32(a, b)   wasm_i32x4_shuffle(a, b, 0, 4, 1, 5)
#define VF_ZIP_HI32(a, b)   wasm_i32x4_shuffle(a, b, 2, 6, 3, 7)
#define VF_CAT_LO64(a, b)   wasm_i64x2_shuffle(a, b, 0, 2)
#define VF_CAT_HI64(a, b)   wasm_i64x2_shuffle(a, b, 1, 3)
#define VF_SWAP64(a)        wasm_i64x2_shuffle(a, a, 1, 0)
#define VF_SWAP32(a)        wasm_i32x4_shuffle(a, a, 1, 0, 3, 2)
#define VI_ZIP_LO16(a, b)   wasm_i16x8_shuffle(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define VI_ZIP_HI16(a, b)   wasm_i16x8_shuffle(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#define VI_EVEN_ODD16(x)    wasm_i16x8_shuffle(x, x, 0, 2, 4, 6, 1, 3, 5, 7)
#define VI_WIDEN_LO_U16(x)  wasm_u32x4_extend_low_u16x8(x)
#define VI_WIDEN_HI_U16(x)  wasm_u32x4_extend_high_u16x8(x)
#define VI_LOAD_U16X4(p)    wasm_u32x4_load16x4(p)
#define VI_LOAD_I16X4(p)    wasm_i32x4_load16x4(p)
#define VI_NARROW_U16(a, b) wasm_u16x8_narrow_i32x4(a, b)
#define VI_STORE64(p, x)    wasm_v128_store64_lane(p, x, 0)

/* Byte lanes and widening (simd.h gives their plain-C meaning) */
#define VI8_SHUFFLE(a, b, ...) wasm_i8x16_shuffle(a, b, __VA_ARGS__)
#ifdef __wasm_relaxed_simd__
#define VI8_LOOKUP(t, x)    wasm_i8x16_relaxed_swizzle(t, x)
#else
#define VI8_LOOKUP(t, x)    wasm_i8x16_swizzle(t, x)
#endif
#define VI8_SHR(a, n)       wasm_u8x16_shr(a, n)
#define VI8_SUB(a, b)       wasm_i8x16_sub(a, b)
#define VI8_SPLAT(x)        wasm_i8x16_splat(x)
#define VI_LOAD64(p)        wasm_v128_load64_zero(p)
#define VI16_LOAD8(p)       wasm_i16x8_load8x8(p)
#define VI16_LO8(a)         wasm_i16x8_extend_low_i8x16(a)
#define VI16_HI8(a)         wasm_i16x8_extend_high_i8x16(a)
#define VI32_LO16(a)        wasm_i32x4_extend_low_i16x8(a)
#define VI32_HI16(a)        wasm_i32x4_extend_high_i16x8(a)
#define VF_FROM_I32(a)      wasm_f32x4_convert_i32x4(a)

#endif
